"""A NIR graph as a stack of Lava layers (synapse + CUBA LIF neuron, and
optionally a recurrent synapse from the layer back into itself).

Lava's LIF is current-based (lava.proc.lif, floating point)::

    u = u * (1 - du) + a_in
    v = v * (1 - dv) + u + bias
    s = v > vth;  v = 0 where s

NIR's spiking neurons at step dt (equations.py) map onto it exactly:

- IF ``v += dt*r*I``: ``du = 1`` (u is this step's input), ``dv = 0``,
  synaptic weights times ``dt*r``;
- LIF ``v += dt/tau*(v_leak - v + r*I)``: ``du = 1``, ``dv = dt/tau``,
  weights times ``dt*r/tau``, and ``dt*v_leak/tau`` joins the bias;
- CubaLIF ``i += dt/tau_syn*(w_in*I - i)``, ``v += dt/tau_mem*(v_leak - v +
  r*i)``: ``du = dt/tau_syn``, ``dv = dt/tau_mem``; Lava's u is NIR's i
  times ``dv*r``, so weights are times ``du*dv*r*w_in`` and ``dv*v_leak``
  joins the bias;
- Threshold ``s = I > theta`` (stateless): ``du = dv = 1``, so ``v = I``;
- I, LI and CubaLI (non-spiking) as IF, LIF and CubaLIF with ``vth = inf``,
  as the last layer only: the target reads their v out;
- a bias of the synapse (Affine, Conv2d) joins the neuron bias with the same
  factor; the reset must be to 0, and ``vth``, ``tau``, ``tau_syn`` and
  ``tau_mem`` are one value per layer (Lava's du, dv and vth are); ``r``,
  ``w_in`` and ``v_leak`` may differ per neuron (per channel for a conv).

Between two neurons any chain of stateless nodes (Conv2d, SumPool2d,
AvgPool2d, Scale, Flatten, Linear, Affine) is composed into one synapse
(synapse_chain.py). A cycle is allowed where it runs a layer's spikes back
into the same layer (the NIR paper's Braille RNN: a recurrent Affine on a
CubaLIF): it becomes a recurrent Dense, delayed one step like every Lava
synapse, which is exactly the back-edge rule (the previous step's spikes,
nothing at t = 0); its bias is switched on one step after the layer's.
The loop may join the forward chain before the neuron: Spyx
writes a recurrent LIF as a ``w_rec`` summing the forward synapse's output
and the LIF's own spikes, ``W(x + s) + b = (Wx + b) + Ws``, which is the
forward chain through ``w_rec`` plus a recurrent Dense ``W`` (``b`` once,
with the forward chain).

An Input type with a batch axis, ``(1, 20)`` as nirtorch writes it, is
read as its sample shape ``(20,)`` (nirgraph.describe.input_shape), as by
every target; the input and every layer must be a vector or (C, H, W).

With a constant (direct-encoded) input, the first synapse runs once on the
host and its output current becomes the first neuron layer's bias (what
Loihi does with an analog input); spike inputs enter through a synapse like
every layer.

Every synapse delays by one step (Lava's Dense and Conv send last step's
result), so layer k's spikes appear ``depth`` steps late: see alignment.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import nir
import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.lowering.synapse_chain import (LINEAR_TYPES, MAX_LAVA_GROUPS, Synapse, apply_synapse,  # noqa: F401
                                              compose_chain, sum_pool_kernel)
from fer2neuro.nirgraph.describe import forward_order, input_shape as sample_shape
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.flat import FlatGraph, flatten_graph
from fer2neuro.nirgraph import ops

# Neuron node metadata the quantiser reads (written by the NIR export of a
# model fine-tuned for a fixed-point target, fer2neuro.qat):
STATE_BOUND = "state_bound"        # largest |u| or |v| measured, in the node's units
SCALE = "scale"                    # the integer scale the model was fine-tuned at
SCALE_RULE = "scale_rule"          # "power_of_two": a leaky layer's scale is a power of two (quantise.py)
SPIKING = (nir.IF, nir.LIF, nir.CubaLIF, nir.Threshold)
READOUTS = (nir.I, nir.LI, nir.CubaLI)      # non-spiking: their output is v, so only as the last layer
NEURONS = SPIKING + READOUTS
PASS_THROUGH = (nir.Input, nir.Output)


@dataclass
class LavaLayer:
    """One Lava layer: an optional synapse feeding a LIF population, and
    optionally a recurrent Dense from the population back into it."""

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
    synapse: str | None = None         # the NIR synapse node (a composed chain: "a+b")
    gain: np.ndarray | float = 1.0     # factor on the synapse's output (dt*r, or dt*r/tau), per neuron
    state_bound: float | None = None   # measured largest |u| or |v| in float units (node metadata), if known
    scale: float | None = None         # the integer scale to keep (node metadata), if fine-tuned at one
    power_of_two: bool = False         # node metadata scale_rule = "power_of_two"
    recurrent: np.ndarray | None = None        # effective recurrent weight (N, N): this layer's spikes back in
    recurrent_bias: np.ndarray | None = None   # effective bias of the recurrent synapse (a_in units), from depth + 1
    u_bias: np.ndarray | None = None   # the synapse's bias where u carries over (du < 1), in a_in units
    spiking: bool = True               # False: a readout (I, LI, CubaLI) whose output is v; vth is inf
    recurrent_synapse: str | None = None       # the NIR nodes of the recurrent synapse

    @property
    def input_channels(self) -> int | None:
        return None if self.weight is None or self.kind != "conv" else self.weight.shape[1] * self.conv["groups"]

    def bias_steps(self) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """(step, v bias, u shift): what to set once ``step`` steps have run.

        A bias is added at every step but the layer's first input arrives
        after ``depth`` steps of synaptic delay, so its bias goes on then; a
        recurrent synapse's bias joins one step later, when the first
        recurrent input arrives (a back edge carries nothing at t = 0).

        A synapse bias is a constant input current. Where u carries over
        (du < 1, CubaLIF) it is not a constant v bias: u would grow from 0
        towards ``b/du``. With ``u' = u - b/du``, u' follows Lava's bias-free
        u equation exactly, so the layer gets the v bias ``b/du`` and its u
        is shifted by ``-b/du`` when the bias goes on (the u shift)."""
        base = np.zeros(self.shape) if self.bias is None else np.broadcast_to(self.bias, self.shape).copy()
        steps = []
        for step, current in ((self.depth, self.u_bias), (self.depth + 1, self.recurrent_bias)):
            if step > self.depth and current is None:
                continue
            shift = None
            if current is not None:
                current = np.broadcast_to(current, self.shape)
                if self.du == 1.0:
                    base = base + current
                else:
                    base, shift = base + current / self.du, -current / self.du
            steps.append((step, base, shift))
        return steps

@dataclass
class LavaPlan:
    layers: list[LavaLayer]
    input_shape: tuple[int, ...]
    direct: bool                       # first layer driven by a host-computed bias
    first_synapse: Synapse | None = None   # in direct mode, run on the host per sample
    first_gain: float = 1.0
    dt: float = 1.0
    first_nodes: tuple = ()            # the NIR nodes the host runs, in order

    @property
    def max_depth(self) -> int:
        return max(layer.depth for layer in self.layers)

    def input_bias(self, frame: np.ndarray) -> np.ndarray:
        """Direct mode: the first layer's bias for one constant input frame
        (*input_shape), or for a batch of them (B, *input_shape); float64."""
        single = frame.ndim == len(self.input_shape)
        frames = (frame[None] if single else frame).astype(np.float64)
        for node in self.first_nodes:              # the NIR nodes in order, as the nir target runs them
            frames = ops.apply_linear(node, frames)
        bias = self.layers[0].bias
        out = frames * self.first_gain + (0.0 if bias is None else bias)
        return out[0] if single else out


def _uniform(graph: FlatGraph, name: str, field_name: str, value) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise TargetError(f"node {graph.describe(name)}: Lava's LIF has one {field_name} per layer, "
                          f"but the values differ across neurons")
    return float(a.flat[0])


def _decay(graph: FlatGraph, name: str, field_name: str, tau, dt: float) -> float:
    d = dt / _uniform(graph, name, field_name, tau)
    if not 0.0 < d <= 1.0:
        raise TargetError(f"node {graph.describe(name)}: dt/{field_name} = {d:g} is outside (0, 1]; Lava's "
                          f"decay cannot represent it")
    return d


def _neuron_params(graph: FlatGraph, name: str, dt: float):
    """(du, dv, vth, gain on the synaptic input, bias from the leak), mapping
    each NIR neuron exactly onto Lava's CUBA LIF (module docstring)."""
    node = graph.nodes[name]
    if isinstance(node, nir.Threshold):
        return 1.0, 1.0, _uniform(graph, name, "threshold", node.threshold), 1.0, 0.0
    if isinstance(node, READOUTS):
        return _readout_params(graph, name, dt)
    if not np.all(np.asarray(node.v_reset) == 0):
        raise TargetError(f"node {graph.describe(name)}: Lava's LIF resets to 0, this node to "
                          f"{np.asarray(node.v_reset).flat[0]}")
    vth = _uniform(graph, name, "threshold", node.v_threshold)
    r = np.asarray(node.r, dtype=np.float64)
    if isinstance(node, nir.IF):
        return 1.0, 0.0, vth, dt * r, 0.0
    v_leak = np.asarray(node.v_leak, dtype=np.float64)
    if isinstance(node, nir.LIF):
        dv = _decay(graph, name, "tau", node.tau, dt)
        return 1.0, dv, vth, dt * r / _uniform(graph, name, "tau", node.tau), dt * v_leak / \
            _uniform(graph, name, "tau", node.tau)
    du = _decay(graph, name, "tau_syn", node.tau_syn, dt)
    dv = _decay(graph, name, "tau_mem", node.tau_mem, dt)
    return du, dv, vth, du * dv * r * np.asarray(node.w_in, dtype=np.float64), dv * v_leak


def _readout_params(graph: FlatGraph, name: str, dt: float):
    """I, LI and CubaLI: the same mapping as IF, LIF and CubaLIF, with no
    threshold (vth = inf: never fires, never resets)."""
    node = graph.nodes[name]
    r = np.asarray(node.r, dtype=np.float64)
    if isinstance(node, nir.I):
        return 1.0, 0.0, np.inf, dt * r, 0.0
    v_leak = np.asarray(node.v_leak, dtype=np.float64)
    if isinstance(node, nir.LI):
        dv = _decay(graph, name, "tau", node.tau, dt)
        return 1.0, dv, np.inf, dv * r, dv * v_leak
    du = _decay(graph, name, "tau_syn", node.tau_syn, dt)
    dv = _decay(graph, name, "tau_mem", node.tau_mem, dt)
    return du, dv, np.inf, du * dv * r * np.asarray(node.w_in, dtype=np.float64), dv * v_leak


def _row_gain(weight: np.ndarray, gain, out_shape) -> np.ndarray:
    """Scale a synapse's weights by a per-output-neuron gain."""
    gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape)
    if weight.ndim == 2:
        return weight * gain.reshape(-1, 1)
    per_channel = gain.reshape(gain.shape[0], -1)
    if not np.all(per_channel == per_channel[:, :1]):
        raise TargetError("a convolution's neurons need one r per channel on the Lava target")
    return weight * per_channel[:, 0].reshape(-1, 1, 1, 1)


@dataclass
class _Path:
    """The stateless nodes between a source (a neuron or the Input) and a
    neuron, and whether a back edge lies on the way."""

    source: str
    nodes: list[str]
    back: bool


def _paths_into(flat: FlatGraph, back: set, edge: int, target: str, after: tuple[str, ...] = (),
                looped: bool = False) -> list[_Path]:
    """The chains of stateless nodes that end in ``edge``, one per source
    they start from (a neuron or the Input); ``after``: the nodes already
    walked, downstream. A stateless node with several inputs sums them
    before it applies its weight, and W(a + b) = Wa + Wb, so it lies on one
    chain per input: Spyx's recurrent ``w_rec``, fed by the forward synapse
    and by its own neuron, is a forward chain through it plus a loop."""
    looped = looped or edge in back
    src = flat.edges[edge][0]
    node = flat.nodes[src]
    if not (isinstance(node, LINEAR_TYPES) or (isinstance(node, PASS_THROUGH) and flat.predecessors(src))):
        return [_Path(src, list(after), looped)]
    if src in after:
        raise TargetError(f"node {flat.describe(src)} is on a cycle of stateless nodes only; the {target} "
                          f"target runs cycles through a neuron layer")
    if len(flat.successors(src)) > 1:
        raise TargetError(f"node {flat.describe(src)} feeds several nodes; the {target} target runs chains "
                          f"of layers (a synapse feeds one neuron)")
    into = [k for k, (_, dst) in enumerate(flat.edges) if dst == src]
    if not into:
        raise TargetError(f"node {flat.describe(src)} has no input edge")
    walked = after if isinstance(node, PASS_THROUGH) else (src, *after)
    return [path for k in into for path in _paths_into(flat, back, k, target, walked, looped)]


def _paths_into_node(flat: FlatGraph, back: set, name: str, target: str) -> list[_Path]:
    return [path for k, (_, dst) in enumerate(flat.edges) if dst == name
            for path in _paths_into(flat, back, k, target)]


def _check_nodes(flat: FlatGraph, target: str) -> None:
    for name, node in flat.nodes.items():
        if not isinstance(node, PASS_THROUGH + LINEAR_TYPES + NEURONS):
            raise TargetError(f"node {flat.describe(name)} cannot run on the {target} target (it runs chains "
                              f"of layers: Conv2d/SumPool2d/AvgPool2d/Scale/Linear/Affine synapses, each "
                              f"feeding an IF, LIF, CubaLIF or Threshold, the last one maybe an I, LI or CubaLI)")


def build_plan(graph: nir.NIRGraph, *, direct: bool, dt: float = 1.0, target: str = "lava") -> LavaPlan:
    """Check that the graph is a chain of layers Lava can run and describe
    them: each neuron fed by one chain of stateless nodes from the previous
    neuron (or the Input), composed into one synapse, and optionally by a
    chain from itself that closes a cycle (a recurrent Dense)."""
    flat = flatten_graph(graph)
    refusal = dialects.named(flat.dialect).lava_refusal(flat)
    if refusal:
        raise TargetError(f"the {target} target cannot run this graph: {refusal}")
    _check_nodes(flat, target)
    order, back = forward_order(flat)
    inputs = flat.inputs
    if len(inputs) != 1:
        raise TargetError(f"the {target} target needs exactly one Input node, the graph has {len(inputs)}")
    input_shape = _input_shape(flat, inputs[0], target)
    neurons = [n for n in order if isinstance(flat.nodes[n], NEURONS)]
    if not neurons:
        raise TargetError(f"the graph has no neuron layer for the {target} target to run")
    layers: list[LavaLayer] = []
    first_synapse, first_gain, first_nodes = None, 1.0, ()
    source, shape = inputs[0], input_shape
    for name in neurons:
        node = flat.nodes[name]
        paths = _paths_into_node(flat, back, name, target)
        forward = [p for p in paths if not p.back]
        loops = [p for p in paths if p.back]
        if len(forward) != 1 or forward[0].source != source:
            raise TargetError(f"node {flat.describe(name)} is not fed by one chain from "
                              f"{flat.describe(source)}: the {target} target runs chains of layers")
        if not forward[0].nodes:
            raise TargetError(f"node {flat.describe(name)} has no synapse before it; the {target} target needs "
                              f"a Conv2d/SumPool2d/Linear/Affine (or a chain of them) before every neuron")
        _check_chain_shapes(flat, source, forward[0].nodes, shape)
        syn = compose_chain(forward[0].nodes, [flat.nodes[n] for n in forward[0].nodes], shape, flat.describe)
        du, dv, vth, gain, leak_bias = _neuron_params(flat, name, dt)
        out_shape = _neuron_shape(flat, name, syn, shape)
        _check_rank(flat, name, out_shape, target)
        gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), out_shape)
        bias = np.zeros(out_shape) + leak_bias
        u_bias = None
        if syn.bias is not None and du == 1.0:          # u is this step's input: the bias adds to v as it is
            bias = bias + np.broadcast_to(syn.bias, out_shape) * gain
        elif syn.bias is not None and np.any(syn.bias):
            u_bias = np.broadcast_to(syn.bias, out_shape) * gain
        metadata = getattr(node, "metadata", None) or {}
        layer = LavaLayer(name=name, kind=syn.kind, shape=out_shape, du=du, dv=dv, vth=vth,
                          weight=_row_gain(syn.weight, gain, out_shape), bias=bias, conv=syn.conv,
                          synapse=syn.name, flatten_input=syn.kind == "dense" and len(shape) > 1, gain=gain,
                          state_bound=_positive_metadata(flat, name, STATE_BOUND),
                          scale=_positive_metadata(flat, name, SCALE),
                          power_of_two=metadata.get(SCALE_RULE) == "power_of_two", u_bias=u_bias)
        if isinstance(node, READOUTS):
            if name != neurons[-1] or loops:
                raise TargetError(f"node {flat.describe(name)} does not spike: on the {target} target a "
                                  f"non-spiking neuron (I, LI, CubaLI) can only be the last layer, read out as v")
            layer.spiking = False
        for loop in loops:
            _add_recurrence(flat, layer, loop, target, shared=set(loop.nodes) & set(forward[0].nodes))
        if not layers and direct:
            if layer.recurrent is not None or du != 1.0:
                raise TargetError(f"node {flat.describe(name)}: a recurrent or current-based (du < 1) first "
                                  f"layer needs spike inputs on the {target} target (a constant input drives its "
                                  f"neurons' v bias)")
            # The host computes the first synapse (with its own bias) per sample.
            layer.kind, layer.weight, layer.conv, layer.flatten_input = "bias", None, {}, False
            layer.bias = np.zeros(out_shape) + leak_bias
            first_synapse, first_gain = syn, gain
            first_nodes = tuple(flat.nodes[n] for n in forward[0].nodes)
            layer.depth = 0
        else:
            layer.depth = (layers[-1].depth if layers else 0) + 1
        layers.append(layer)
        source, shape = name, out_shape
    for out in flat.outputs:
        feeders = _paths_into_node(flat, back, out, target)
        if len(feeders) != 1 or feeders[0].nodes or feeders[0].source != source:
            raise TargetError(f"the graph's output {out!r} is not the last neuron layer {flat.describe(source)}: "
                              f"the {target} target outputs the spikes of its last layer")
    return LavaPlan(layers=layers, input_shape=input_shape, direct=direct, first_synapse=first_synapse,
                    first_gain=first_gain, dt=dt, first_nodes=first_nodes)


def _input_shape(flat: FlatGraph, name: str, target: str) -> tuple[int, ...]:
    """The Input's sample shape (a batch axis in its type left out), which
    must be one a Lava layer takes: a vector (N,) or (C, H, W). Checked
    here, with the plan, because the run's Lava processes cannot take any
    other (a (1, 20) input failed inside Lava's port transpose)."""
    shape = sample_shape(flat, name)
    if shape is None:
        raise TargetError(f"Input node {name!r} declares no shape; the {target} target needs one")
    _check_rank(flat, name, shape, target)
    return shape


def _check_rank(flat: FlatGraph, name: str, shape: tuple[int, ...], target: str) -> None:
    if len(shape) not in (1, 3):
        raise TargetError(f"node {flat.describe(name)} has shape {shape}; the {target} target's layers are a "
                          f"vector (N,) or channels x height x width (C, H, W)")


def _check_chain_shapes(flat: FlatGraph, source: str, chain, shape: tuple[int, ...]) -> None:
    """That each node of the chain takes what the one before it outputs
    (``source``, the previous layer or the Input, outputs ``shape``): a
    one-line TargetError naming both, not an error from deep in numpy."""
    frame, before = np.zeros((1, *shape)), source
    for name in chain:
        node = flat.nodes[name]
        if not isinstance(node, LINEAR_TYPES):
            return                                  # compose_chain says what is wrong with it
        try:
            with np.errstate(all="ignore"):
                frame = ops.apply_linear(node, frame)
        except (ValueError, RuntimeError, IndexError, TypeError):
            weight = getattr(node, "weight", None)
            hint = "" if weight is None else f" (its weight has shape {tuple(np.shape(weight))})"
            raise TargetError(f"node {flat.describe(name)} does not fit its input: {flat.describe(before)} "
                              f"outputs shape {tuple(frame.shape[1:])}{hint}") from None
        before = name


def _neuron_shape(flat: FlatGraph, name: str, syn: Synapse, in_shape) -> tuple[int, ...]:
    """The layer's shape: what its synapse outputs."""
    out = apply_synapse(syn, np.zeros((1, *in_shape))).shape[1:]
    node = flat.nodes[name]
    declared = np.asarray(node.threshold if isinstance(node, nir.Threshold) else
                          node.r if isinstance(node, READOUTS) else node.v_threshold).shape
    if declared and int(np.prod(declared)) > 1 and tuple(declared) != tuple(out):
        raise TargetError(f"node {flat.describe(name)} has shape {tuple(declared)} but its synapse outputs "
                          f"{tuple(out)}")
    return tuple(int(s) for s in out)


def _add_recurrence(flat: FlatGraph, layer: LavaLayer, loop: _Path, target: str, shared: set = frozenset()) -> None:
    """A chain from the layer back into itself: a recurrent Dense, its
    weights times the layer's gain, its bias on one step late. ``shared``:
    nodes the loop has in common with the forward chain (a two-input
    ``w_rec``); their bias is added once, after the sum, so it is the
    forward synapse's (on from t = 0, when the back edge carries nothing)
    and not the loop's."""
    name = layer.name
    if loop.source != name:
        raise TargetError(f"the cycle from {flat.describe(loop.source)} into {flat.describe(name)} spans "
                          f"layers; the {target} target runs recurrence within one layer (a synapse from a "
                          f"neuron population back into itself)")
    if layer.recurrent is not None:
        raise TargetError(f"node {flat.describe(name)} has two recurrent synapses; compose them into one")
    if not loop.nodes:
        raise TargetError(f"node {flat.describe(name)} feeds itself without a synapse; put a Linear or Affine "
                          f"on the recurrent edge")
    nodes = [_without_bias(flat.nodes[n]) if n in shared else flat.nodes[n] for n in loop.nodes]
    syn = compose_chain(loop.nodes, nodes, layer.shape, flat.describe)
    if syn.kind != "dense" or len(layer.shape) != 1:
        raise TargetError(f"node {flat.describe(name)}: its recurrent synapse must be dense over a vector of "
                          f"neurons (netx's recurrent block is a Dense)")
    gain = np.broadcast_to(np.asarray(layer.gain, dtype=np.float64), layer.shape)
    layer.recurrent = syn.weight * gain.reshape(-1, 1)
    layer.recurrent_bias = None if syn.bias is None or not np.any(syn.bias) else \
        np.broadcast_to(syn.bias, layer.shape) * gain
    layer.recurrent_synapse = syn.name


def _without_bias(node: nir.NIRNode) -> nir.NIRNode:
    """The node with a zero bias (a copy), for a chain that must not add it."""
    bias = getattr(node, "bias", None)
    return node if bias is None else dataclasses.replace(node, bias=np.zeros_like(np.asarray(bias, dtype=np.float64)))


def _positive_metadata(graph: FlatGraph, name: str, key: str) -> float | None:
    """A positive number from the neuron node's metadata, or None."""
    value = (getattr(graph.nodes[name], "metadata", None) or {}).get(key)
    if value is None:
        return None
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):      # text or an empty array, from a file
        number = np.nan
    if not (np.isfinite(number) and number > 0):
        raise TargetError(f"node {graph.describe(name)}: metadata {key} = {value!r:.40} must be a positive number")
    return number
