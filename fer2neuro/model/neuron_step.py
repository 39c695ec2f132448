"""The neuron of SPEC §2 as pure torch functions: the one definition that the
training engines, the fused engine's tests and the ONNX exporter share.

Discrete time, dt = 1, strict ``>``, hard reset to 0::

    IF :  v' = v + I
    LIF:  v' = v + (I - v) / tau          (decay-input, v_leak = 0)
    s = v' > v_threshold;   v = 0 if s else v'

Both are computed as snnTorch's ``Leaky`` computes them, ``h = beta * v +
I * input_scale`` (IF: beta = 1, input_scale = 1; LIF: beta = 1 - 1/tau,
input_scale = 1/tau), in that order of rounding, so the spikes and membranes
equal ``snn.Leaky``'s bit for bit.

The gradient is snnTorch's too (``reset_mechanism="zero"``,
``reset_delay=False``): the reset ``v = h - s * h`` keeps the spike in the
graph (it is *not* detached), so

    dv/dh = 1 - s - h * sigma'(h - theta)
    ds/dh = sigma'(h - theta),  sigma'(x) = alpha / 2 / (1 + (pi / 2 * alpha * x)^2)

the arctan surrogate with alpha = 2 (SpikingJelly's ATan default). A detached
reset (dv/dh = 1 - s) trains differently; the tests pin this one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SURROGATE_ALPHA = 2.0
V_THRESHOLD = 1.0
LIF_TAU = 2.0


@dataclass(frozen=True)
class NeuronParams:
    """One layer's constants. ``beta`` multiplies the membrane, ``input_scale``
    the input current; ``threshold`` is strict; ``alpha`` shapes the surrogate."""

    beta: float = 1.0
    input_scale: float = 1.0
    threshold: float = V_THRESHOLD
    alpha: float = SURROGATE_ALPHA

    @classmethod
    def integrate_and_fire(cls, threshold: float = V_THRESHOLD) -> "NeuronParams":
        return cls(beta=1.0, input_scale=1.0, threshold=threshold)

    @classmethod
    def leaky(cls, tau: float = LIF_TAU, threshold: float = V_THRESHOLD) -> "NeuronParams":
        if not tau >= 1.0:
            raise ValueError(f"tau must be >= 1 (dt = 1), got {tau}")
        return cls(beta=1.0 - 1.0 / tau, input_scale=1.0 / tau, threshold=threshold)


def charge(v: torch.Tensor | None, current: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """The membrane before the spike decision, ``h = beta * v + I * input_scale``
    (``v = None`` is the resting state 0 of the first step)."""
    x = current * p.input_scale if p.input_scale != 1.0 else current
    if v is None:
        return x
    return (v if p.beta == 1.0 else p.beta * v) + x


def fire(h: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """Spikes as 0/1 in ``h``'s dtype: strict ``h > threshold``."""
    return (h > p.threshold).to(h.dtype)


def surrogate_grad(h: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """sigma'(h - theta): the arctan surrogate's derivative."""
    z = (h - p.threshold) * (math.pi / 2 * p.alpha)
    return (p.alpha / 2) / (1 + z * z)


class ArctanSpike(torch.autograd.Function):
    """Heaviside forward (strict ``>``), arctan surrogate backward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, p: NeuronParams) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.params = p
        return fire(h, p)

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (h,) = ctx.saved_tensors
        return grad_spikes * surrogate_grad(h, ctx.params), None


def neuron_step(v: torch.Tensor | None, current: torch.Tensor,
                p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step: (spikes, membrane after the hard reset). Differentiable
    with snnTorch's gradient when autograd is on; plain tensor ops otherwise
    (which is what the ONNX exporter traces)."""
    h = charge(v, current, p)
    if torch.is_grad_enabled() and h.requires_grad:
        s = ArctanSpike.apply(h, p)
    else:
        s = fire(h, p)
    return s, h - s * h


def run_steps(currents: torch.Tensor, p: NeuronParams, steps: int | None = None,
              record_membrane: bool = False):
    """The pure step unrolled over time: the reference the fused engine is
    tested against. ``currents`` is (T, ...), or one current held for
    ``steps`` steps. Returns spikes (T, ...) [and membranes (T, ...)]."""
    n_steps = steps if steps is not None else currents.shape[0]
    v, spikes, membranes = None, [], []
    for t in range(n_steps):
        s, v = neuron_step(v, currents if steps is not None else currents[t], p)
        spikes.append(s)
        membranes.append(v)
    if record_membrane:
        return torch.stack(spikes), torch.stack(membranes)
    return torch.stack(spikes)
