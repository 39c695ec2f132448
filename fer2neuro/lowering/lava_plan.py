"""A NIR graph as a stack of Lava layers (synapse + CUBA LIF neuron).

Lava's LIF is current-based (lava.proc.lif, floating point)::

    u = u * (1 - du) + a_in
    v = v * (1 - dv) + u + bias
    s = v > vth;  v = 0 where s

SPEC §2's neurons (NIR's IF and LIF at step dt) map onto it exactly:

- ``du = 1``: u is the synaptic input of this step, nothing carried over;
- IF ``v += dt*r*I``: ``dv = 0``, synaptic weights times ``dt*r``;
- LIF ``v += dt/tau*(v_leak - v + r*I)``: ``dv = dt/tau``, weights times
  ``dt*r/tau``, and ``dt*v_leak/tau`` joins the bias;
- a bias of the synapse (Affine, Conv2d) joins the neuron bias with the same
  factor; the reset must be to 0 and ``vth`` is one value per layer.

A ``SumPool2d`` becomes a depthwise convolution with weights 1. With a
constant (direct-encoded) input, the first synapse runs once on the host and
its output current becomes the first neuron layer's bias (what Loihi does
with an analog input); spike inputs enter through a synapse like every layer.

Every synapse delays by one step (Lava's Dense and Conv send last step's
result), so layer k's spikes appear ``depth`` steps late: see alignment.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.nirgraph.flat import FlatGraph, flatten_graph, topological_order
from fer2neuro.nirgraph import ops

SYNAPSES = (nir.Conv2d, nir.SumPool2d, nir.Linear, nir.Affine)
# Neuron node metadata the quantiser reads (written by the NIR export of a
# model fine-tuned for a fixed-point target, fer2neuro.qat):
STATE_BOUND = "state_bound"        # largest |u| or |v| measured, in the node's units
SCALE = "scale"                    # the integer scale the model was fine-tuned at
SCALE_RULE = "scale_rule"          # "power_of_two": a leaky layer's scale is a power of two (quantise.py)
NEURONS = (nir.IF, nir.LIF)


@dataclass
class LavaLayer:
    """One Lava layer: an optional synapse feeding a LIF population."""

    name: str                          # the neuron node: its spikes are this layer's output
    kind: str                          # "bias" (host-computed input current), "conv" or "dense"
    shape: tuple[int, ...]             # neuron shape, NIR order: (C, H, W) or (N,)
    du: float
    dv: float
    vth: float
    weight: np.ndarray | None = None   # effective weight (scaled), NIR layout
    bias: np.ndarray | None = None     # effective bias, broadcastable to ``shape``
    conv: dict = field(default_factory=dict)   # stride, padding, dilation, groups ((H, W) order)
    flatten_input: bool = False        # the input is the previous (C, H, W) layer flattened
    depth: int = 0                     # steps of synaptic delay from the input to this layer
    synapse: str | None = None         # the NIR synapse node
    gain: np.ndarray | float = 1.0     # factor on the synapse's output (dt*r, or dt*r/tau), per neuron
    state_bound: float | None = None   # measured largest |u| or |v| in float units (node metadata), if known
    scale: float | None = None         # the integer scale to keep (node metadata), if fine-tuned at one
    power_of_two: bool = False         # node metadata scale_rule = "power_of_two"

    @property
    def input_channels(self) -> int | None:
        return None if self.weight is None or self.kind != "conv" else self.weight.shape[1] * self.conv["groups"]


@dataclass
class LavaPlan:
    layers: list[LavaLayer]
    input_shape: tuple[int, ...]
    direct: bool                       # first layer driven by a host-computed bias
    first_synapse: nir.NIRNode | None = None   # in direct mode, run on the host per sample
    first_gain: float = 1.0
    dt: float = 1.0

    @property
    def max_depth(self) -> int:
        return max(layer.depth for layer in self.layers)

    def input_bias(self, frame: np.ndarray) -> np.ndarray:
        """Direct mode: the first layer's bias for one constant input frame
        (*input_shape), or for a batch of them (B, *input_shape); float64."""
        single = frame.ndim == len(self.input_shape)
        frames = frame[None] if single else frame
        current = _apply_synapse(self.first_synapse, frames.astype(np.float64))
        bias = self.layers[0].bias
        out = current * self.first_gain + (0.0 if bias is None else bias)
        return out[0] if single else out


def _apply_synapse(node, x):
    if isinstance(node, nir.Conv2d):
        return ops.conv2d(x, node.weight, node.bias, node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, nir.Affine):
        return ops.affine(x, node.weight, node.bias)
    return ops.affine(x, node.weight)


MAX_LAVA_GROUPS = 127


def sum_pool_kernel(channels: int, kernel: tuple[int, int]) -> tuple[np.ndarray, int]:
    """A sum pool as a convolution: (weight, groups). Depthwise (groups =
    channels) when Lava can hold that many groups; Lava's Conv keeps
    ``groups`` in an int8 Var, so 128 groups wrap to -128 and the convolution
    silently outputs nothing (measured, lava-nc 0.10). Beyond 127 channels
    the pool is a full convolution whose kernel connects each channel to
    itself only: the same sums, more work."""
    if channels <= MAX_LAVA_GROUPS:
        return np.ones((channels, 1, *kernel)), channels
    weight = np.zeros((channels, channels, *kernel))
    weight[np.arange(channels), np.arange(channels)] = 1.0
    return weight, 1


def _uniform(graph: FlatGraph, name: str, field_name: str, value) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise TargetError(f"node {graph.describe(name)}: Lava's LIF has one {field_name} per layer, "
                          f"but the values differ across neurons")
    return float(a.flat[0])


def _neuron_params(graph: FlatGraph, name: str, dt: float):
    """(du, dv, vth, gain on the synaptic input, bias from the leak)."""
    node = graph.nodes[name]
    if not np.all(np.asarray(node.v_reset) == 0):
        raise TargetError(f"node {graph.describe(name)}: Lava's LIF resets to 0, this node to "
                          f"{np.asarray(node.v_reset).flat[0]}")
    vth = _uniform(graph, name, "threshold", node.v_threshold)
    r = np.asarray(node.r, dtype=np.float64)
    if isinstance(node, nir.IF):
        return 1.0, 0.0, vth, dt * r, 0.0
    tau = _uniform(graph, name, "time constant", node.tau)
    dv = dt / tau
    if not 0.0 < dv <= 1.0:
        raise TargetError(f"node {graph.describe(name)}: dt/tau = {dv} is outside (0, 1]; Lava's decay "
                          f"cannot represent it")
    return 1.0, dv, vth, dt * r / tau, dt * np.asarray(node.v_leak, dtype=np.float64) / tau


def _row_gain(weight: np.ndarray, gain, out_shape) -> np.ndarray:
    """Scale a synapse's weights by a per-output-neuron gain."""
    gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape)
    if weight.ndim == 2:
        return weight * gain.reshape(-1, 1)
    per_channel = gain.reshape(gain.shape[0], -1)
    if not np.all(per_channel == per_channel[:, :1]):
        raise TargetError("a convolution's neurons need one r per channel on the Lava target")
    return weight * per_channel[:, 0].reshape(-1, 1, 1, 1)


def build_plan(graph: nir.NIRGraph, *, direct: bool, dt: float = 1.0, target: str = "lava") -> LavaPlan:
    """Check that the graph is a chain Lava can run and describe its layers."""
    flat = flatten_graph(graph)
    order = topological_order(flat)
    for name in order:
        node = flat.nodes[name]
        if not isinstance(node, (nir.Input, nir.Output, nir.Flatten) + SYNAPSES + NEURONS):
            raise TargetError(f"node {flat.describe(name)} cannot run on the {target} target (it runs chains "
                              f"of Conv2d/SumPool2d/Linear/Affine synapses, each followed by an IF or LIF)")
        if len(flat.successors(name)) > 1 or len(flat.predecessors(name)) > 1:
            raise TargetError(f"node {flat.describe(name)}: the {target} target runs chains only "
                              f"(this node has several inputs or outputs)")
    inputs = flat.inputs
    if len(inputs) != 1:
        raise TargetError(f"the {target} target needs exactly one Input node, the graph has {len(inputs)}")
    input_shape = tuple(int(s) for s in np.asarray(flat.nodes[inputs[0]].input_type["input"]).reshape(-1))
    chain = [n for n in order if not isinstance(flat.nodes[n], (nir.Input, nir.Output))]
    layers: list[LavaLayer] = []
    pending_synapse, flatten_next = None, False
    first_synapse, first_gain = None, 1.0
    shape = input_shape
    for name in chain:
        node = flat.nodes[name]
        if isinstance(node, nir.Flatten):
            flatten_next = True
            shape = (int(np.prod(shape)),)
            continue
        if isinstance(node, SYNAPSES):
            if pending_synapse is not None:
                raise TargetError(f"node {flat.describe(name)} follows synapse {flat.describe(pending_synapse)}: "
                                  f"on the {target} target every synapse must feed an IF or LIF")
            pending_synapse = name
            continue
        # a neuron node
        if pending_synapse is None:
            raise TargetError(f"node {flat.describe(name)} has no synapse before it; the {target} target "
                              f"needs Conv2d/SumPool2d/Linear/Affine -> IF/LIF")
        syn = flat.nodes[pending_synapse]
        du, dv, vth, gain, leak_bias = _neuron_params(flat, name, dt)
        out_shape = tuple(int(s) for s in np.asarray(node.v_threshold).shape)
        bias = np.zeros(out_shape) + leak_bias
        layer = LavaLayer(name=name, kind="dense", shape=out_shape, du=du, dv=dv, vth=vth,
                          synapse=pending_synapse, flatten_input=flatten_next,
                          gain=np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape),
                          state_bound=_positive_metadata(flat, name, STATE_BOUND),
                          scale=_positive_metadata(flat, name, SCALE),
                          power_of_two=(getattr(node, "metadata", None) or {}).get(SCALE_RULE) == "power_of_two")
        if isinstance(syn, nir.SumPool2d):
            layer.kind = "conv"
            layer.weight, groups = sum_pool_kernel(shape[0], ops.as_tuple(syn.kernel_size, 2))
            layer.weight = _row_gain(layer.weight, gain, out_shape)
            layer.conv = dict(stride=ops.as_tuple(syn.stride, 2), padding=ops.as_tuple(syn.padding, 2),
                              dilation=(1, 1), groups=groups)
        elif isinstance(syn, nir.Conv2d):
            pad = ops.as_tuple(syn.padding, 2)
            if isinstance(pad[0], str):
                raise TargetError(f"node {flat.describe(pending_synapse)}: padding {pad[0]!r} is not supported "
                                  f"on the {target} target; give explicit padding")
            if int(syn.groups) > MAX_LAVA_GROUPS:
                raise TargetError(f"node {flat.describe(pending_synapse)}: {int(syn.groups)} groups; Lava's Conv "
                                  f"holds groups in an int8 (at most {MAX_LAVA_GROUPS})")
            layer.kind = "conv"
            layer.weight = _row_gain(np.asarray(syn.weight, dtype=np.float64), gain, out_shape)
            layer.conv = dict(stride=ops.as_tuple(syn.stride, 2), padding=pad,
                              dilation=ops.as_tuple(syn.dilation, 2), groups=int(syn.groups))
            if syn.bias is not None:
                layer.bias = bias + _bias_gain(syn.bias, gain, out_shape, per_channel=True)
                bias = layer.bias
        else:
            layer.weight = _row_gain(np.asarray(syn.weight, dtype=np.float64), gain, out_shape)
            if isinstance(syn, nir.Affine):
                bias = bias + _bias_gain(syn.bias, gain, out_shape, per_channel=False)
        layer.bias = bias
        if not layers and direct:
            # The host computes the first synapse (with its own bias) per sample.
            layer.kind, layer.weight, layer.conv = "bias", None, {}
            layer.bias = np.zeros(out_shape) + leak_bias
            first_synapse, first_gain = syn, np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape)
            layer.depth = 0
        else:
            layer.depth = (layers[-1].depth if layers else 0) + 1
        layers.append(layer)
        pending_synapse, flatten_next = None, False
        shape = out_shape
    if pending_synapse is not None:
        raise TargetError(f"the graph ends in synapse {flat.describe(pending_synapse)} without a neuron")
    if not layers:
        raise TargetError(f"the graph has no neuron layer for the {target} target to run")
    return LavaPlan(layers=layers, input_shape=input_shape, direct=direct, first_synapse=first_synapse,
                    first_gain=first_gain, dt=dt)


def _positive_metadata(graph: FlatGraph, name: str, key: str) -> float | None:
    """A positive number from the neuron node's metadata, or None."""
    value = (getattr(graph.nodes[name], "metadata", None) or {}).get(key)
    if value is None:
        return None
    value = float(np.asarray(value).reshape(-1)[0])
    if not (np.isfinite(value) and value > 0):
        raise TargetError(f"node {graph.describe(name)}: metadata {key} = {value} must be a positive number")
    return value


def _bias_gain(bias, gain, out_shape, per_channel: bool) -> np.ndarray:
    b = np.asarray(bias, dtype=np.float64)
    if per_channel:
        b = b.reshape(-1, *([1] * (len(out_shape) - 1)))
    return np.broadcast_to(b, out_shape) * np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape)
