"""The two spiking neurons of SPEC §2, built from snnTorch's ``Leaky``.

Discrete time, dt = 1, hard reset to 0, strict ``v > v_threshold``::

    IF :  v' = v + I
    LIF:  v' = v + (I - v) / tau        (SpikingJelly "decay_input", v_leak = 0)
    s = v' > v_threshold;   v = 0 if s else v'

snnTorch's ``Leaky`` computes ``v' = beta * v + x`` with a reset to zero, so
IF is ``beta = 1`` and LIF is ``beta = 1 - 1/tau`` fed with ``x = I / tau``.
``reset_delay=False`` makes the reset happen in the step that spikes, so the
membrane snnTorch returns is the post-reset ``v`` of SPEC §2 (with the default
delayed reset the spikes are the same but the returned membrane is ``v'``).

snnTorch's arctan surrogate (``surrogate.atan(alpha=2)``: ds/dv = alpha / 2 /
(1 + (pi/2 * alpha * x)^2), SpikingJelly's ATan default) returns float32
spikes whatever the membrane's dtype; we cast them back so a float64 model
stays float64 end to end, which the spike-exact verification relies on.
"""
from __future__ import annotations

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

SURROGATE_ALPHA = 2.0
V_THRESHOLD = 1.0
LIF_TAU = 2.0


class SpikingNeuron(nn.Module):
    """One layer of SPEC §2 neurons. Stateless between calls: the time loop
    lives in :meth:`forward`, which takes the input current of every step."""

    kind: str = ""

    def __init__(self, beta: float, input_scale: float, v_threshold: float = V_THRESHOLD) -> None:
        super().__init__()
        self.input_scale = input_scale
        self.v_threshold = v_threshold
        self.leaky = snn.Leaky(
            beta=beta,
            threshold=v_threshold,
            spike_grad=surrogate.atan(alpha=SURROGATE_ALPHA),
            reset_mechanism="zero",
            reset_delay=False,
        )

    def step(self, current: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: returns (spikes, membrane after reset)."""
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
        constant = steps is not None
        n_steps = steps if constant else currents.shape[0]
        shape = currents.shape if constant else currents.shape[1:]
        mem = currents.new_zeros(shape)
        spikes, membranes = [], []
        for t in range(n_steps):
            s, mem = self.step(currents if constant else currents[t], mem)
            spikes.append(s)
            if record_membrane:
                membranes.append(mem)
        if record_membrane:
            return torch.stack(spikes), torch.stack(membranes)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, v_threshold={self.v_threshold}"


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire: v' = v + I."""

    kind = "IF"

    def __init__(self, v_threshold: float = V_THRESHOLD) -> None:
        super().__init__(beta=1.0, input_scale=1.0, v_threshold=v_threshold)


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire, decay-input form: v' = v + (I - v) / tau."""

    kind = "LIF"

    def __init__(self, tau: float = LIF_TAU, v_threshold: float = V_THRESHOLD) -> None:
        if tau < 1.0:
            raise ValueError(f"tau must be >= 1 (dt = 1), got {tau}")
        super().__init__(beta=1.0 - 1.0 / tau, input_scale=1.0 / tau, v_threshold=v_threshold)
        self.tau = tau

    def extra_repr(self) -> str:
        return f"kind=LIF, tau={self.tau}, v_threshold={self.v_threshold}"
