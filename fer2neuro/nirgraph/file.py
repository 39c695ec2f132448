"""Reading and writing ``.nir`` files (NIR's HDF5 format), and the metadata
fer2neuro stores in the graph.

``nir.write``/``nir.read`` do the serialisation; this module adds what a
deployment tool needs around them: atomic writes, one-line errors for a file
that is missing or not a NIR graph, and typed access to the graph metadata
(HDF5 hands strings back as bytes and numbers as numpy scalars).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import nir
import numpy as np
from nir.serialization import hdf2dict

from fer2neuro.atomic import atomic_path
from fer2neuro.errors import GraphError, one_line
from fer2neuro.hdf5 import check_hdf5_file, write_hdf5
from fer2neuro.nirgraph.validate import check_graph, file_problem
from fer2neuro.shown import shown

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
        write_hdf5(tmp, lambda f: nir.write(f, graph))


def read_graph(path: str | Path, check: bool = True) -> nir.NIRGraph:
    """Read a ``.nir`` file; a missing or foreign file, bad metadata
    (``GraphInfo.of``) or a node that ``validate.check_graph`` refuses (an
    unknown type, a shape < 1, a stride of 0, a tau <= 0, a NaN or infinite
    parameter) is a one-line GraphError naming the file and the field.
    ``check=False`` leaves the nodes unchecked, for a caller that rewrites
    them first and checks after (dialects.read: snnTorch writes an IF as a
    LIF with tau = r = inf); a file NIR cannot build is refused either way."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such NIR graph file")
    if not is_hdf5(path):
        raise GraphError(f"{path}: not a NIR graph (not an HDF5 file)")
    # nir.read follows HDF5 external links, external storage and virtual
    # datasets silently: every value must come from this file (fer2neuro/hdf5.py)
    check_hdf5_file(path, GraphError, "a readable NIR graph")
    try:
        # NIR's shape inference divides by strides: a stride of 0 would warn on stderr before it fails
        with np.errstate(all="ignore"):
            try:
                graph = nir.read(path)
            except ValueError:
                # NIR's type inference rejects valid graphs, e.g. a grouped Conv2d
                # (it takes C_in / groups for the input channels); targets check
                # shapes themselves when they run, so read it unchecked.
                graph = nir.read(path, type_check=False)
    except Exception as exc:  # noqa: BLE001 - nir/h5py raise KeyError, ValueError, OSError...
        found = _raw_problem(path)      # an unknown node type, a stride of 0: say which node and field
        if found:
            raise GraphError(f"{path}: {found}") from None
        reason = one_line(exc, 200) or type(exc).__name__
        raise GraphError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {reason})") from None
    try:
        GraphInfo.of(graph)                     # the metadata fer2neuro reads: dt, timesteps, class names
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from None
    if check:
        check_graph(graph, GraphError, f"{path}: ")
    return graph


def _raw_problem(path: Path) -> str | None:
    """What ``validate.file_problem`` finds in the file's raw node tree (the
    file has passed check_hdf5_file: no links out of it), or None."""
    try:
        with h5py.File(path, "r") as f, np.errstate(all="ignore"):
            return file_problem(hdf2dict(f["node"]))
    except Exception:  # noqa: BLE001 - a file too broken to walk: the caller gives NIR's reason
        return None


def _plain(value):
    """numpy scalar/bytes from HDF5 -> the Python value that was written."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
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
        """The metadata of ``graph``, each field checked (a GraphError naming
        it): dt a finite number > 0, timesteps an integer >= 1, class names
        a JSON list of strings, the names strings."""
        meta = {k: _plain(v) for k, v in (getattr(graph, "metadata", None) or {}).items()}
        for key in ("encoder", "preset", "qat"):
            if meta.get(key) is not None and not isinstance(meta[key], str):
                raise GraphError(f"graph metadata: {key} must be a string, got {shown(meta[key])}")
        return cls(
            dt=_metadata_number(meta, "dt", float),
            timesteps=_metadata_number(meta, "timesteps", int),
            encoder=meta.get("encoder"),
            class_names=_class_names(meta.get("class_names")),
            preset=meta.get("preset"),
            fer2neuro=meta.get("format") == FORMAT,
            qat=meta.get("qat"),
        )


def _metadata_number(meta: dict, key: str, kind: type) -> float | int | None:
    """``meta[key]`` as a finite float > 0 or an integer >= 1 (``kind``),
    None if absent. Peers write a number, a one-element array or a numeric
    string; anything else is a GraphError naming the field."""
    if meta.get(key) is None:
        return None
    value = meta[key]
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(-1).item()) if not isinstance(value, str) \
            else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if kind is int:
        if not (math.isfinite(number) and number >= 1 and number == int(number)):
            raise GraphError(f"graph metadata: {key} must be an integer >= 1, got {shown(value)}")
        return int(number)
    if not (math.isfinite(number) and number > 0):
        raise GraphError(f"graph metadata: {key} must be a finite number > 0, got {shown(value)}")
    return number


def _class_names(names) -> tuple[str, ...]:
    """The class names: a JSON list of strings as fer2neuro writes it (an
    older file's comma-separated text is read too); none if absent."""
    if names is None:
        return ()
    if not isinstance(names, str):
        raise GraphError(f"graph metadata: class_names must be a JSON list of strings, got {shown(names)}")
    try:
        parsed = json.loads(names)
    except (json.JSONDecodeError, RecursionError):
        if names.lstrip().startswith("["):
            raise GraphError(f"graph metadata: class_names is not valid JSON: {shown(names)}") from None
        return tuple(n.strip() for n in names.split(","))
    if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
        raise GraphError(f"graph metadata: class_names must be a JSON list of strings, got {shown(names)}")
    return tuple(parsed)
