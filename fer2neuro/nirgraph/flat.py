"""Walking a NIR graph the way a simulator needs it: subgraphs inlined,
nodes in an order where every node comes after all of its inputs.

Shared by the targets; none of this depends on how a target computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from fer2neuro.errors import TargetError


@dataclass(frozen=True)
class FlatGraph:
    """A NIR graph with nested NIRGraph nodes inlined (``sub.node`` names)."""

    nodes: dict[str, nir.NIRNode]
    edges: tuple[tuple[str, str], ...]
    dialect: str = "nir"               # whose semantics the neurons run in (nirgraph/dialects)

    def predecessors(self, name: str) -> list[str]:
        return [src for src, dst in self.edges if dst == name]

    def successors(self, name: str) -> list[str]:
        return [dst for src, dst in self.edges if src == name]

    def of_type(self, *types) -> list[str]:
        return [name for name, node in self.nodes.items() if isinstance(node, types)]

    @property
    def inputs(self) -> list[str]:
        """The graph's external inputs (an inlined subgraph's Input nodes have
        a predecessor and just pass their input on)."""
        return [n for n in self.of_type(nir.Input) if not self.predecessors(n)]

    @property
    def outputs(self) -> list[str]:
        return [n for n in self.of_type(nir.Output) if not self.successors(n)]

    def describe(self, name: str) -> str:
        return f"{name!r} ({type(self.nodes[name]).__name__})"


def _endpoint(graph: nir.NIRGraph, name: str, kind: type, prefix: str) -> str:
    """Resolve an edge endpoint that may name a subgraph ('sub') or a port of
    it ('sub.input') to the inlined node name."""
    head, _, port = name.partition(".")
    node = graph.nodes.get(name) if name in graph.nodes else graph.nodes.get(head)
    if not isinstance(node, nir.NIRGraph):
        return prefix + name
    ports = [n for n, sub in node.nodes.items() if isinstance(sub, kind)]
    if port and name not in graph.nodes:
        ports = [p for p in ports if p == port]
    if len(ports) != 1:
        raise TargetError(f"edge endpoint {name!r}: subgraph {head!r} has {len(ports)} matching "
                          f"{kind.__name__} nodes; name one as '{head}.<node>'")
    inner = _endpoint(node, ports[0], kind, prefix + head + ".")
    return inner


def flatten_graph(graph: nir.NIRGraph, prefix: str = "") -> FlatGraph:
    """``graph`` with its subgraphs inlined; the dialect named in its
    metadata (``dialects.apply``) comes along."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner = flatten_graph(node, prefix + name + ".")
            nodes.update(inner.nodes)
            edges.extend(inner.edges)
        else:
            nodes[prefix + name] = node
    for src, dst in graph.edges:
        edges.append((_endpoint(graph, src, nir.Output, prefix), _endpoint(graph, dst, nir.Input, prefix)))
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                raise TargetError(f"edge ({src!r}, {dst!r}) names a node {end!r} that is not in the graph")
    dialect = (getattr(graph, "metadata", None) or {}).get("fer2neuro_dialect", "nir")
    return FlatGraph(nodes, tuple(edges), dialect.decode() if isinstance(dialect, bytes) else str(dialect))


def _find_cycle(graph: FlatGraph, among: set[str]) -> list[str]:
    """One cycle among ``among`` (nodes Kahn's algorithm could not order)."""
    among = set(among)
    while True:   # drop nodes downstream of a cycle: they have no successor left in the set
        sinks = {n for n in among if not any(s in among for s in graph.successors(n))}
        if not sinks:
            break
        among -= sinks
    start = sorted(among)[0]
    path, seen = [start], {start: 0}
    while True:
        nxt = sorted(s for s in graph.successors(path[-1]) if s in among)[0]
        if nxt in seen:
            return path[seen[nxt]:] + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)


def kahn_order(graph) -> list[str]:
    """The nodes of ``graph`` (a FlatGraph or a nir.NIRGraph) after all of
    their inputs (Kahn's algorithm, stable in the graph's node order); nodes
    on a cycle, and those after one, are left out. An edge endpoint that is
    not a node (a subgraph's port) counts for nothing."""
    indegree = {name: 0 for name in graph.nodes}
    for _, dst in graph.edges:
        if dst in indegree:
            indegree[dst] += 1
    ready = [name for name in graph.nodes if indegree[name] == 0]
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for src, dst in graph.edges:
            if src == name and dst in indegree:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    return order


def topological_order(graph: FlatGraph) -> list[str]:
    """Every node after all of its inputs (Kahn's algorithm, stable in the
    graph's node order). A cycle is an error that names its nodes."""
    order = kahn_order(graph)
    if len(order) < len(graph.nodes):
        cycle = _find_cycle(graph, set(graph.nodes) - set(order))
        raise TargetError("the graph has a cycle, which this target cannot run: "
                          + " -> ".join(graph.describe(n) for n in cycle))
    return order


def known_shape(types) -> tuple[int, ...] | None:
    """The one port's shape in an input_type/output_type, if known."""
    shapes = [s for s in (types or {}).values() if s is not None]
    if len(shapes) != 1:
        return None
    shape = np.asarray(shapes[0]).reshape(-1)
    if shape.size == 0 or shape.dtype.kind not in "iu":
        return None
    return tuple(int(s) for s in shape)


def frame_shape_into(graph: FlatGraph, name: str) -> tuple[int, ...]:
    """The shape of one frame into node ``name``: its input type, else, for
    a dense weight, the weight's columns. A back edge's source needs it to
    compute its output before its own input exists (t = 0)."""
    node = graph.nodes[name]
    shape = known_shape(node.input_type)
    if shape is None and np.ndim(getattr(node, "weight", None)) == 2:
        shape = (np.shape(node.weight)[1],)
    if shape is None:
        raise TargetError(f"node {graph.describe(name)} closes a cycle and has no known input shape, so its "
                          f"output at t = 0 is unknown")
    return shape


def step_input(graph: FlatGraph, name: str, incoming, now: dict, previous: dict, first: bool, shape_of, zeros):
    """A node's input at one step of a recurrent graph: the sum, in edge
    order, of this step's outputs over forward edges and the previous step's
    over back edges (none at t = 0). ``incoming``: (source, is_back_edge)
    pairs. At t = 0 a node fed only by back edges gets ``zeros(shape)``, its
    input shape (or its sources' output shape). Array-generic: the nir
    target passes numpy arrays, the ONNX lowering torch tensors
    (``shape_of`` reads a frame's shape without the batch)."""
    current = None
    for src, is_back in incoming:
        if is_back and first:
            continue
        value = previous[src] if is_back else now[src]
        if current is None:
            current = value
            continue
        if shape_of(value) != shape_of(current):
            raise TargetError(f"node {graph.describe(name)} sums inputs of shapes "
                              f"{shape_of(current)} and {shape_of(value)}")
        current = current + value
    if current is None:
        shape = known_shape(graph.nodes[name].input_type)
        if shape is None:
            shapes = {known_shape(graph.nodes[src].output_type) for src, _ in incoming}
            shape = shapes.pop() if len(shapes) == 1 else None
        if shape is None:
            raise TargetError(f"node {graph.describe(name)} has only back-edge inputs and no known "
                              f"input shape, so its input at t = 0 is unknown")
        current = zeros(shape)
    return current
