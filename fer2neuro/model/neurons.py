"""The two spiking neurons of SPEC §2 as layers, with two engines.

The maths is :mod:`fer2neuro.model.neuron_step`. A layer runs it with either
engine, chosen per model (``build_model(config, engine=...)``):

- ``fused`` (default): one autograd function over the whole time loop
  (:mod:`fer2neuro.model.fused`), a C kernel on the CPU;
- ``snntorch``: snnTorch's ``Leaky`` called once per step, the proven
  reference. ``Leaky(beta, reset_mechanism="zero", reset_delay=False)``: IF is
  ``beta = 1``, LIF is ``beta = 1 - 1/tau`` fed with ``I / tau``; with
  ``reset_delay=False`` the reset happens in the step that spikes, so the
  membrane it returns is the post-reset ``v`` of SPEC §2.

Both give the same spikes, membranes and gradients (tests/test_fused_neuron.py)
and the same state_dict: every layer keeps its ``Leaky`` (whose buffers,
threshold and beta, are in the checkpoint) whichever engine runs it, so a
checkpoint loads into either.

snnTorch's ATan returns float32 spikes whatever the membrane's dtype; the
``snntorch`` engine casts them back so a float64 model stays float64 end to
end, which the spike-exact verification relies on. Under bf16 autocast both
engines keep the membrane in float32 (a bf16 membrane would round 1.0 + 0.004
to 1.0).
"""
from __future__ import annotations

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from fer2neuro.errors import ConfigError
from fer2neuro.model import fused
from fer2neuro.model.neuron_step import (LIF_TAU, SURROGATE_ALPHA, V_THRESHOLD, NeuronParams,  # noqa: F401
                                         run_steps)

ENGINES = ("fused", "snntorch")
DEFAULT_ENGINE = "fused"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


class SpikingNeuron(nn.Module):
    """One layer of SPEC §2 neurons. Stateless between calls: the time loop
    lives in :meth:`forward`, which takes the input current of every step."""

    kind: str = ""

    def __init__(self, params: NeuronParams, engine: str = DEFAULT_ENGINE) -> None:
        super().__init__()
        self.params = params
        self.engine = check_engine(engine)
        self.leaky = snn.Leaky(
            beta=params.beta,
            threshold=params.threshold,
            spike_grad=surrogate.atan(alpha=params.alpha),
            reset_mechanism="zero",
            reset_delay=False,
        )

    @property
    def input_scale(self) -> float:
        return self.params.input_scale

    @property
    def v_threshold(self) -> float:
        return self.params.threshold

    def step(self, current: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step of snnTorch's ``Leaky``: (spikes, membrane after reset)."""
        if current.dtype in fused.LOW_PRECISION:
            current = current.float()
        if self.input_scale != 1.0:
            current = current * self.input_scale
        spikes, mem = self.leaky(current, mem)
        return spikes.to(mem.dtype), mem

    def forward(self, currents: torch.Tensor, steps: int | None = None,
                record_membrane: bool = False):
        """Run over time. ``currents`` is (T, ...) or, with ``steps``, one
        current held constant for ``steps`` steps (direct encoding).

        Returns spikes (T, ...), and the membrane (T, ...) if asked for.
        """
        if self.engine == "fused":
            if record_membrane:
                with torch.no_grad():
                    return run_steps(currents, self.params, steps, record_membrane=True)
            return fused.multistep(currents, self.params, steps)
        return self._snntorch(currents, steps, record_membrane)

    def _snntorch(self, currents, steps, record_membrane):
        constant = steps is not None
        n_steps = steps if constant else currents.shape[0]
        shape = currents.shape if constant else currents.shape[1:]
        mem = currents.new_zeros(shape, dtype=fused.state_dtype(currents.dtype))
        spikes, membranes = [], []
        for t in range(n_steps):
            s, mem = self.step(currents if constant else currents[t], mem)
            spikes.append(s)
            if record_membrane:
                membranes.append(mem)
        if record_membrane:
            return torch.stack(spikes), torch.stack(membranes)
        return torch.stack(spikes)

    def maxpool2x2(self, currents: torch.Tensor, steps: int | None = None) -> torch.Tensor | None:
        """The spikes max-pooled 2x2 in one fused kernel, (T, ..., H/2, W/2),
        or ``None`` where this engine and input cannot fuse the pool."""
        if self.engine == "fused" and fused.can_pool(currents):
            return fused.multistep_maxpool2x2(currents, self.params, steps)
        return None

    def extra_repr(self) -> str:
        return f"kind={self.kind}, v_threshold={self.v_threshold}, engine={self.engine}"


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire: v' = v + I."""

    kind = "IF"

    def __init__(self, v_threshold: float = V_THRESHOLD, engine: str = DEFAULT_ENGINE) -> None:
        super().__init__(NeuronParams.integrate_and_fire(v_threshold), engine)


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire, decay-input form: v' = v + (I - v) / tau."""

    kind = "LIF"

    def __init__(self, tau: float = LIF_TAU, v_threshold: float = V_THRESHOLD,
                 engine: str = DEFAULT_ENGINE) -> None:
        super().__init__(NeuronParams.leaky(tau, v_threshold), engine)
        self.tau = tau

    def extra_repr(self) -> str:
        return f"kind=LIF, tau={self.tau}, v_threshold={self.v_threshold}, engine={self.engine}"
