"""A Lava plan (lava_plan.py) quantised to Loihi's integers: what
``export --target lava`` writes and what lava-fixed and loihi run.

Per layer (the layer's float weights W, bias b and threshold
theta already include SPEC §2's gains, see lava_plan.py):

- one scale ``s`` maps float to integer units; the neuron compares in the
  units of the weights, so ``vth = round(theta * s)``;
- a dense layer whose scale is held down (by the threshold, a bias or a
  state bound) until its largest weight would keep fewer than 6 magnitude
  bits gets a weight exponent -k: weights ``2^k`` times larger, the sum
  shifted right by k (``dense_exponent``);
- weights: ``w = 2 * round(W * s / 2)``, even integers in [-256, 254]
  (even for a second reason too, see ties below):
  Loihi's mixed-sign 8-bit synapse keeps 7 magnitude bits and a sign (Lava's
  bit-accurate Dense drops the LSB), so odd values would not survive;
  ``s = 254 / max|W|`` spends all of them on the largest weight; the
  rounding of each output neuron's weights is balanced so its errors cancel
  (``even_sum_preserving``), else an IF layer integrates a systematic error;
- biases: 13-bit signed mantissa with exponent 6 (netx's convention: the
  bias enters v at the same scale as a_in << 6), so ``bias = 2 * round(b * s / 2)``
  and ``s`` is lowered if a bias would exceed 4095;
- thresholds must fit 17 bits, and a fitted one stays in the lower half of
  v's range so that a step can carry v past it without overflow:
  ``s <= 65535 / theta``;
- states must fit 24 bits: u and v hold ``64 * s`` times their float value,
  so where the layer's largest |u| or |v| was measured (``state_bound``, from
  the neuron node's metadata: ``fer2neuro finetune --qat loihi`` measures it),
  ``s <= (2^23 - 1) / (64 * STATE_MARGIN * state_bound)``. Without a
  measurement only the weights set the scale, and a wide layer's sums can
  outgrow 24 bits (the loihi target then names the layer);
- no ties: the spike test is ``v > vth`` and integer sums often land exactly
  on an integer threshold, where the float sum, a little above or below,
  would decide. Rounded weights and biases to the nearest integer and
  ``vth = theta * s`` lose every spike whose float sum lies within half a
  unit above the threshold (measured: 0.4 % fewer spikes in if1). So ``s``
  is lowered until ``vth = theta * s`` is an odd integer, and weights and
  biases are rounded to even integers: sums are even, never equal to vth,
  and ``v > vth`` splits the grid exactly at the float threshold;
- a model fine-tuned for Loihi (``fer2neuro finetune --qat loihi``) keeps
  the scale it was fine-tuned at (the neuron node's ``scale`` metadata), so
  its export is exactly the integer network it was trained through; its
  leaky layers use power-of-two scales (``scale_rule`` metadata,
  ``dyadic_scale``), where float64 and integer arithmetic coincide;
- decays out of 4096 (Loihi's 12 bits): IF ``vDecay = 0``, LIF ``vDecay =
  round(4096 * dt / tau)`` (2048 for tau = 2), ``iDecay = 4096`` (u is this
  step's input, du = 1); CubaLIF ``iDecay = round(4096 * dt / tau_syn)``;
  Threshold ``iDecay = vDecay = 4096``. A decay that rounds to 0 is an
  error naming the layer. Rounded decays make a leaky layer approximate
  unless dt/tau is a multiple of 1/4096;
- a recurrent synapse's weights share the layer's scale (the same neurons
  sum them). The file's bias is the bias once every input is on; the
  runners switch its parts on in stages (``integer_bias_stages``): a
  recurrent synapse's bias one step late, and a synapse bias into a
  CubaLIF as a v bias with a shift of u.

The first layer under direct encoding is netx's ``input`` layer: a neuron
population whose bias the runner sets per sample to the quantised first-conv
current, clamped to just above the threshold (``input_clamp``: exact, since
a constant drive above the threshold spikes on every step whatever its
size), so its scale spends the 13 bits on the range where spikes differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan, build_plan

WEIGHT_MAX, BIAS_MAX, VTH_MAX, DECAY_UNITY = 254, 4095, 131071, 4096
MAX_WEIGHT_SHIFT = 8       # Loihi's weight exponent reaches -8
# A fitted threshold stays in the lower half of v's 24 bits: a step's input
# may carry v past it by as much again before v overflows (a threshold at
# 131071 << 6 = 2^23 - 64 could never be crossed without overflowing).
VTH_FITTED = (VTH_MAX + 1) // 2 - 1
STATE_MAX, STATE_SHIFT = (1 << 23) - 1, 6      # 24-bit u and v; a_in, bias and vth enter them << 6
STATE_MARGIN = 2.0         # headroom over the measured state: unseen inputs may drive it further


@dataclass(frozen=True)
class QuantizedLayer:
    name: str
    scale: float
    vth: int
    v_decay: int
    i_decay: int
    weight: np.ndarray | None        # int, NIR layout
    bias: np.ndarray | None          # int, per neuron (C, H, W) / (N,), or None: once every input is on
    recurrent: np.ndarray | None = None        # int (N, N): the layer's spikes back into it
    weight_exp: int = 0              # a dense layer's extra weight exponent (<= 0): see dense_exponent

    def manifest(self, layer: LavaLayer) -> dict:
        return {"name": self.name, "kind": layer.kind, "shape": list(layer.shape), "depth": layer.depth,
                "scale": self.scale, "vth": self.vth, "vDecay": self.v_decay, "iDecay": self.i_decay,
                "weight_min": None if self.weight is None else int(self.weight.min()),
                "weight_max": None if self.weight is None else int(self.weight.max()),
                "bias_max_abs": None if self.bias is None else int(np.abs(self.bias).max())}


def input_current_bound(plan: LavaPlan) -> float:
    """Largest |first-layer current| an input in [0, 1] can cause: per output
    channel, bias plus all positive or all negative weights."""
    node = plan.first_synapse
    weight = np.asarray(node.weight, dtype=np.float64)
    flat = weight.reshape(weight.shape[0], -1)
    bias = getattr(node, "bias", None)
    bias = np.zeros(len(flat)) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    high = bias + np.where(flat > 0, flat, 0).sum(1)
    low = bias + np.where(flat < 0, flat, 0).sum(1)
    reach = np.maximum(np.abs(high), np.abs(low))
    return float(reach.max() * np.abs(plan.first_gain).max() + np.abs(plan.layers[0].bias).max())


def even(x: np.ndarray) -> np.ndarray:
    """Nearest even integers."""
    return (2 * np.round(np.asarray(x) / 2)).astype(np.int32)


def even_sum_preserving(w: np.ndarray) -> np.ndarray:
    """Even integers near ``w`` (scaled weights), rounded so that each output
    neuron's (row's) rounding errors cancel: plain rounding leaves a row
    error whose sign depends on how the row's small weights happen to lean,
    and an IF layer integrates it on every step (measured in if2 of the demo
    model: mean current error -0.3 % of threshold, 0.7 % fewer spikes).
    Each weight still moves less than 2 units from ``w``; the row sum moves
    at most 1 unit."""
    rows = w.reshape(w.shape[0], -1)
    rounded = even(rows).astype(np.int64)
    residual = rows - rounded                                   # in (-1, 1]
    steps = np.round((rows.sum(1) - rounded.sum(1)) / 2).astype(np.int64)   # +-2-unit moves per row
    order = np.argsort(-residual, axis=1)                       # most under-rounded first
    for row in np.nonzero(steps)[0]:
        k = steps[row]
        idx = order[row, :k] if k > 0 else order[row, k:]
        rounded[row, idx] += 2 if k > 0 else -2
    return np.clip(rounded, -256, WEIGHT_MAX).reshape(w.shape).astype(np.int32)


def odd_threshold(limit: float) -> int:
    """The largest odd integer <= limit: the integer threshold."""
    n = int(np.floor(limit))
    return max(1, n if n % 2 else n - 1)


def fitted_scale(layer: LavaLayer, plan: LavaPlan) -> float:
    """The largest scale at which every value fits its bit width, lowered
    until the threshold is an odd integer (or, for a leaky layer asked to,
    to a power of two: see ``dyadic_scale``)."""
    fires = bool(0 < layer.vth < np.inf)           # a readout (vth = inf) has no threshold to fit
    limits = [VTH_FITTED / layer.vth] if fires else []
    if layer.kind == "bias" and fires:      # the drive is clamped to +-(vth + 1): see input_clamp
        limits.append((BIAS_MAX - 1) / layer.vth)
    elif layer.kind == "bias":
        limits.append(BIAS_MAX / max(input_current_bound(plan), 1e-12))
    else:
        reach = np.abs(layer.weight).max()
        if layer.recurrent is not None:
            reach = max(reach, np.abs(layer.recurrent).max())
        limits.append(WEIGHT_MAX / max(reach, 1e-12))
        bias = full_bias(layer)
        if bias is not None and np.abs(bias).max() > 0:
            limits.append(BIAS_MAX / np.abs(bias).max())
    if layer.state_bound:
        limits.append(STATE_MAX / ((1 << STATE_SHIFT) * STATE_MARGIN * layer.state_bound))
    scale = float(min(limits))
    dyadic = dyadic_scale(layer, scale)
    if dyadic is not None:
        return dyadic
    if fires:
        scale = odd_threshold(layer.vth * scale) / layer.vth
    return scale


def dyadic_scale(layer: LavaLayer, limit: float) -> float | None:
    """A leaky layer of a model fine-tuned for Loihi (``power_of_two``) gets
    the largest power-of-two scale under ``limit`` whose threshold is an
    integer. Its float weights are then integers over a power of two, so the
    float model's sums, halvings (dv = 2048) and threshold test are exact in
    float64 and equal the integers step for step, ties on the threshold
    included; an odd threshold, which makes ties impossible in integers,
    cannot do that for a leaky layer, whose decay halves v. None where the
    rule does not apply."""
    if not (layer.power_of_two and layer.dv > 0 and layer.kind != "bias" and 0 < layer.vth < np.inf):
        return None
    exponent = int(np.floor(np.log2(limit)))
    for k in range(exponent, exponent - 24, -1):
        vth = layer.vth * 2.0 ** k
        if vth >= 1 and vth == int(vth):
            return 2.0 ** k
    return None


def kept_scale(layer: LavaLayer) -> float:
    """The scale a fine-tuned model was trained at (node metadata), checked:
    its threshold must be an integer (odd, or the scale a power of two) and
    its weights must fit."""
    scale = layer.scale
    vth = layer.vth * scale
    dyadic = float(np.log2(scale)).is_integer()
    fires = bool(0 < layer.vth < np.inf)
    if fires and (abs(vth - round(vth)) > 1e-6 or (round(vth) % 2 == 0 and not dyadic) or vth > VTH_MAX):
        raise TargetError(f"layer {layer.name}: stored scale {scale:.6g} does not give an odd integer threshold "
                          f"(nor is it a power of two)")
    if layer.weight is not None and np.abs(layer.weight * scale).max() > WEIGHT_MAX + 1:
        raise TargetError(f"layer {layer.name}: stored scale {scale:.6g} puts weights beyond {WEIGHT_MAX}; "
                          f"the weights changed after fine-tuning")
    if layer.kind != "bias" and layer.bias is not None and np.abs(layer.bias * scale).max() > BIAS_MAX + 1:
        raise TargetError(f"layer {layer.name}: stored scale {scale:.6g} puts biases beyond {BIAS_MAX}")
    return scale


def full_bias(layer: LavaLayer) -> np.ndarray | None:
    """The neuron's v bias once every input is on: its own, a recurrent
    synapse's, and a synapse bias into a current-based neuron as the v bias
    ``b/du`` it becomes (``LavaLayer.bias_steps``)."""
    if layer.u_bias is None and layer.recurrent_bias is None:
        return layer.bias
    return layer.bias_steps()[-1][1]


def integer_bias_stages(layer: LavaLayer, scale: float,
                        i_decay: int) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """``LavaLayer.bias_steps`` in integers: (steps run, bias mantissa, u
    shift in u's units (``<< 6``) or None). Where u carries over, the
    constant current ``b`` becomes the v bias ``B = even(b·s·4096/iDecay)``
    with u shifted by ``-B << 6`` when it goes on; Loihi's decay of u rounds
    toward zero, so this is approximate in integers (the float lava target
    is exact), and the same on lava-fixed and loihi."""
    base = np.zeros(layer.shape, dtype=np.int64)
    if layer.bias is not None and np.any(layer.bias != 0):
        base = even(np.broadcast_to(layer.bias, layer.shape) * scale).astype(np.int64)
    stages = []
    for step, current in ((layer.depth, layer.u_bias), (layer.depth + 1, layer.recurrent_bias)):
        if step > layer.depth and current is None:
            continue
        shift = None
        if current is not None:
            current = np.broadcast_to(current, layer.shape) * scale
            if i_decay == DECAY_UNITY:
                base = base + even(current)
            else:
                drive = even(current * DECAY_UNITY / i_decay).astype(np.int64)
                base, shift = base + drive, -(drive << STATE_SHIFT)
        stages.append((step, base, shift))
    return stages


def decay_mantissa(layer: LavaLayer, which: str, value: float) -> int:
    """Loihi's 12-bit decay, ``round(4096 * d)``; a decay that rounds to 0
    (a time constant over 8192 steps) cannot be represented."""
    mantissa = int(round(DECAY_UNITY * value))
    if value > 0 and mantissa == 0:
        raise TargetError(f"layer {layer.name}: {which} = {value:.3g} (dt over the time constant) rounds to 0 "
                          f"in Loihi's 12-bit decay (smallest step 1/4096); use a larger dt")
    return mantissa


def dense_exponent(layer: LavaLayer, scale: float) -> int:
    """A dense layer's weight exponent: where the threshold (17 bits), a
    bias or a state bound holds the scale down so far that the largest
    weight would keep fewer than 6 of its 7 magnitude bits, the weights are
    stored ``2^k`` times larger and the synaptic sum is shifted right by k
    (Loihi's weight exponent -k, k <= 8). 0 otherwise, and always for a
    convolution (Lava's fixed-point Conv ignores the exponent) and for a
    layer fine-tuned at a kept scale (its integers are what it was trained
    through)."""
    if layer.kind != "dense" or layer.scale is not None or layer.weight is None:
        return 0
    reach = np.abs(layer.weight).max()
    if layer.recurrent is not None:
        reach = max(reach, np.abs(layer.recurrent).max())
    reach *= scale
    if reach == 0 or reach >= 64:
        return 0
    return -min(MAX_WEIGHT_SHIFT, int(np.floor(np.log2(WEIGHT_MAX / reach))))


def quantize_layer(layer: LavaLayer, plan: LavaPlan) -> QuantizedLayer:
    scale = fitted_scale(layer, plan) if layer.scale is None else kept_scale(layer)
    exponent = dense_exponent(layer, scale)
    weight = None if layer.weight is None else \
        even_sum_preserving(layer.weight * scale * 2.0 ** -exponent)
    i_decay = decay_mantissa(layer, "du", layer.du)
    bias = None
    if layer.kind != "bias":
        final = integer_bias_stages(layer, scale, i_decay)[-1][1]     # what the netx file holds
        if np.any(final != 0):
            bias = final.astype(np.int32)
            if np.abs(bias).max() > BIAS_MAX:
                raise TargetError(f"layer {layer.name}: bias {int(np.abs(bias).max())} overflows the 13-bit "
                                  f"mantissa at scale {scale:.4g}")
    recurrent = None if layer.recurrent is None else even_sum_preserving(layer.recurrent * scale * 2.0 ** -exponent)
    if layer.vth * scale < 0.5:
        raise TargetError(f"layer {layer.name}: threshold {layer.vth} rounds to 0 at scale {scale:.3g}")
    if weight is not None and np.abs(layer.weight).max() > 0 and np.abs(weight).max() == 0:
        # a convolution has no weight exponent on Lava's fixed point, and a
        # dense layer's reaches -8: the threshold-to-weight ratio must fit
        raise TargetError(f"layer {layer.name}: every weight rounds to 0 at scale {scale:.3g} (the threshold "
                          f"{layer.vth:.4g} is {layer.vth / np.abs(layer.weight).max():.3g} times the largest "
                          f"effective weight, beyond Loihi's 17-bit threshold over 8-bit weights"
                          f"{' and a weight exponent of -8' if layer.kind == 'dense' else ''})")
    vth = int(round(layer.vth * scale)) if layer.spiking else VTH_MAX    # a readout: the largest, never reached
    return QuantizedLayer(name=layer.name, scale=scale, vth=vth,
                          v_decay=decay_mantissa(layer, "dv", layer.dv), i_decay=i_decay,
                          weight=weight, bias=bias, recurrent=recurrent, weight_exp=exponent)


@dataclass(frozen=True)
class QuantisedNetwork:
    """A NIR chain lowered for Loihi: the float plan and its integer layers,
    for one input mode (constant frames or spikes) and one dt."""

    plan: LavaPlan
    layers: tuple[QuantizedLayer, ...]

    @property
    def direct(self) -> bool:
        return self.plan.direct

    def scales(self) -> dict[str, float]:
        return {q.name: q.scale for q in self.layers}

    def input_bias(self, frames: np.ndarray) -> np.ndarray:
        first = self.layers[0]
        return integer_input_bias(self.plan, first.name, first.scale, frames)


def integer_input_bias(plan: LavaPlan, layer: str, scale: float, frames: np.ndarray) -> np.ndarray:
    """Direct encoding: the first layer's integer bias for one input frame,
    (C, H, W), or for a batch of frames, clamped to +-(vth + 1) (see
    ``input_clamp``). Non-finite currents are an error."""
    drive = plan.input_bias(frames) * scale
    if not np.isfinite(drive).all():
        raise TargetError(f"layer {layer}: the input current is not finite")
    limit = input_clamp(plan.layers[0], scale)
    if limit is None:
        bias = even(drive)
        worst = np.abs(bias).max()
        if worst > BIAS_MAX:
            raise TargetError(f"layer {layer}: input current {worst / scale:.4g} overflows the 13-bit bias "
                              f"mantissa at scale {scale:.4g} (|bias| {int(worst)} > {BIAS_MAX})")
        return bias
    return even(np.clip(drive, -limit, limit))


def input_clamp(layer: LavaLayer, scale: float) -> int | None:
    """The bias-driven first layer sees one constant drive d per neuron and
    resets to 0 (the plan requires it). From v = 0, d > vth spikes on every
    step and d <= 0 never spikes, whatever the decay, so only d in (0, vth]
    needs resolving: the drive is clamped to +-(vth + 1) (even, just above
    the odd threshold), which leaves every spike as it was and lets the scale
    spend all 13 bits on that range (about 15x finer on the demo model than
    the worst-case current would allow). None for a layer without a
    positive threshold."""
    return int(round(layer.vth * scale)) + 1 if 0 < layer.vth < np.inf else None


def quantise(graph: nir.NIRGraph, *, direct: bool, dt: float = 1.0, target: str = "lava") -> QuantisedNetwork:
    """Plan ``graph`` for Lava (lava_plan.build_plan) and quantise every layer."""
    plan = build_plan(graph, direct=direct, dt=dt, target=target)
    return QuantisedNetwork(plan=plan, layers=tuple(quantize_layer(layer, plan) for layer in plan.layers))
