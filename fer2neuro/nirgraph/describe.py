"""What a NIR graph holds, as plain dicts (for ``fer2neuro inspect``): each
node's type, shapes and parameters, the edges with those that close a cycle
marked, and fer2neuro's metadata.

Recurrent graphs are described too, so the walk here cannot use
``flat.topological_order`` (which stops at a cycle): a depth-first walk
decides which edges close a cycle (``back_edges``), and the nodes are listed
in data-flow order without them.

It also reads an Input's sample shape (``input_shape``: a batch axis that
nirtorch writes into the type left out), the one reading every target and
lowering shares.
"""
from __future__ import annotations

import dataclasses

import nir
import numpy as np

from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph.flat import FlatGraph, flatten_graph, topological_order

SMALL_ARRAY = 4          # integer arrays up to this size (strides, paddings, shapes) are listed whole
NOT_PARAMETERS = ("input_type", "output_type", "metadata")


def summarise(value):
    """A parameter as JSON-ready data: numbers and strings as they are, a
    small integer array (a stride, a padding) as a list, any other array as
    its shape with its value if uniform, else its min and max."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":                 # e.g. padding "same", or an object array
        return str(value)
    if a.ndim == 0 or (a.dtype.kind in "biu" and a.size <= SMALL_ARRAY):
        return a.tolist()
    summary = {"shape": list(a.shape)}
    if np.all(a == a.flat[0]):
        summary["value"] = a.flat[0].item()
    else:
        summary["min"], summary["max"] = a.min().item(), a.max().item()
    return summary


def _shape(types: dict) -> list[int] | None:
    """The one port's shape in a node's input_type/output_type, if known."""
    shapes = [s for s in (types or {}).values() if s is not None]
    if len(shapes) != 1:
        return None
    shape = np.asarray(shapes[0]).reshape(-1)
    if shape.size == 0 or shape.dtype.kind not in "iu":   # graphs read unchecked leave it empty or None
        return None
    return shape.tolist()


def declared_input_shape(graph: FlatGraph, name: str) -> tuple[int, ...] | None:
    """The shape an Input node's type declares, as written (None if none)."""
    shape = (graph.nodes[name].input_type or {}).get("input")
    return None if shape is None else tuple(int(s) for s in np.asarray(shape).reshape(-1))


def input_shape(graph: FlatGraph, name: str) -> tuple[int, ...] | None:
    """One sample's frame at Input node ``name``: its declared shape less a
    leading batch axis. Tools that trace a model on a batch (nirtorch, so
    Norse and Rockpool) write that batch into the type, ``(1, 20)`` for 20
    inputs; the 1 is a batch axis where every node the Input feeds that has
    a weight takes the rest (an Affine's ``(N, 20)``, a convolution's
    channels). Every target reads an Input's shape here, so they all agree."""
    shape = declared_input_shape(graph, name)
    if shape is None or len(shape) < 2 or shape[0] != 1:
        return shape
    verdicts = [_takes(graph.nodes[dst], shape[1:]) for dst in _consumers(graph, name)]
    verdicts = [v for v in verdicts if v is not None]
    return shape[1:] if verdicts and all(verdicts) else shape


def _consumers(graph: FlatGraph, name: str) -> list[str]:
    """The nodes ``name`` feeds, through the Input and Output nodes of
    inlined subgraphs (which pass frames on as they are)."""
    found, todo, seen = [], list(graph.successors(name)), {name}
    while todo:
        dst = todo.pop(0)
        if dst in seen:
            continue
        seen.add(dst)
        if isinstance(graph.nodes[dst], (nir.Input, nir.Output)):
            todo += graph.successors(dst)
        else:
            found.append(dst)
    return found


def _takes(node: nir.NIRNode, shape: tuple[int, ...]) -> bool | None:
    """Whether ``node``'s weight takes frames of ``shape``; None for a node
    without a weight (it cannot tell)."""
    weight = getattr(node, "weight", None)
    if weight is None or not isinstance(node, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)):
        return None
    weight = np.shape(weight)
    if isinstance(node, (nir.Affine, nir.Linear)):
        return len(shape) == 1 and len(weight) == 2 and weight[1] == shape[0]
    groups = int(np.asarray(getattr(node, "groups", 1)).reshape(-1)[0])
    return len(shape) == len(weight) - 1 and weight[1] * groups == shape[0]


def describe_node(name: str, node: nir.NIRNode) -> dict:
    params = {f.name: summarise(getattr(node, f.name)) for f in dataclasses.fields(node)
              if f.name not in NOT_PARAMETERS}
    return {"name": name, "type": type(node).__name__, "input_shape": _shape(node.input_type),
            "output_shape": _shape(node.output_type), "params": params}


def back_edges(graph: FlatGraph) -> set[int]:
    """Indices into ``graph.edges`` of the edges that close a cycle. The rule:
    a depth-first walk from the Input nodes, then from any node not yet
    reached, both in the graph's node order, following each node's edges in
    the graph's edge order; an edge into a node still on the walk's path is
    a back edge. Removing them leaves the graph acyclic."""
    leaving: dict[str, list[int]] = {name: [] for name in graph.nodes}
    for k, (src, _) in enumerate(graph.edges):
        leaving[src].append(k)
    on_path, done, back = set(), set(), set()
    for root in [*graph.inputs, *graph.nodes]:
        if root in on_path or root in done:
            continue
        on_path.add(root)
        path = [(root, iter(leaving[root]))]
        while path:
            name, edges = path[-1]
            k = next(edges, None)
            if k is None:
                path.pop()
                on_path.discard(name)
                done.add(name)
                continue
            dst = graph.edges[k][1]
            if dst in on_path:
                back.add(k)
            elif dst not in done:
                on_path.add(dst)
                path.append((dst, iter(leaving[dst])))
    return back


def forward_order(graph: FlatGraph) -> tuple[list[str], set[int]]:
    """(the nodes in data-flow order once the back edges are removed, the
    back edges as indices into ``graph.edges``): the order in which a
    recurrent graph's nodes run within one step."""
    back = back_edges(graph)
    forward = FlatGraph(graph.nodes, tuple(e for k, e in enumerate(graph.edges) if k not in back)) if back else graph
    return topological_order(forward), back


def describe_graph(graph: nir.NIRGraph) -> dict:
    """The graph's metadata, its nodes (subgraphs inlined as ``sub.node``) in
    data-flow order, and its edges, each marked ``back`` if it closes a cycle."""
    flat = flatten_graph(graph)
    order, back = forward_order(flat)
    info = dataclasses.asdict(GraphInfo.of(graph))
    info["class_names"] = list(info["class_names"])
    return {
        "info": info,
        "nodes": [describe_node(name, flat.nodes[name]) for name in order],
        "edges": [{"source": src, "target": dst, "back": k in back} for k, (src, dst) in enumerate(flat.edges)],
    }
