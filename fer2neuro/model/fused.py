"""The fused multi-step neuron: one autograd function over a layer's whole time
loop, with the spikes, membranes and gradient of ``neuron_step`` (tested
against it, and against ``snn.Leaky``).

Unrolled by autograd, each step of each layer records a dozen small
operations and keeps their inputs; here the forward pass builds no per-step
graph and the backward pass is one reverse loop over time:

    dL/dh[t] = dL/ds[t] * sigma'(h[t]) + dL/dv[t] * (1 - s[t] - h[t] * sigma'(h[t]))
    dL/dI[t] = dL/dh[t] * input_scale,      dL/dv[t-1] = dL/dh[t] * beta

Two implementations, the same maths:

- the C kernel (``kernels/``) for float32 and bfloat16 CPU tensors: it saves
  only the input current and recomputes the membranes in the backward pass,
  and can fuse the 2x2 max pool that follows a convolutional IF layer;
- torch ops for everything else (CUDA, float64, no compiler): a preallocated
  (T, ...) spike tensor filled in place, the membranes before reset saved for
  the backward loop.

Neuron state is float32 (or float64 for float64 inputs) whatever the input
dtype, so under bf16 autocast the membranes never round to 8 bits of
mantissa; spikes come back in the input's dtype (0 and 1 are exact in any).
"""
from __future__ import annotations

import torch

from fer2neuro.model import kernels
from fer2neuro.model.neuron_step import NeuronParams, surrogate_grad

LOW_PRECISION = (torch.bfloat16, torch.float16)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


class _KernelMultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, steps: int, constant: bool, pool: bool, p: NeuronParams):
        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.steps, ctx.constant, ctx.pool, ctx.params = steps, constant, pool, p
        return kernels.forward(x, steps, constant, p, pool)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x = kernels.backward(x, grad_out, ctx.steps, ctx.constant, ctx.params, ctx.pool)
        return grad_x, None, None, None, None


class _TorchMultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, steps: int, constant: bool, p: NeuronParams):
        shape = x.shape if constant else x.shape[1:]
        hs = torch.empty((steps, *shape), dtype=state_dtype(x.dtype), device=x.device)
        spikes = torch.empty((steps, *shape), dtype=x.dtype, device=x.device)
        v = None
        for t in range(steps):
            h = hs[t]
            h.copy_(x if constant else x[t])              # I (in the state dtype) ...
            if p.input_scale != 1.0:
                h.mul_(p.input_scale)                     # ... * input_scale
            if v is not None:
                h.add_(v if p.beta == 1.0 else v * p.beta)  # + beta * v, rounded as snnTorch does
            fired = h > p.threshold
            spikes[t].copy_(fired)
            v = h.masked_fill(fired, 0.0)
        ctx.save_for_backward(hs)
        ctx.constant, ctx.params, ctx.in_dtype = constant, p, x.dtype
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (hs,) = ctx.saved_tensors
        p, dtype = ctx.params, hs.dtype
        grad_x = torch.zeros_like(hs[0]) if ctx.constant else torch.empty_like(hs)
        grad_v = None
        for t in range(hs.shape[0] - 1, -1, -1):
            h = hs[t]
            sg = surrogate_grad(h, p)
            grad_h = grad_spikes[t].to(dtype) * sg
            if grad_v is not None:
                grad_h += grad_v * ((h <= p.threshold).to(dtype) - h * sg)   # dv/dh = 1 - s - h sigma'
            if ctx.constant:
                grad_x += grad_h * p.input_scale
            else:
                torch.mul(grad_h, p.input_scale, out=grad_x[t])
            grad_v = grad_h * p.beta if p.beta != 1.0 else grad_h
        return grad_x.to(ctx.in_dtype), None, None, None


def multistep(currents: torch.Tensor, p: NeuronParams, steps: int | None = None,
              use_kernel: bool = True) -> torch.Tensor:
    """Spikes (T, ...) of one layer: ``currents`` is (T, ...), or one current
    held for ``steps`` steps (direct encoding), whose gradient is then the sum
    over time."""
    constant = steps is not None
    n_steps = steps if constant else currents.shape[0]
    if use_kernel and kernels.usable(currents):
        return _KernelMultiStep.apply(currents, n_steps, constant, False, p)
    return _TorchMultiStep.apply(currents, n_steps, constant, p)


def can_pool(currents: torch.Tensor) -> bool:
    """Whether :func:`multistep_maxpool2x2` runs fused for these currents: the
    C kernel takes them and the image has even sides."""
    return (currents.dim() >= 3 and currents.shape[-1] % 2 == 0
            and currents.shape[-2] % 2 == 0 and kernels.usable(currents))


def multistep_maxpool2x2(currents: torch.Tensor, p: NeuronParams, steps: int | None = None) -> torch.Tensor:
    """``max_pool2d(multistep(currents), 2)`` in one kernel: (T, ..., H/2, W/2).
    The caller checks :func:`can_pool` first."""
    constant = steps is not None
    n_steps = steps if constant else currents.shape[0]
    return _KernelMultiStep.apply(currents, n_steps, constant, True, p)
