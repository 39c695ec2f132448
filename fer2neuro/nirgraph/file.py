"""Reading and writing ``.nir`` files (NIR's HDF5 format), and the metadata
fer2neuro stores in the graph.

``nir.write``/``nir.read`` do the serialisation; this module adds what a
deployment tool needs around them: atomic writes, one-line errors for a file
that is missing or not a NIR graph, and typed access to the graph metadata
(HDF5 hands strings back as bytes and numbers as numpy scalars).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from fer2neuro.atomic import atomic_path
from fer2neuro.errors import GraphError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FORMAT = "fer2neuro.nir"   # value of metadata["format"] in graphs fer2neuro writes


def is_hdf5(path: str | Path) -> bool:
    """True if ``path`` starts with the HDF5 signature (a ``.nir`` file)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def write_graph(graph: nir.NIRGraph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` through a temporary file, so a crash never
    leaves a half-written graph where a good one is expected."""
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)


# Node fields that are not parameters (shapes, names, metadata).
NOT_PARAMETERS = ("input_type", "output_type", "metadata", "edges", "nodes")


def nonfinite_parameter(graph: nir.NIRGraph, prefix: str = "") -> str | None:
    """What is wrong with the first node parameter (a weight, bias,
    threshold, time constant...) that holds NaN or infinity, nested
    subgraphs included, or None when all are finite."""
    for name, node in graph.nodes.items():
        where = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            found = nonfinite_parameter(node, prefix=f"{where}.")
            if found:
                return found
            continue
        for p, value in vars(node).items():
            if p in NOT_PARAMETERS or isinstance(value, (str, bytes, dict)):
                continue
            try:
                a = np.asarray(value)
            except Exception:  # noqa: BLE001 - not an array-like field: not a parameter
                continue
            if a.dtype.kind not in "fc" or np.isfinite(a).all():
                continue
            nan = int(np.isnan(a).sum())
            hint = ""
            if isinstance(node, nir.LIF) and p in ("tau", "r") and not nan:
                hint = (" (snnTorch's export_to_nir writes an IF neuron, beta = 1, as a LIF with tau = r = inf, "
                        "which has no Euler step; an IF is nir.IF)")
            counts = f" ({nan} NaN, {a.size - nan - int(np.isfinite(a).sum())} infinite of {a.size})"
            return f"node {where!r} ({type(node).__name__}): parameter {p} is not finite{hint or counts}"
    return None


def check_finite(graph: nir.NIRGraph, error: type[Exception] = GraphError, where: str = "") -> None:
    """Raise ``error`` naming the node and parameter if any node parameter is
    NaN or infinite: such a graph computes nothing meaningful on any target."""
    found = nonfinite_parameter(graph)
    if found:
        raise error(f"{where}{found}")


def read_graph(path: str | Path, check: bool = True) -> nir.NIRGraph:
    """Read a ``.nir`` file; a missing or foreign file, or one with a NaN or
    infinite parameter, is a one-line GraphError. ``check=False`` leaves the
    parameters unchecked, for a caller that rewrites them first and checks
    after (dialects.read: snnTorch writes an IF as a LIF with tau = r = inf)."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such NIR graph file")
    if not is_hdf5(path):
        raise GraphError(f"{path}: not a NIR graph (not an HDF5 file)")
    try:
        try:
            graph = nir.read(path)
        except ValueError:
            # NIR's type inference rejects valid graphs, e.g. a grouped Conv2d
            # (it takes C_in / groups for the input channels); targets check
            # shapes themselves when they run, so read it unchecked.
            graph = nir.read(path, type_check=False)
    except Exception as exc:  # noqa: BLE001 - nir/h5py raise KeyError, ValueError, OSError...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise GraphError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {reason})") from None
    if check:
        check_finite(graph, GraphError, f"{path}: ")
    return graph


def _plain(value):
    """numpy scalar/bytes from HDF5 -> the Python value that was written."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _plain(value[()])
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class GraphInfo:
    """What fer2neuro records in ``NIRGraph.metadata``. Graphs written by
    other tools have none of it; every field then falls back to a default."""

    dt: float | None = None            # the time step the graph was made for
    timesteps: int | None = None
    encoder: str | None = None         # "direct" (analog input held over T) or "poisson" (spike trains)
    class_names: tuple[str, ...] = ()
    preset: str | None = None
    fer2neuro: bool = False            # written by fer2neuro
    qat: str | None = None             # the fixed-point target it was fine-tuned for ("loihi"), if any

    def to_metadata(self) -> dict:
        import fer2neuro

        meta = {"format": FORMAT, "fer2neuro_version": fer2neuro.__version__}
        if self.dt is not None:
            meta["dt"] = float(self.dt)
        if self.timesteps is not None:
            meta["timesteps"] = int(self.timesteps)
        if self.encoder is not None:
            meta["encoder"] = self.encoder
        if self.preset is not None:
            meta["preset"] = self.preset
        if self.qat is not None:
            meta["qat"] = self.qat
        # HDF5 cannot store a list of unicode strings through nir.write: keep JSON.
        meta["class_names"] = json.dumps(list(self.class_names))
        return meta

    @classmethod
    def of(cls, graph: nir.NIRGraph) -> "GraphInfo":
        meta = {k: _plain(v) for k, v in (getattr(graph, "metadata", None) or {}).items()}
        names = meta.get("class_names")
        try:
            class_names = tuple(json.loads(names)) if isinstance(names, str) else ()
        except json.JSONDecodeError:
            class_names = tuple(n.strip() for n in names.split(","))
        return cls(
            dt=float(meta["dt"]) if "dt" in meta else None,
            timesteps=int(meta["timesteps"]) if "timesteps" in meta else None,
            encoder=meta.get("encoder"),
            class_names=class_names,
            preset=meta.get("preset"),
            fer2neuro=meta.get("format") == FORMAT,
            qat=meta.get("qat"),
        )
