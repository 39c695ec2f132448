"""A NIR graph as an ONNX model unrolled over T (opset 17), for onnxruntime:
what ``fer2neuro export --target onnx`` writes and the ``onnx`` target runs.

The model computes what the NIR reference target computes: the graph's
nodes in topological order (several inputs summed), the stateless ones on
all (sample, step) frames at once, each neuron's update written out for
every step by the reference's own step function
(``fer2neuro/nirgraph/equations.py``, traced on torch tensors), at any
dt. It is built as a torch module and exported with the TorchScript
exporter (``dynamo=False``: the dynamo exporter needs onnxscript, not
installed here).

float64 by default, where it equals the reference spike for spike.
onnxruntime has no float64 Conv or pooling kernels, so in float64 a
convolution is im2col (``unfold``, which the exporter lowers to
Pad/Gather/Concat) and a MatMul, and a pool is the sum of its window's
strided slices in the reference's order (exact for spikes). float32 uses
ONNX's Conv and AveragePool.

Input ``input``: with ``direct`` one frame (B, *input_shape) held for all T
steps, and the stateless nodes before the first neuron run once on it;
otherwise the sequence (B, T, *input_shape). Outputs, (B, T, *shape), in
data-flow order: every spiking node (named by the node), the source of any
graph Output that is not spiking, and with ``membranes`` each neuron's state
variables (``<node>.v``, and ``<node>.i`` for current-based neurons).

A graph with cycles (a recurrent network) is unrolled step by step, as the
NIR reference target runs it: the edges that close a cycle are
``describe.back_edges``; each carries its source's output of the previous
step (nothing at t = 0); every node is evaluated on the frame t (B, *shape)
in the topological order of the graph without its back edges, its inputs
summed in the graph's edge order, through the same lowerings.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import nir
import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from fer2neuro.errors import GraphError, TargetError, one_line
from fer2neuro.lowering.onnx_file import OnnxMetadata, nonfinite_tensor
from fer2neuro.memory import check_fits, graph_values, steps_bytes
from fer2neuro.nirgraph.readout import Readout
from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph import ops
from fer2neuro.nirgraph.describe import back_edges, forward_order
from fer2neuro.nirgraph.describe import input_shape as input_shape_of
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.flat import FlatGraph, flatten_graph, frame_shape_into, step_input

OPSET = 17
FORMAT = "fer2neuro.onnx"
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
PASS_THROUGH = (nir.Input, nir.Output)


def sizes(x: torch.Tensor, start: int = 1) -> tuple[int, ...]:
    """The sizes of ``x`` from dim ``start`` on, as constants: while
    exporting, torch traces sizes as tensors, which would make every reshape
    dynamic and leave ONNX's Conv with an input of unknown rank. Only the
    batch dim (never included) varies."""
    return tuple(int(s) for s in x.shape[start:])


def _window_sum(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Sum pool over (N, C, H, W) as the reference computes it: the kernel's
    strided slices of the zero-padded input added in order (Slice and Add,
    which onnxruntime has in float64)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    _, h, w = sizes(x)
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    total = None
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            total = window if total is None else total + window
    return total


class Lowering:
    """Each supported node type as torch operations on frames (N, *shape)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.double = dtype == torch.float64

    def tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=self.dtype)

    def affine(self, node, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.tensor(np.asarray(node.weight, dtype=np.float64).T)
        bias = getattr(node, "bias", None)            # nir.Linear has none
        return y if bias is None else y + self.tensor(bias)

    def scale(self, node, x: torch.Tensor) -> torch.Tensor:
        return x * self.tensor(node.scale)

    def flatten(self, node, x: torch.Tensor) -> torch.Tensor:
        """NIR counts dims within one sample; frames have the batch dim first."""
        dims = x.dim() - 1
        return torch.flatten(x, int(node.start_dim) % dims + 1, int(node.end_dim) % dims + 1)

    def threshold(self, node, x: torch.Tensor) -> torch.Tensor:
        return eq.threshold(x, self.tensor(node.threshold)).to(self.dtype)

    def conv2d_node(self, node, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x, node.weight, node.bias, node.stride, node.padding, node.dilation, node.groups)

    def conv1d_node(self, node, x: torch.Tensor) -> torch.Tensor:
        """A Conv2d over (C, 1, L), as the reference computes it."""
        pad = ops.as_tuple(node.padding, 1, "padding")[0]
        return self.conv2d(x[:, :, None, :], np.asarray(node.weight)[:, :, None, :], node.bias,
                           (1, ops.as_tuple(node.stride, 1)[0]), pad if isinstance(pad, str) else (0, pad),
                           (1, ops.as_tuple(node.dilation, 1)[0]), node.groups)[:, :, 0, :]

    def conv2d(self, x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
        weight = np.asarray(weight, dtype=np.float64)
        c_out, c_group, kh, kw = weight.shape
        groups = int(groups)
        stride, dilation = ops.as_tuple(stride, 2, "stride"), ops.as_tuple(dilation, 2, "dilation")
        (pt, pb), (pl, pr) = ops.padding_pairs(padding, (kh, kw), dilation, 2)   # 'same' as the reference pads
        c_in = sizes(x)[0]
        if c_in != c_group * groups or c_out % groups:
            raise ValueError(f"weight {weight.shape} with groups={groups} does not fit {c_in} input channels")
        if not self.double:
            if (pt, pl) != (pb, pr):
                x, pt, pl = F.pad(x, (pl, pr, pt, pb)), 0, 0
            b = None if bias is None else self.tensor(bias)
            return F.conv2d(x, self.tensor(weight), b, stride, (pt, pl), dilation, groups)
        if pt or pb or pl or pr:
            x = F.pad(x, (pl, pr, pt, pb))
        _, h, w = sizes(x)
        ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"kernel {kh}x{kw} does not fit the input")
        cols = F.unfold(x, (kh, kw), dilation=dilation, stride=stride)        # (N, C_in * kh * kw, ho * wo)
        cols = cols.reshape(-1, groups, c_group * kh * kw, ho * wo)
        w = self.tensor(weight.reshape(groups, c_out // groups, c_group * kh * kw))
        y = (w @ cols).reshape(-1, c_out, ho, wo)
        return y if bias is None else y + self.tensor(np.asarray(bias).reshape(-1, 1, 1))

    def pool(self, node, x: torch.Tensor) -> torch.Tensor:
        kernel = ops.as_tuple(node.kernel_size, 2, "kernel_size")
        stride = ops.as_tuple(node.stride, 2, "stride")
        padding = ops.as_tuple(node.padding, 2, "padding")
        average = isinstance(node, nir.AvgPool2d)
        if self.double:
            total = _window_sum(x, kernel, stride, padding)
            return total / (kernel[0] * kernel[1]) if average else total
        if average:
            return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=True)
        channels = sizes(x)[0]
        ones = torch.ones((channels, 1, *kernel), dtype=self.dtype)     # a sum pool is a depthwise conv
        return F.conv2d(x, ones, None, stride, padding, groups=channels)

    def neuron_params(self, flat: FlatGraph, name: str, shape) -> SimpleNamespace:
        """The reference's checked parameters as tensors; a parameter equal
        everywhere becomes a scalar, which broadcasts to the same values and
        keeps the graph small."""
        params = eq.neuron_params(flat, name, tuple(shape), dialects.neuron_of(flat, name))
        return SimpleNamespace(**{p: self.tensor(a.flat[0] if a.size and (a == a.flat[0]).all() else a)
                                  for p, a in vars(params).items()})


# Stateless nodes: frames (N, *in_shape) -> (N, *out_shape).
STATELESS = {
    nir.Affine: Lowering.affine,
    nir.Linear: Lowering.affine,
    nir.Scale: Lowering.scale,
    nir.Flatten: Lowering.flatten,
    nir.Conv1d: Lowering.conv1d_node,
    nir.Conv2d: Lowering.conv2d_node,
    nir.SumPool2d: Lowering.pool,
    nir.AvgPool2d: Lowering.pool,
    nir.Threshold: Lowering.threshold,
}
SUPPORTED = (*STATELESS, *eq.NEURONS, *PASS_THROUGH)


class _SharedConstants(Lowering):
    """A Lowering that makes each distinct constant (a weight, a bias, a
    neuron parameter) once: a recurrent graph's nodes are lowered once per
    step, and the exported model should hold their parameters once, not T
    times. ``UnrolledGraph.share_constants`` registers them as buffers, which
    the exporter writes once, as initializers."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__(dtype)
        self._constants: dict[tuple, torch.Tensor] = {}

    def tensor(self, array) -> torch.Tensor:
        a = np.ascontiguousarray(np.asarray(array, dtype=np.float64))
        key = (a.shape, a.tobytes())
        if key not in self._constants:
            self._constants[key] = super().tensor(a)
        return self._constants[key]


class UnrolledGraph(nn.Module):
    """The flattened graph with every neuron step written out: tracing
    ``forward`` once gives the ONNX graph.

    Each node's value is (B, S, *shape): S = T, or S = 1 for a value that
    is constant in time (the direct input and what is computed from it
    alone), which broadcasts where it meets a sequence."""

    def __init__(self, flat: FlatGraph, order: list[str], outputs: list[str], *, timesteps: int, direct: bool,
                 dt: float, dtype: torch.dtype, membranes: bool, back: set[int] = frozenset()) -> None:
        super().__init__()
        self.flat, self.order, self.outputs = flat, order, outputs
        self.timesteps, self.direct, self.dt, self.membranes = timesteps, direct, dt, membranes
        self.back = set(back)
        self.lower = _SharedConstants(dtype) if self.back else Lowering(dtype)

    def share_constants(self, example: torch.Tensor) -> None:
        """For a recurrent graph: run once, so that every constant is made,
        and keep them as buffers (traced as shared initializers, not as a
        Constant at each use)."""
        if not self.back:
            return
        self.forward(example)
        for k, tensor in enumerate(self.lower._constants.values()):
            self.register_buffer(f"constant_{k}", tensor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.back:
            return self._forward_steps(x)
        values: dict[str, torch.Tensor] = {}
        states: dict[str, torch.Tensor] = {}
        for name in self.order:
            preds = self.flat.predecessors(name)
            if not preds:
                values[name] = x[:, None] if self.direct else x
                continue
            current = values[preds[0]]
            for src in preds[1:]:
                if sizes(values[src], 2) != sizes(current, 2):
                    raise TargetError(f"node {self.flat.describe(name)} sums inputs of shapes "
                                      f"{sizes(current, 2)} and {sizes(values[src], 2)}")
                current = current + values[src]
            values[name] = self._node(name, current, states)
        full = (-1, self.timesteps)
        result = [values[n].expand(*full, *sizes(values[n], 2)) for n in self.outputs]
        return tuple(result + list(states.values()))

    def _forward_steps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A graph with back edges, step by step (module docstring): the
        NIR reference target's ``_run_steps`` on torch frames (B, *shape)."""
        flat = self.flat
        incoming: dict[str, list] = {name: [] for name in self.order}   # (source, is a back edge), edge order
        for k, (src, dst) in enumerate(flat.edges):
            incoming[dst].append((src, k in self.back))
        delayed = {src for k, (src, _) in enumerate(flat.edges) if k in self.back}
        neurons = {n: dialects.neuron_of(flat, n) for n in self.order if type(flat.nodes[n]) in eq.NEURONS}
        dt = torch.tensor(self.dt, dtype=self.lower.dtype)       # a tensor: see equations.py on dt
        params: dict[str, SimpleNamespace] = {}
        state: dict[str, dict] = {}
        previous: dict[str, torch.Tensor] = {}
        back_edges = dialects.named(flat.dialect).back_edge_t0
        bias_at_t0 = back_edges != "zero"        # the back edges carry a value from t = 0 on
        if back_edges == "bias":    # the dialect's back edges carry their source applied to zeros at t = 0
            previous = {n: self._before_first_step(n, x.shape[0]) for n in delayed}
        frames: dict[str, list] = {name: [] for name in self.order}
        traces: dict[str, list] = {f"{n}.{var}": [] for n, neuron in neurons.items() for var in neuron.states}
        for t in range(self.timesteps):
            now: dict[str, torch.Tensor] = {}
            if back_edges == "same step":
                previous = {n: self._emitted_now(n, params, state, x.shape[0]) for n in delayed}
            for name in self.order:
                node = flat.nodes[name]
                if not incoming[name]:
                    out = x if self.direct else x[:, t]
                else:
                    current = step_input(self.flat, name, incoming[name], now, previous, t == 0 and not bias_at_t0,
                                         sizes,
                                         lambda shape: torch.zeros((x.shape[0], *shape), dtype=self.lower.dtype))
                    if isinstance(node, PASS_THROUGH):
                        out = current
                    elif name in neurons:
                        neuron = neurons[name]
                        if t == 0:
                            params[name] = self.lower.neuron_params(flat, name, sizes(current))
                            state[name] = {var: torch.zeros_like(current) for var in neuron.states}
                        spikes_or_v, state[name] = neuron.step(state[name], current, params[name], dt)
                        out = spikes_or_v.to(self.lower.dtype)
                        for var in neuron.states:
                            traces[f"{name}.{var}"].append(state[name][var])
                    else:
                        try:
                            out = STATELESS[type(node)](self.lower, node, current)
                        except (ValueError, RuntimeError) as exc:
                            reason = one_line(exc, 200)
                            raise TargetError(f"node {flat.describe(name)} cannot take input of shape "
                                              f"{sizes(current)}: {reason}") from None
                now[name] = out
                frames[name].append(out)
            previous = {n: now[n] for n in delayed}
        result = [torch.stack(frames[n], dim=1) for n in self.outputs]
        if self.membranes:
            result += [torch.stack(values, dim=1) for values in traces.values()]
        return tuple(result)

    def _emitted_now(self, name: str, params, state, batch: int) -> torch.Tensor:
        """A back-edge source's output of this step under "same step" back
        edges (the nir target's ``_emitted_now``)."""
        neuron_name, neuron = dialects.same_step_source(self.flat, name)
        if neuron_name not in state:
            shape = frame_shape_into(self.flat, name)
            params[neuron_name] = self.lower.neuron_params(self.flat, neuron_name, shape)
            state[neuron_name] = {var: torch.zeros((batch, *shape), dtype=self.lower.dtype)
                                  for var in neuron.states}
        spikes = neuron.emit(state[neuron_name], params[neuron_name]).to(self.lower.dtype)
        node = self.flat.nodes[name]
        return spikes if name == neuron_name else STATELESS[type(node)](self.lower, node, spikes)

    def _before_first_step(self, name: str, batch: int) -> torch.Tensor:
        """A back-edge source's output at t = -1 (the nir target's
        ``_before_first_step``): a stateless node on a zero frame."""
        node = self.flat.nodes[name]
        zeros = torch.zeros((batch, *frame_shape_into(self.flat, name)), dtype=self.lower.dtype)
        return STATELESS[type(node)](self.lower, node, zeros) if type(node) in STATELESS else zeros

    def _node(self, name: str, current: torch.Tensor, states: dict) -> torch.Tensor:
        node = self.flat.nodes[name]
        if isinstance(node, PASS_THROUGH):
            return current
        if type(node) in eq.NEURONS:
            return self._neuron(name, dialects.neuron_of(self.flat, name), current, states)
        steps, shape = sizes(current)[0], sizes(current, 2)
        try:
            out = STATELESS[type(node)](self.lower, node, current.reshape(-1, *shape))
        except (ValueError, RuntimeError) as exc:
            reason = one_line(exc, 200)
            raise TargetError(f"node {self.flat.describe(name)} cannot take input of shape "
                              f"{shape}: {reason}") from None
        return out.reshape(-1, steps, *sizes(out))

    def _neuron(self, name: str, neuron: eq.Neuron, current: torch.Tensor, states: dict) -> torch.Tensor:
        p = self.lower.neuron_params(self.flat, name, sizes(current, 2))
        dt = torch.tensor(self.dt, dtype=self.lower.dtype)       # a tensor: see equations.py on dt
        state = {var: torch.zeros_like(current[:, 0]) for var in neuron.states}
        constant = current[:, 0] if sizes(current)[0] == 1 else None
        outputs, trace = [], {var: [] for var in neuron.states}
        for t in range(self.timesteps):
            out, state = neuron.step(state, current[:, t] if constant is None else constant, p, dt)
            outputs.append(out.to(self.lower.dtype))
            for var in neuron.states:
                trace[var].append(state[var])
        if self.membranes:
            states.update({f"{name}.{var}": torch.stack(values, dim=1) for var, values in trace.items()})
        return torch.stack(outputs, dim=1)


def check_graph(flat: FlatGraph) -> list[str]:
    """The graph in topological order (without its back edges, if it has
    cycles), or a TargetError naming what cannot be lowered (the ``onnx``
    target's check)."""
    for name, node in flat.nodes.items():
        if type(node) not in SUPPORTED:
            names = ", ".join(sorted(t.__name__ for t in SUPPORTED))
            raise TargetError(f"node {flat.describe(name)} cannot be lowered to ONNX (supported: {names})")
    order, _ = forward_order(flat)
    for name in order:
        if not flat.predecessors(name) and not isinstance(flat.nodes[name], nir.Input):
            raise TargetError(f"node {flat.describe(name)} has no input edge")
    if len(flat.inputs) != 1:
        raise TargetError(f"the graph has {len(flat.inputs)} Input nodes; an ONNX model lowered by fer2neuro "
                          f"takes exactly one")
    if flat.nodes[flat.inputs[0]].input_type.get("input") is None:
        raise TargetError(f"Input node {flat.inputs[0]!r} has no shape: ONNX needs one")
    return order


def _source(flat: FlatGraph, name: str) -> str:
    """The node whose values an Output/Input pass-through carries."""
    while isinstance(flat.nodes[name], PASS_THROUGH) and len(flat.predecessors(name)) == 1:
        name = flat.predecessors(name)[0]
    return name


def nir_to_onnx(graph: nir.NIRGraph, *, timesteps: int, direct: bool, dt: float = 1.0,
                precision: str = "float64", membranes: bool = False) -> onnx.ModelProto:
    """``graph`` unrolled over ``timesteps`` steps of ``dt`` (module docstring)."""
    if precision not in PRECISIONS:
        raise TargetError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if not dt > 0 or timesteps < 1:
        raise TargetError(f"cannot unroll {timesteps} steps of dt = {dt}: both must be > 0")
    flat = flatten_graph(graph)
    order = check_graph(flat)
    input_shape = list(input_shape_of(flat, flat.inputs[0]))       # a batch axis in its type left out
    spiking = [n for n in order if isinstance(flat.nodes[n], eq.SPIKING_TYPES)]
    output_nodes = {out: _source(flat, out) for out in flat.outputs}
    outputs = spiking + [n for n in dict.fromkeys(output_nodes.values()) if n not in spiking]
    dtype = PRECISIONS[precision]
    # Tracing runs the graph once on one sample and keeps every value of every
    # step (a neuron's state and its output: two per neuron): refuse a T that
    # cannot fit before minutes of tracing end in a MemoryError.
    check_fits(steps_bytes(timesteps=timesteps, values=graph_values(flat), batch=1,
                           itemsize=dtype.itemsize, copies=2),
               f"unrolling the graph over T={timesteps} steps for ONNX", "-T")
    module = UnrolledGraph(flat, order, outputs, timesteps=timesteps, direct=direct, dt=float(dt),
                           dtype=dtype, membranes=membranes, back=back_edges(flat)).eval()
    example = torch.zeros((1, *input_shape) if direct else (1, timesteps, *input_shape), dtype=dtype)
    with torch.no_grad():
        module.share_constants(example)
    names = list(outputs)
    if membranes:
        names += [f"{n}.{var}" for n in order if type(flat.nodes[n]) in eq.NEURONS
                  for var in dialects.neuron_of(flat, n).states]
    with torch.no_grad():
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the tracer's notes on constants and shapes
            # Placeholders first: the exporter refuses names it could take for
            # its own numbered values ("1", as snnTorch names NIR nodes).
            placeholders = [f"output_{k}" for k in range(len(names))]
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=placeholders,
                              dynamic_axes={n: {0: "batch"} for n in ["input", *placeholders]})
    proto = onnx.load_from_string(buffer.getvalue())
    _rename_values(proto, dict(zip(placeholders, names)))
    info = GraphInfo.of(graph)
    meta = {"format": FORMAT, "encoder": "direct" if direct else "poisson", "timesteps": str(timesteps),
            "dt": repr(float(dt)), "precision": precision, "layers": json.dumps(spiking),
            "input_shape": json.dumps(input_shape), "output_nodes": json.dumps(output_nodes),
            "class_names": json.dumps(list(info.class_names))}
    if info.preset:
        meta["preset"] = info.preset
    readout = Readout.of_graph(graph)
    if readout is not None:                 # the output membrane's rule (nirgraph/readout.py) needs it
        meta["readout"] = readout.to_json()
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def _rename_values(proto: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename graph values (here: the outputs, to their node names). An
    internal value that already has one of the new names is renamed out of
    the way first, so every name stays unique."""
    graph = proto.graph
    taken = {v for node in graph.node for v in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    clashes = {new: f"{new}__internal" for new in renames.values() if new in taken and new not in renames}
    renames = {**clashes, **renames}
    for node in graph.node:
        node.input[:] = [renames.get(v, v) for v in node.input]
        node.output[:] = [renames.get(v, v) for v in node.output]
    for value in (*graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)


def onnx_metadata(proto: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker raise many types
        raise GraphError(f"{path}: not a valid ONNX model ({one_line(exc, 150)})") from None
    if onnx_metadata(proto).get("format") != FORMAT:
        raise GraphError(f"{path}: an ONNX model, but not one fer2neuro exported (no {FORMAT!r} metadata)")
    if len(proto.graph.input) != 1:
        raise GraphError(f"{path}: the model has {len(proto.graph.input)} inputs; fer2neuro exports one")
    try:
        OnnxMetadata.of(proto)          # every value the onnx target reads, checked (onnx_file.py)
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from None
    found = nonfinite_tensor(proto)
    if found:
        raise GraphError(f"{path}: {found}; a model with non-finite weights computes nothing meaningful")
    return proto
