"""``export --target nir --for PEER``: a fer2neuro graph rewritten so that
one peer's own NIR importer reads it as fer2neuro means it (SPEC §2), one
module per peer, each with ``adapt(graph) -> graph``."""
from __future__ import annotations

import importlib

import nir

from fer2neuro.atomic import atomic_path
from fer2neuro.nirgraph.dialects import PEERS  # noqa: F401 - one module per peer with a dialect
from fer2neuro.hdf5 import write_hdf5
from fer2neuro.nirgraph.file import write_graph


def _module(peer: str):
    return importlib.import_module(f"fer2neuro.interop.for_peer.{peer}")


def adapt(peer: str, graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` as ``peer``'s importer must read it to run it as fer2neuro
    means it; a GraphError with the reason where the peer cannot."""
    return _module(peer).adapt(graph)


def write(peer: str, graph: nir.NIRGraph, path) -> None:
    """Write an adapted graph in a form the peer's nir release reads
    (nir 1.0.4 for Sinabs and Rockpool), through a temporary file."""
    writer = getattr(_module(peer), "write", None)
    if writer is None:
        write_graph(graph, path)
        return
    with atomic_path(path) as tmp:
        write_hdf5(tmp, lambda f: writer(graph, f))
