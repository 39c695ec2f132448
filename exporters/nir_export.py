"""A trained ConvSNN as a NIR graph (SPEC §4): BatchNorm folded into the
convolutions, max pooling lowered to a sum pool feeding an IF neuron.

Built from ``nir`` node classes directly, not with snnTorch's
``export_to_nir``: that exporter has no MaxPool2d or BatchNorm2d, never
exports the reset mechanism (every Leaky becomes a LIF with v_reset = 0
whatever it was), turns an IF (beta = 1) into a LIF with infinite tau, and
fails type checking for a Leaky with a scalar beta. See docs/deployment.md.

Node names: every spiking node carries the name of the model layer whose
spikes it emits (``SPIKING_LAYERS``), so the verification compares layers by
name. The lowered pools are ``pool1_sum`` -> ``pool1`` (the IF).

Numerics: the folded conv weights are computed in float64 and stored in
float64; arrays whose values float32 holds exactly (the trained linear
weights, thresholds, tau) are stored in float32, which halves the file size of
the paper preset without changing a bit of what a float64 target computes.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from fer2neuro.errors import CheckpointError, GraphError
from fer2neuro.lowering.lava_plan import SCALE, SCALE_RULE, STATE_BOUND
from fer2neuro.nirgraph.file import GraphInfo, is_hdf5, write_graph
from fer2neuro.model.checkpoint import load_model
from fer2neuro.model.layers import NEURON_KINDS, Layer
from fer2neuro.model.network import ConvSNN

MAXPOOL_THRESHOLD = 0.5   # a sum of binary spikes > 0.5 iff at least one input spiked


def compact(array) -> np.ndarray:
    """float32 if that holds every value exactly, else float64."""
    a = np.asarray(array, dtype=np.float64)
    narrow = a.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), a) else a


def batchnorm_fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype | None = None):
    """(weight, bias) of one convolution computing conv followed by BN in eval
    mode: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma /
    sqrt(var + eps) (+ the conv bias through the same affine map). Tensors
    that keep their gradient (QAT folds this way in its training graph), in
    ``dtype`` if given."""
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    w, mean, var = cast(conv.weight), cast(bn.running_mean), cast(bn.running_var)
    gamma = cast(bn.weight) if bn.affine else torch.ones_like(mean)
    beta = cast(bn.bias) if bn.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = cast(conv.bias) if conv.bias is not None else torch.zeros_like(mean)
    return w * scale.view(-1, 1, 1, 1), beta + (bias - mean) * scale


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """``batchnorm_fold`` in float64, as numpy arrays (what the graph stores)."""
    with torch.no_grad():
        weight, bias = batchnorm_fold(conv, bn, torch.float64)
    return weight.cpu().numpy(), bias.cpu().numpy()


def _full(shape, value) -> np.ndarray:
    return compact(np.full(tuple(int(s) for s in shape), value, dtype=np.float64))


def if_node(shape, v_threshold: float, **metadata) -> nir.IF:
    """SPEC §2 IF: v += I (r = 1, dt = 1), hard reset to 0."""
    return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, v_threshold),
                  v_reset=_full(shape, 0.0), metadata=metadata)


def lif_node(shape, tau: float, v_threshold: float) -> nir.LIF:
    """SPEC §2 LIF: v += (I - v) / tau with dt = 1, so r = 1 and v_leak = 0."""
    return nir.LIF(tau=_full(shape, tau), r=_full(shape, 1.0), v_leak=_full(shape, 0.0),
                   v_threshold=_full(shape, v_threshold), v_reset=_full(shape, 0.0))


def conv_node(conv: nn.Conv2d, bn: nn.BatchNorm2d, input_hw: tuple[int, int]) -> nir.Conv2d:
    weight, bias = fold_batchnorm(conv, bn)
    return nir.Conv2d(input_shape=tuple(input_hw), weight=compact(weight), bias=compact(bias),
                      stride=tuple(conv.stride), padding=tuple(conv.padding),
                      dilation=tuple(conv.dilation), groups=conv.groups,
                      metadata={"batchnorm_folded": "yes"})


def sum_pool_node(pool: nn.MaxPool2d) -> nir.SumPool2d:
    pair = lambda v: np.array(v if isinstance(v, tuple) else (v, v))  # noqa: E731
    if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise CheckpointError("only MaxPool2d without dilation or ceil_mode lowers to SumPool2d + IF")
    return nir.SumPool2d(kernel_size=pair(pool.kernel_size), stride=pair(pool.stride or pool.kernel_size),
                         padding=pair(pool.padding), metadata={"lowered_from": "MaxPool2d"})


def linear_node(fc: nn.Linear) -> nir.NIRNode:
    weight = compact(fc.weight.detach().double().cpu().numpy())
    if fc.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=compact(fc.bias.detach().double().cpu().numpy()))


def layer_nodes(model: ConvSNN, layer: Layer) -> dict[str, nir.NIRNode]:
    """The NIR nodes that compute ``layer`` of ``model``, in data-flow order
    (none for a dropout: the graph has eval semantics)."""
    module = getattr(model, layer.name, None)
    if layer.kind == "conv":
        return {layer.name: conv_node(module, getattr(model, layer.batchnorm), layer.input_shape[1:])}
    if layer.kind == "if":
        return {layer.name: if_node(layer.shape, module.v_threshold)}
    if layer.kind == "lif":
        return {layer.name: lif_node(layer.shape, module.tau, module.v_threshold)}
    if layer.kind == "maxpool":
        return {f"{layer.name}_sum": sum_pool_node(module),
                layer.name: if_node(layer.shape, MAXPOOL_THRESHOLD, lowered_from="MaxPool2d")}
    if layer.kind == "flatten":
        return {layer.name: nir.Flatten(input_type={"input": np.array(layer.input_shape)},
                                        start_dim=0, end_dim=-1)}
    if layer.kind == "linear":
        return {layer.name: linear_node(module)}
    return {}


def model_to_nir(model: ConvSNN, *, encoder: str | None = None, timesteps: int | None = None) -> nir.NIRGraph:
    """The NIR graph of ``model`` (in eval semantics: BN running statistics,
    no dropout): a chain of its layers' nodes. A model fine-tuned for a
    fixed-point target carries its measured state bounds and integer scales
    into the neuron nodes' metadata, where the quantiser reads them. ``encoder``/``timesteps``
    override the model's for the metadata only: the graph is the same; with
    ``direct`` its input is the analog image held constant over T, with
    ``poisson`` the spike train."""
    if not isinstance(model, ConvSNN):
        raise CheckpointError(f"cannot export a {type(model).__name__} to NIR: only the spiking ConvSNN")
    cfg = model.config
    nodes = {"input": nir.Input(input_type={"input": np.array(model.layers[0].input_shape)})}
    for layer in model.layers:
        nodes.update(layer_nodes(model, layer))
    for key, values in ((STATE_BOUND, model.deployment.get("state_bounds", {})),
                        (SCALE, model.deployment.get("scales", {}))):
        for name, value in values.items():
            nodes[name].metadata = {**(nodes[name].metadata or {}), key: float(value)}
    if model.deployment.get("scale_rule"):
        for layer in model.layers:
            if layer.kind in NEURON_KINDS:
                nodes[layer.name].metadata = {**(nodes[layer.name].metadata or {}),
                                              SCALE_RULE: model.deployment["scale_rule"]}
    nodes["output"] = nir.Output(output_type={"output": np.array(model.layers[-1].shape)})
    order = list(nodes)
    edges = list(zip(order[:-1], order[1:]))
    info = GraphInfo(dt=1.0, timesteps=timesteps or cfg.timesteps, encoder=encoder or cfg.encoder,
                     class_names=tuple(cfg.class_names), preset=cfg.preset, fer2neuro=True,
                     qat=model.deployment.get("qat"))
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=info.to_metadata(), type_check=True)
    except ValueError as exc:  # a shape that does not chain: a bug, but say where
        raise CheckpointError(f"the exported NIR graph does not type-check: {exc}") from None


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None,
                      peer: str | None = None) -> dict:
    """``fer2neuro export CKPT --target nir [--for PEER]``: write the graph
    to ``out``; for a peer, as that peer's importer must read it to run it
    as fer2neuro does (interop/for_peer)."""
    model, _ = load_model(checkpoint, "cpu")
    graph = model_to_nir(model, encoder=encoder, timesteps=timesteps)
    if peer is None:
        write_graph(graph, out)
    else:
        from fer2neuro.interop import for_peer

        graph = for_peer.adapt(peer, graph)
        for_peer.write(peer, graph, out)
    info = GraphInfo.of(graph)
    return {"target": "nir", "for": peer, "path": str(out), "bytes": Path(out).stat().st_size,
            "nodes": {name: type(node).__name__ for name, node in graph.nodes.items()},
            "edges": len(graph.edges), "dt": info.dt, "timesteps": info.timesteps,
            "encoder": info.encoder, "class_names": list(info.class_names),
            "summary": f"NIR graph of {len(graph.nodes)} nodes, {len(graph.edges)} edges; dt={info.dt}, "
                       f"T={info.timesteps}, {info.encoder} encoding"}


def graph_from_path(path, semantics: str = "nir") -> nir.NIRGraph:
    """A ``.nir`` file read with ``semantics`` (nirgraph/dialects), or a
    checkpoint exported on the fly (fer2neuro's own: NIR's semantics)."""
    if not Path(path).is_file():
        raise GraphError(f"{path}: no such file (expected a .nir graph or a fer2neuro checkpoint)")
    from fer2neuro.nirgraph import dialects

    if is_hdf5(path):
        return dialects.read(path, semantics)
    if not dialects.is_nir(semantics):
        raise GraphError(f"{path} is a fer2neuro checkpoint: its graph has NIR's semantics, not --semantics "
                         f"{semantics} (that reads another tool's .nir file)")
    model, _ = load_model(path, "cpu")
    return model_to_nir(model)
