"""The NIR dialects fer2neuro reads (base.py says what a dialect is): NIR's
own and one per peer tool, each in its own module.

    graph = dialects.apply(graph, "sinabs")     # rewritten, and named in its metadata
    dialects.detect(graph)                      # "sinabs", or "nir" when no writer shows
    dialects.neuron_of(flat, name)              # the step function a target runs for a node
"""
from __future__ import annotations

import copy

import nir

from fer2neuro.errors import ConfigError, GraphError, TargetError
from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects import norse, rockpool, sinabs, snntorch, spyx
from fer2neuro.nirgraph.dialects.base import CAUSES, DIALECT_KEY, NIR, Dialect
from fer2neuro.nirgraph.file import read_graph
from fer2neuro.nirgraph.validate import check_graph
from fer2neuro.nirgraph.flat import FlatGraph

DIALECTS: dict[str, Dialect] = {d.name: d for d in (NIR, snntorch.DIALECT, norse.DIALECT, sinabs.DIALECT,
                                                    rockpool.DIALECT, spyx.DIALECT)}
PEERS = tuple(name for name in DIALECTS if name != "nir")
CHOICES = ("auto", *DIALECTS)

__all__ = ["CAUSES", "CHOICES", "DIALECTS", "DIALECT_KEY", "NIR", "Dialect", "PEERS", "apply", "detect", "is_nir",
           "named",
           "neuron_of", "of_graph", "read", "same_step_source"]


def named(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ConfigError(f"unknown semantics {name!r}: use one of {', '.join(CHOICES)}") from None


def is_nir(semantics: str) -> bool:
    """Whether ``semantics`` reads a file as NIR's equations say ("nir"),
    or as the file shows ("auto", which is NIR's for fer2neuro's own)."""
    return semantics in ("auto", NIR.name)


def _metadata(graph: nir.NIRGraph) -> dict:
    return dict(getattr(graph, "metadata", None) or {})


def of_graph(graph: nir.NIRGraph) -> Dialect:
    """The dialect a graph was put in by ``apply`` (NIR's if none)."""
    value = _metadata(graph).get(DIALECT_KEY, "nir")
    if isinstance(value, bytes):
        value = value.decode()
    return named(str(value))


def detect(graph: nir.NIRGraph) -> str:
    """The writer a graph shows (its metadata, its node fields), else "nir"."""
    if DIALECT_KEY in _metadata(graph):
        return of_graph(graph).name
    for name in PEERS:
        if DIALECTS[name].detect(graph):
            return name
    return "nir"


def apply(graph: nir.NIRGraph, name: str) -> nir.NIRGraph:
    """``graph`` as its writer ran it: the dialect's rewrite, its name in the
    metadata, and its default dt where the graph gives none. "auto" picks
    the dialect ``detect`` finds. A graph already put in a dialect is
    returned as it is (a rewrite is applied once)."""
    if name == "auto":
        name = detect(graph)
    dialect = named(name)
    meta = _metadata(graph)
    if DIALECT_KEY in meta:
        if of_graph(graph).name != dialect.name:
            raise ConfigError(f"the graph is already read with the {of_graph(graph).name} semantics, "
                              f"not {dialect.name}")
        return graph
    out = dialect.rewrite(copy.deepcopy(graph))
    meta = _metadata(out)
    if dialect.name != "nir":
        meta[DIALECT_KEY] = dialect.name
    if "dt" not in meta and dialect.default_dt is not None:
        meta["dt"] = float(dialect.default_dt)
    out.metadata = meta
    return out


def read(path, semantics: str = "nir") -> nir.NIRGraph:
    """A ``.nir`` file read with ``semantics`` ("nir", "auto" or a peer's):
    the dialect's rewrite first, then the check of every node
    (validate.check_graph; a writer's convention may use infinity before
    the rewrite: snnTorch's IF)."""
    if semantics == "nir":
        return read_graph(path)
    graph = apply(read_graph(path, check=False), semantics)
    check_graph(graph, GraphError, f"{path}: ")
    return graph


def same_step_source(flat: FlatGraph, name: str) -> tuple[str, eq.Neuron]:
    """Where the "same step" back edge from ``name`` takes its spikes: the
    neuron itself, or the one neuron feeding ``name`` (the recurrent
    weight), whose step can ``emit`` them from its state before its input
    (-> the neuron's name and its Neuron)."""
    sources = [name] if type(flat.nodes[name]) in eq.NEURONS else flat.predecessors(name)
    if len(sources) == 1 and type(flat.nodes[sources[0]]) in eq.NEURONS:
        neuron = neuron_of(flat, sources[0])
        if neuron.emit is not None:
            return sources[0], neuron
    raise TargetError(f"the {flat.dialect} semantics feed back the spikes of the same step, from a neuron that "
                      f"decides them before its input, through one linear node; {flat.describe(name)} closes a "
                      f"cycle otherwise")


def neuron_of(flat: FlatGraph, name: str) -> eq.Neuron:
    """The step function a target runs for neuron node ``name``: its
    dialect's where it has one for the type, else NIR's."""
    kind = type(flat.nodes[name])
    return named(flat.dialect).neurons.get(kind) or eq.NEURONS[kind]
