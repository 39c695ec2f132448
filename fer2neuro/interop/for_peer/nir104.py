"""Writing a graph as nir 1.0.4 reads it: the release Sinabs 3.1.3 and
Rockpool 3.1.0 pin (``--for sinabs``, ``--for rockpool``). nir 1.0.4 has
fewer node fields than fer2neuro's nir (no per-node metadata, no v_reset),
and its reader passes every field it finds to the node's class, so a file
holds only the fields that release has."""
from __future__ import annotations

import h5py
import nir
import numpy as np

from fer2neuro.errors import GraphError

# nir 1.0.4's node fields (what its reader passes to each class), by type.
NIR_104_FIELDS = {
    "Affine": {"weight", "bias", "metadata"},
    "AvgPool2d": {"kernel_size", "stride", "padding"},
    "Conv1d": {"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias", "metadata"},
    "Conv2d": {"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias"},
    "CubaLIF": {"tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in", "metadata"},
    "Delay": {"delay", "metadata"},
    "Flatten": {"input_type", "start_dim", "end_dim", "metadata"},
    "I": {"r", "metadata"},
    "IF": {"r", "v_threshold", "metadata"},
    "Input": {"shape"},
    "LI": {"tau", "r", "v_leak", "metadata"},
    "LIF": {"tau", "r", "v_leak", "v_threshold", "metadata"},
    "Linear": {"weight"},
    "NIRGraph": {"nodes", "edges", "metadata"},
    "Output": {"shape"},
    "Scale": {"scale"},
    "SumPool2d": {"kernel_size", "stride", "padding", "metadata"},
    "Threshold": {"threshold", "metadata"},
}


def _describe(name: str, node) -> str:
    return f"node {name!r} ({type(node).__name__})"


def nir_104_dict(graph: nir.NIRGraph) -> dict:
    """``graph.to_dict()`` with only the fields nir 1.0.4 reads: no per-node
    metadata, no v_reset (a GraphError where one is not 0, which nir 1.0.4
    cannot say); the graph's own metadata is kept."""
    def node_dict(name: str, node) -> dict:
        kind = type(node).__name__
        if kind not in NIR_104_FIELDS:
            raise GraphError(f"{_describe(name, node)} does not exist in nir 1.0.4")
        if isinstance(node, nir.NIRGraph):
            return {"type": "NIRGraph", "nodes": {k: node_dict(f"{name}.{k}", n) for k, n in node.nodes.items()},
                    "edges": node.edges}
        v_reset = getattr(node, "v_reset", None)
        if v_reset is not None and np.any(np.asarray(v_reset) != 0):
            raise GraphError(f"{_describe(name, node)} resets to v_reset != 0, which nir 1.0.4 cannot write")
        d = node.to_dict()
        return {k: v for k, v in d.items() if k == "type" or k in NIR_104_FIELDS[kind]}

    meta = {k: v for k, v in dict(getattr(graph, "metadata", None) or {}).items() if v is not None}
    return {"type": "NIRGraph", "nodes": {k: node_dict(k, n) for k, n in graph.nodes.items()},
            "edges": [(str(a), str(b)) for a, b in graph.edges], "metadata": meta}


def _write_group(group: h5py.Group, node: dict) -> None:
    """nir 1.0.4's ``write_recursive`` (nir/serialization.py), for its layout."""
    for k, v in node.items():
        if k == "metadata":
            if v:
                _write_group(group.create_group(k), v)
        elif isinstance(v, str):
            group.create_dataset(k, data=v, dtype=h5py.string_dtype())
        elif isinstance(v, np.ndarray):
            group.create_dataset(k, data=v, dtype=v.dtype)
        elif isinstance(v, dict):
            _write_group(group.create_group(str(k)), v)
        elif v is None:
            raise GraphError(f"field {k!r} is None, which a NIR file cannot hold")
        else:
            group.create_dataset(k, data=v)


def write(graph: nir.NIRGraph, path) -> None:
    """A .nir file nir 1.0.4 reads (the release Sinabs and Rockpool pin):
    its node fields only, written in its layout with h5py."""
    data = nir_104_dict(graph)
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0.4", dtype=h5py.string_dtype())
        _write_group(f.create_group("node"), data)
