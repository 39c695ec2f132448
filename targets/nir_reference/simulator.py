"""The NIR reference target: any NIR graph of the supported nodes, cycles
included, in float64 numpy, forward Euler with any dt (equations.py), batched.

An acyclic graph: each node's whole output sequence depends only on its
inputs' whole sequences, so nodes run one after another in topological
order, stateless nodes on all (sample, step) frames at once, neuron nodes in
a loop over steps. Intermediate outputs are dropped as soon as their last
consumer has run unless they are recorded.

A graph with cycles (a recurrent network, e.g. the NIR paper's Braille RNN
with an Affine from a CubaLIF back into it). The semantics:

* the edges that close a cycle, the *back edges*, are those of
  ``describe.back_edges``: a depth-first walk from the Input nodes, then
  from the nodes not yet reached, both in the graph's node order, following
  each node's edges in the graph's edge order; an edge into a node still on
  the walk's path is a back edge;
* a back edge carries its source's output of the previous step, zero at
  t = 0 (nirtorch's convention, and Loihi's one-step synaptic delay); every
  other edge carries its source's output of the same step;
* a node with several inputs sums them, in the graph's edge order, a back
  edge's contribution included (at t = 0 a back edge adds nothing).

Without its back edges the graph is acyclic: the simulation goes step by
step, t = 0 .. T-1, and at each step evaluates every node on the frame t
(B, *shape) in that DAG's topological order, neurons through the
``equations.NEURONS`` registry with their state kept across steps,
stateless nodes through ``STATELESS``. Recording (nodes, membranes,
chunks) is the same as for an acyclic graph.
"""
from __future__ import annotations

from types import SimpleNamespace

import nir
import numpy as np
from fer2neuro.progress import progress_bar

from fer2neuro.errors import DataError, TargetError
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph import ops
from fer2neuro.nirgraph.describe import forward_order
from fer2neuro.nirgraph.flat import FlatGraph, flatten_graph, frame_shape_into, step_input
from fer2neuro.targets.base import (Arithmetic, GraphProgram, Recording, Target, input_shape, prepare_inputs,
                                    spike_counts)

# Stateless nodes: frames (N, *in_shape) -> (N, *out_shape).
STATELESS = {
    **ops.LINEAR_NODES,
    nir.Threshold: lambda n, x: eq.threshold(x, np.asarray(n.threshold, dtype=np.float64)).astype(np.float64),
}

PASS_THROUGH = (nir.Input, nir.Output)
FRAME_ROWS = 8           # a recurrent graph's frames go through stateless nodes in multiples of 8 rows
SUPPORTED = tuple(STATELESS) + tuple(eq.NEURONS) + PASS_THROUGH


def supported_node_names() -> list[str]:
    return sorted(t.__name__ for t in SUPPORTED)


def run_neuron(neuron: eq.Neuron, p: SimpleNamespace, currents: np.ndarray, dt: float,
               states: dict | None, name: str) -> np.ndarray:
    """Step one neuron layer through time: currents (B, T, *shape) -> outputs
    (spikes as 0/1, or the membrane); with ``states``, record each state
    variable there as "<name>.<variable>" (B, T, *shape)."""
    batch, steps = currents.shape[:2]
    state = {var: np.zeros((batch, *currents.shape[2:])) for var in neuron.states}
    out = np.empty(currents.shape, dtype=np.float64)
    trace = {var: np.empty_like(out) for var in neuron.states} if states is not None else {}
    for t in range(steps):
        out[:, t], state = neuron.step(state, currents[:, t], p, dt)
        check_finite_values(name, state, t)
        for var, values in trace.items():
            values[:, t] = state[var]
    if states is not None:
        states.update({f"{name}.{var}": values for var, values in trace.items()})
    return out


def check_finite_values(name: str, values: dict[str, np.ndarray], step: int | None = None) -> None:
    """TargetError if a node's output or a neuron's state (``values``, by
    variable) holds NaN or infinity. Finite inputs and parameters can still
    overflow float64 (inputs of 1e308): the membranes then turn NaN, no
    neuron spikes again, and the run would end with exit 0 and a result
    that looks like silence; verify would call that agreement."""
    for var, a in values.items():
        if not np.isfinite(a).all():
            when = f" at step {step}" if step is not None else ""
            raise TargetError(f"node {name!r}: its {var} overflowed float64 (NaN or infinite values){when}; "
                              f"the inputs are too large for this graph")


def check_supported(graph: FlatGraph, target: str) -> None:
    for name, node in graph.nodes.items():
        if type(node) not in SUPPORTED:
            raise TargetError(f"node {graph.describe(name)} is not supported by the {target} target "
                              f"(it runs {', '.join(supported_node_names())})")


def _weight_hint(node) -> str:
    weight = getattr(node, "weight", None)
    return "" if weight is None else f" (its weight has shape {tuple(np.shape(weight))})"


def check_shapes(graph: FlatGraph, order=None, back=()) -> None:
    """That the node shapes chain: one zero frame of each Input's shape
    pushed along the forward edges (back edges of a cycle aside), before
    anything runs. Raises a one-line TargetError naming the node that does
    not fit and the node(s) feeding it. Inputs without a declared shape:
    nothing to check."""
    if order is None:
        order, back = forward_order(graph)
    frames: dict[str, np.ndarray | None] = {}
    for name in order:
        node = graph.nodes[name]
        sources = [src for k, (src, dst) in enumerate(graph.edges) if dst == name and k not in back]
        if not sources:
            shape = input_shape(graph, name) if isinstance(node, nir.Input) else None
            frames[name] = None if shape is None else np.zeros((1, *shape))
            continue
        given = [frames.get(src) for src in sources]
        if any(g is None for g in given):
            frames[name] = None
            continue
        shapes = {g.shape[1:] for g in given}
        if len(shapes) > 1:
            raise TargetError(f"node {graph.describe(name)} sums inputs of different shapes: "
                              + ", ".join(f"{graph.describe(src)} outputs {g.shape[1:]}"
                                          for src, g in zip(sources, given)))
        frame = given[0]
        if isinstance(node, PASS_THROUGH):
            frames[name] = frame
        elif type(node) in eq.NEURONS:
            eq.neuron_params(graph, name, frame.shape[1:], dialects.neuron_of(graph, name))   # parameter shapes
            frames[name] = frame
        elif type(node) in STATELESS:
            try:
                with np.errstate(all="ignore"):
                    frames[name] = np.asarray(STATELESS[type(node)](node, frame))
            except (ValueError, RuntimeError, IndexError, TypeError):
                feeders = " + ".join(graph.describe(src) for src in sources)
                raise TargetError(f"node {graph.describe(name)} does not fit its input: {feeders} outputs "
                                  f"shape {frame.shape[1:]}{_weight_hint(node)}") from None
        else:
            frames[name] = None


class NIRReferenceTarget(Target):
    """float64 numpy simulation of NIR's equations (forward Euler)."""

    name = "nir"
    arithmetic = Arithmetic.FLOAT64

    def open(self, source) -> GraphProgram:
        self._check_source(source)
        flat, order, _ = self.compile(source)
        layers = tuple(n for n in order if isinstance(flat.nodes[n], eq.SPIKING_TYPES))
        return GraphProgram(self.name, self.arithmetic, source, self.simulate, layers)

    def check(self, graph: nir.NIRGraph) -> None:
        """Its compile: what ``open`` checks, without building the program."""
        self._check_source(graph)
        self.compile(graph)

    def compile(self, graph: nir.NIRGraph) -> tuple[FlatGraph, list[str], set[int]]:
        """-> (the flat graph, its nodes in data-flow order without the back
        edges, the back edges as indices into its edges)."""
        flat = flatten_graph(graph)
        check_supported(flat, self.name)
        order, back = forward_order(flat)
        for name in order:
            if not flat.predecessors(name) and not isinstance(flat.nodes[name], nir.Input):
                raise TargetError(f"node {flat.describe(name)} has no input edge")
        check_shapes(flat, order, back)
        return flat, order, back

    def simulate(self, graph, inputs, *, dt=None, record="spikes", record_states=False,
                 batch_size=None, progress=False) -> Recording:
        dt = 1.0 if dt is None else float(dt)
        if not dt > 0:
            raise DataError(f"dt must be > 0, got {dt}")
        flat, order, back = self.compile(graph)
        x = prepare_inputs(flat, inputs)
        spiking = tuple(n for n in order if isinstance(flat.nodes[n], eq.SPIKING_TYPES))
        keep = self._recorded(flat, order, spiking, record)
        total = next(iter(x.values())).shape[0]
        step = batch_size or total
        chunks = []
        bar = progress_bar(total=total, desc="nir", unit="sample", disable=not progress, leave=False)
        for start in range(0, total, step):
            part = {k: v[start:start + step] for k, v in x.items()}
            # an overflow is reported once, as a TargetError (check_finite_values), not as numpy's warning
            with np.errstate(over="ignore", invalid="ignore"):
                if back:
                    chunks.append(self._run_steps(flat, order, back, part, dt, keep, record_states))
                else:
                    chunks.append(self._run_chunk(flat, order, part, dt, keep, record_states))
            bar.update(min(step, total - start))
        bar.close()
        outputs = {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]}
        states = {k: np.concatenate([c[1][k] for c in chunks]) for k in chunks[0][1]}
        return Recording(outputs=outputs, spiking=tuple(n for n in spiking if n in outputs),
                         output_nodes=tuple(flat.outputs), dt=dt, states=states)

    @staticmethod
    def _recorded(flat: FlatGraph, order, spiking, record) -> list[str]:
        if record == "all":
            return list(order)
        if record == "spikes":
            return [n for n in order if n in spiking or n in flat.outputs]
        unknown = sorted(set(record) - set(order))
        if unknown:
            raise DataError(f"cannot record {', '.join(unknown)}: no such node in the graph")
        return [n for n in order if n in record]

    def _run_chunk(self, flat: FlatGraph, order, inputs, dt, keep, record_states):
        remaining = {n: len(flat.successors(n)) for n in order}
        values: dict[str, np.ndarray] = {}
        states: dict[str, np.ndarray] | None = {} if record_states else None
        for name in order:
            node = flat.nodes[name]
            preds = flat.predecessors(name)
            values[name] = self._node_output(flat, name, node, preds, values, inputs, dt, states)
            for src in preds:
                remaining[src] -= 1
                if remaining[src] == 0 and src not in keep:
                    del values[src]
        spikes = {n for n in order if isinstance(flat.nodes[n], eq.SPIKING_TYPES)}
        sources = {n: self._source(flat, n) for n in keep}
        recorded = {n: spike_counts(values[n]) if sources[n] in spikes else values[n] for n in keep}
        return recorded, states or {}

    def _run_steps(self, flat: FlatGraph, order, back, inputs, dt, keep, record_states):
        """A graph with back edges, step by step (see the module docstring)."""
        batch, steps = next(iter(inputs.values())).shape[:2]
        incoming = {name: [] for name in order}          # (source, is a back edge), in edge order
        for k, (src, dst) in enumerate(flat.edges):
            incoming[dst].append((src, k in back))
        delayed = {src for k, (src, _) in enumerate(flat.edges) if k in back}
        neurons = {n: dialects.neuron_of(flat, n) for n in order if type(flat.nodes[n]) in eq.NEURONS}
        params: dict[str, SimpleNamespace] = {}
        state: dict[str, dict] = {}
        previous: dict[str, np.ndarray] = {}              # back-edge sources' outputs of step t - 1
        back_edges = dialects.named(flat.dialect).back_edge_t0
        bias_at_t0 = back_edges != "zero"          # the back edges carry a value from t = 0 on
        if back_edges == "bias":
            previous = {src: self._before_first_step(flat, src, batch) for src in delayed}
        recorded: dict[str, np.ndarray] = {}
        traces: dict[str, np.ndarray] = {}
        for t in range(steps):
            now: dict[str, np.ndarray] = {}
            if back_edges == "same step":
                previous = {src: self._emitted_now(flat, src, params, state, batch) for src in delayed}
            for name in order:
                node = flat.nodes[name]
                if not incoming[name]:
                    out = inputs[name][:, t]
                else:
                    current = step_input(flat, name, incoming[name], now, previous, t == 0 and not bias_at_t0,
                                         lambda a: a.shape[1:], lambda shape: np.zeros((batch, *shape)))
                    if isinstance(node, PASS_THROUGH):
                        out = current
                    elif name in neurons:
                        neuron = neurons[name]
                        if t == 0:
                            params[name] = eq.neuron_params(flat, name, current.shape[1:], neuron)
                            state[name] = {var: np.zeros(current.shape) for var in neuron.states}
                        spikes_or_v, state[name] = neuron.step(state[name], current, params[name], dt)
                        check_finite_values(name, state[name], t)
                        out = np.asarray(spikes_or_v, dtype=np.float64)
                        if record_states:
                            for var in neuron.states:
                                key = f"{name}.{var}"
                                if t == 0:
                                    traces[key] = np.empty((batch, steps, *current.shape[1:]))
                                traces[key][:, t] = state[name][var]
                    else:
                        try:
                            out = self._frame_output(node, current)
                        except ValueError as exc:
                            raise TargetError(f"node {flat.describe(name)} cannot take input of shape "
                                              f"{current.shape[1:]}: {exc}") from None
                        check_finite_values(name, {"output": out}, t)
                now[name] = out
                if name in keep:
                    if t == 0:
                        recorded[name] = np.empty((batch, steps, *out.shape[1:]))
                    recorded[name][:, t] = out
            previous = {n: now[n] for n in delayed}
        spikes = {n for n in order if isinstance(flat.nodes[n], eq.SPIKING_TYPES)}
        sources = {n: self._source(flat, n) for n in keep}
        recorded = {n: spike_counts(recorded[n]) if sources[n] in spikes else recorded[n] for n in keep}
        return recorded, traces

    def _emitted_now(self, flat: FlatGraph, name: str, params, state, batch: int) -> np.ndarray:
        """A back-edge source's output of *this* step, where the dialect's
        neurons decide their spikes from their state before their input
        (Spyx): the spikes its neuron will emit, through the recurrent weight
        (``dialects.same_step_source``)."""
        neuron_name, neuron = dialects.same_step_source(flat, name)
        if neuron_name not in state:                   # t = 0: the neuron's state is zero
            shape = frame_shape_into(flat, name)
            params[neuron_name] = eq.neuron_params(flat, neuron_name, shape, neuron)
            state[neuron_name] = {var: np.zeros((batch, *shape)) for var in neuron.states}
        spikes = np.asarray(neuron.emit(state[neuron_name], params[neuron_name]), dtype=np.float64)
        return spikes if name == neuron_name else self._frame_output(flat.nodes[name], spikes)

    def _before_first_step(self, flat: FlatGraph, name: str, batch: int) -> np.ndarray:
        """A back-edge source's output at t = -1 where the dialect's back
        edges carry their bias at t = 0 (snnTorch's recurrent Linear): a
        stateless node applied to a zero frame, a neuron's zero spikes."""
        zeros = np.zeros((batch, *frame_shape_into(flat, name)))
        node = flat.nodes[name]
        return self._frame_output(node, zeros) if type(node) in STATELESS else zeros

    @staticmethod
    def _frame_output(node, frame: np.ndarray) -> np.ndarray:
        """A stateless node on one step's frame (B, *shape), its rows padded
        with zeros to a multiple of ``FRAME_ROWS``: BLAS computes a matrix
        product's rows with kernels chosen by the row count (a single row is
        a matrix-vector product; an odd last row has its own kernel), which
        round differently, and a sample's result must not depend on the
        batch it runs in (``batch_size``, one sample on its own)."""
        rows = frame.shape[0]
        pad = -rows % FRAME_ROWS
        if pad:
            frame = np.concatenate([frame, np.zeros((pad, *frame.shape[1:]))])
        return STATELESS[type(node)](node, frame)[:rows]

    @staticmethod
    def _source(flat: FlatGraph, name: str) -> str:
        """The node whose values an Output/Input pass-through carries."""
        while isinstance(flat.nodes[name], PASS_THROUGH) and len(flat.predecessors(name)) == 1:
            name = flat.predecessors(name)[0]
        return name

    def _node_output(self, flat, name, node, preds, values, inputs, dt, states) -> np.ndarray:
        if not preds:
            return inputs[name]
        current = values[preds[0]]
        for src in preds[1:]:
            if values[src].shape != current.shape:
                raise TargetError(f"node {flat.describe(name)} sums inputs of shapes "
                                  f"{current.shape[2:]} and {values[src].shape[2:]}")
            current = current + values[src]
        if len(preds) > 1:
            check_finite_values(name, {"summed input": current})
        if isinstance(node, PASS_THROUGH):
            return current
        batch, steps = current.shape[:2]
        if type(node) in eq.NEURONS:
            neuron = dialects.neuron_of(flat, name)
            params = eq.neuron_params(flat, name, current.shape[2:], neuron)
            return run_neuron(neuron, params, current, dt, states, name)
        frames = current.reshape(batch * steps, *current.shape[2:])
        try:
            out = STATELESS[type(node)](node, frames)
        except ValueError as exc:
            raise TargetError(f"node {flat.describe(name)} cannot take input of shape "
                              f"{current.shape[2:]}: {exc}") from None
        check_finite_values(name, {"output": out})
        return out.reshape(batch, steps, *out.shape[1:])
