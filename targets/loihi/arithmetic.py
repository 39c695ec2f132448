"""Loihi's integer arithmetic, as Lava's bit-accurate models compute it
(lava-nc 0.10: ``PyLifModelBitAcc``, ``PyDenseModelBitAcc``,
``PyConvModelFixed``; lava-dl 0.6 netx's ``optimize_weight_bits``). Pure
functions on int64 arrays of any batch shape; the one place the ``loihi``
target defines its numerics.

Per step, for a layer with current u, voltage v (24-bit), decays du, dv
(12-bit, out of 4096), bias mantissa/exponent and threshold vth::

    a6  = int32(a_in << 6)
    u   = wrap24(int32(sm(u * (4096 - (du + 1)), 12)) + a6)      ds_offset = 1
    v   = clip24(int32(sm(v * (4096 - dv), 12)) + u + (bias_mant << bias_exp))
    s   = v > vth << 6;   v = 0 where s

where ``sm(x, 12)`` is a sign-magnitude right shift (rounds toward zero),
``wrap24`` Lava's single conditional wrap of u into (-2^23, 2^23] and
``clip24`` a clip of v to +-(2^23 - 1). Synapses: a Dense sums its 8-bit
weights (netx's bit optimisation, Lava's clip and truncation applied) and
shifts the sum by the weight exponent (an arithmetic shift: floor); a Conv
sums its integer weights and wraps the result to 24 bits. A Dense result
travels to the neuron as int32.

Each wrap or clip can be *emulated* (what Lava and the chip do, silently) or
*checked*: then any value that would not fit raises an error naming where.
"""
from __future__ import annotations

import numpy as np

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
VTH_SHIFT = 6
MAX_UV = 1 << 23                       # 24-bit state
INT32 = 1 << 31


class Overflow(ArithmeticError):
    """A value left its bit width; ``what`` says which, ``where`` indexes it."""

    def __init__(self, what: str, values: np.ndarray, mask: np.ndarray) -> None:
        index = tuple(int(i) for i in np.argwhere(mask)[0])
        self.what, self.index, self.value = what, index, int(values[index])
        super().__init__(f"{what}: {self.value} at index {index}")


def sign_magnitude_shift(x: np.ndarray, shift: int) -> np.ndarray:
    return np.sign(x) * (np.abs(x) >> shift)


def _outside(x, low, high) -> bool:
    """Cheap bounds test (two reductions) before any masked work."""
    return np.size(x) > 0 and (np.min(x) < low or np.max(x) > high)


def wrap32(x: np.ndarray, what: str, emulate: bool) -> np.ndarray:
    if not _outside(x, -INT32, INT32 - 1):
        return x
    wrapped = (x + INT32) % (2 * INT32) - INT32
    if not emulate:
        raise Overflow(f"{what} exceeds 32 bits", x, wrapped != x)
    return wrapped


def decay(x: np.ndarray, d) -> np.ndarray:
    """x * (4096 - d) >> 12, sign-magnitude (Lava's decay)."""
    d = int(d)
    if d == 0:
        return x
    if d == DECAY_UNITY:
        return np.int64(0)                   # full decay: nothing carried over (broadcasts)
    return sign_magnitude_shift(x * (DECAY_UNITY - d), DECAY_SHIFT)


def effective_bias(mant: np.ndarray, exp) -> np.ndarray:
    mant = np.asarray(mant, dtype=np.int64)
    if np.ndim(exp) == 0:
        return mant << int(exp) if exp >= 0 else mant >> int(-exp)
    exp = np.asarray(exp, dtype=np.int64)
    return np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0))


def lif_step(u, v, a_in, *, du, dv, bias, vth, emulate: bool = False):
    """One step of ``PyLifModelBitAcc``. ``bias`` is the effective bias
    (mantissa << exponent), ``vth`` the unshifted threshold mantissa.
    Returns (spikes bool, u, v). ``u`` and ``v`` are not modified in place."""
    a6 = wrap32(np.asarray(a_in, dtype=np.int64) << ACT_SHIFT, "input current << 6", emulate)
    current = wrap32(decay(u, du + 1) + a6, "current", emulate)
    if _outside(current, -MAX_UV + 1, MAX_UV):
        wrapped = np.where(current > MAX_UV, current - 2 * MAX_UV, current)
        wrapped = np.where(wrapped <= -MAX_UV, current + 2 * MAX_UV, wrapped)
        if not emulate:
            raise Overflow("current u exceeds 24 bits", current, wrapped != current)
        current = wrapped
    u = np.broadcast_to(current, np.shape(v)) if np.ndim(current) < np.ndim(v) else current
    updated = decay(v, dv) + u + bias
    if _outside(updated, -MAX_UV + 1, MAX_UV - 1):
        clipped = np.clip(updated, -MAX_UV + 1, MAX_UV - 1)
        if not emulate:
            raise Overflow("voltage v exceeds 24 bits", updated, clipped != updated)
        updated = clipped
    spikes = updated > (np.int64(vth) << VTH_SHIFT)
    v = updated if updated is not v else updated.copy()
    v[spikes] = 0
    return spikes, u, v


# --- synapses ---------------------------------------------------------------

def netx_weight_bits(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """lava-dl netx's ``optimize_weight_bits`` for a dense layer: (weights
    shifted into the synapse's range, number of weight bits, weight
    exponent). Weights beyond [-256, 254] (mixed sign) are clipped, as netx
    does (with a printed warning)."""
    weight = np.asarray(weight, dtype=np.int64)
    high, low = weight.max(), weight.min()
    if (high > 254 and low < 0) or (low < -256 and high > 0):
        weight = np.clip(weight, -256, 254)
        high, low = weight.max(), weight.min()
    if high < 0:
        scale, signed = -256 / low, 0
    elif low >= 0:
        scale, signed = (255 / high if high > 0 else np.inf), 0
    else:
        scale, signed = min(127 / high, -128 / low), 1
    scale_bits = int(np.floor(np.log2(scale))) + signed if np.isfinite(scale) else 0
    n = 8
    while n > 0 and np.sum(np.abs(weight / 2 ** n - np.round(weight / 2 ** n))) != 0:
        n -= 1
    n -= signed
    bits = 8 - scale_bits - n
    # numpy's left shift, as netx does it: a negative count (weights that
    # would need scaling down, e.g. excitatory weights above 255) gives 0.
    shifted = np.left_shift(weight.astype(np.int32), np.int32(scale_bits)).astype(np.int64)
    return shifted, int(bits), int(-scale_bits)


def lava_dense_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """``PyDenseModelBitAcc``: clip to 8 bits for the sign mode, then drop
    the bits ``num_weight_bits`` does not keep (one more when signs mix)."""
    weight = np.asarray(weight, dtype=np.int64)
    if weight.min() >= 0:
        mode = "excitatory"
    elif weight.max() <= 0:
        mode = "inhibitory"
    else:
        mode = "mixed"
    mixed = int(mode == "mixed")
    w = (-weight if mode == "inhibitory" else weight).astype(np.int32)
    w = np.clip(w, -(2 ** 8) * mixed, 2 ** 8 - 1)
    drop = np.int32(8 - num_weight_bits + mixed)
    w = (w >> drop) << drop           # numpy's shifts, negative counts included, as Lava does them
    return (-w if mode == "inhibitory" else w).astype(np.int64)


def shift_by_exponent(a: np.ndarray, weight_exp: int) -> np.ndarray:
    return a << weight_exp if weight_exp > 0 else a >> -weight_exp


def wrap24(x: np.ndarray) -> np.ndarray:
    """Lava's ``signed_clamp(x, 24)``: modular wrap (the Conv output)."""
    if not _outside(x, -MAX_UV, MAX_UV - 1):
        return x
    return (x + MAX_UV) % (2 * MAX_UV) - MAX_UV
