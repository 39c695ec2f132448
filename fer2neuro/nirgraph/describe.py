"""What a NIR graph holds, as plain dicts (for ``fer2neuro inspect``): each
node's type, shapes and parameters, the edges with those that close a cycle
marked, and fer2neuro's metadata.

Recurrent graphs are described too, so the walk here cannot use
``flat.topological_order`` (which stops at a cycle): a depth-first walk
decides which edges close a cycle (``back_edges``), and the nodes are listed
in data-flow order without them.
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
