"""STDP fine-tuning of the classifier head (paper §2.2, SPEC §3).

Every N epochs the convolutional layers are frozen and the three fully
connected layers are updated with pair-based STDP, unsupervised, on a few
training batches run for ``steps`` (T_STDP = 20) steps through LIF neurons
with the paper's STDP parameters (tau 10, threshold 5, reset 0); then
gradient training resumes. snnTorch has no STDP, so this is our own code.

The rule, in trace form, per step t (pre: input spikes of a layer, post: its
output spikes)::

    x_pre  = x_pre * exp(-1/tau_plus) + s_pre            (includes this step's pre spikes)
    dw    += a_plus  * s_post (x) x_pre                  pre at or before post: potentiate
    x_post = x_post * exp(-1/tau_minus)                  (post spikes strictly before this step)
    dw    -= a_minus * x_post (x) s_pre                  post strictly before pre: depress
    x_post = x_post + s_post

so one pre spike at t_pre and one post spike at t_post change the weight by
``a_plus * exp(-(t_post - t_pre)/tau_plus)`` when t_post >= t_pre and by
``-a_minus * exp(-(t_pre - t_post)/tau_minus)`` when t_pre > t_post. The
update sums over all pairs (all-to-all) and is averaged over the batch. Weights are then clipped to
``bound`` x their largest magnitude before the phase, so STDP can re-weigh
synapses but not blow the head up. Defaults are small (a_plus 1e-4, a_minus
1.05e-4: depression slightly stronger, the usual stabilising choice; tau 2
steps): the phase nudges the head, and the accuracy right before and after
it is recorded, so its effect is measured, not assumed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from fer2neuro.errors import ConfigError, TrainingError
from fer2neuro.model.neurons import LIFNeuron
from fer2neuro.training.distributed import SINGLE, Group

def head(model) -> tuple[str, ...]:
    """The fully connected layers, in order (every architecture ends with them)."""
    return tuple(layer.name for layer in model.layers if layer.kind == "linear")


@dataclass(frozen=True)
class STDPOptions:
    every: int = 0                 # epochs between phases; 0 = off
    a_plus: float = 1e-4
    a_minus: float = 1.05e-4
    tau_plus: float = 2.0
    tau_minus: float = 2.0
    steps: int = 20                # T_STDP
    neuron_tau: float = 10.0
    neuron_threshold: float = 5.0
    batches: int = 10
    bound: float = 1.0

    def __post_init__(self) -> None:
        for name in ("a_plus", "a_minus", "tau_plus", "tau_minus", "neuron_tau", "neuron_threshold", "bound"):
            value = getattr(self, name)
            if not math.isfinite(value):
                option = f"--stdp-{name.replace('_', '-')}" if not name.startswith("neuron") else f"STDP {name}"
                raise ConfigError(f"{option} must be a finite number, got {value}")
        if self.every < 0 or self.steps < 1 or self.batches < 1:
            raise ConfigError("--stdp-every must be >= 0, --stdp-steps and --stdp-batches >= 1")
        if min(self.tau_plus, self.tau_minus) <= 0 or min(self.a_plus, self.a_minus) < 0 or self.bound <= 0:
            raise ConfigError("STDP time constants and bound must be > 0, amplitudes >= 0")
        if self.neuron_tau < 1:
            raise ConfigError(f"STDP neuron tau must be >= 1 (dt = 1), got {self.neuron_tau}")

    def to_dict(self) -> dict:
        return asdict(self)


def stdp_update(pre: torch.Tensor, post: torch.Tensor, *, a_plus: float, a_minus: float,
                tau_plus: float, tau_minus: float) -> torch.Tensor:
    """Weight change (N_out, N_in) from spikes pre (T, B, N_in) and post
    (T, B, N_out), averaged over the batch."""
    steps, batch = pre.shape[:2]
    decay_plus, decay_minus = math.exp(-1.0 / tau_plus), math.exp(-1.0 / tau_minus)
    x_pre = torch.zeros_like(pre[0])
    x_post = torch.zeros_like(post[0])
    dw = torch.zeros(post.shape[-1], pre.shape[-1], dtype=pre.dtype, device=pre.device)
    for t in range(steps):
        x_pre = x_pre * decay_plus + pre[t]          # pre spikes at or before t
        dw += a_plus * post[t].T @ x_pre
        x_post = x_post * decay_minus                # post spikes strictly before t
        dw -= a_minus * x_post.T @ pre[t]
        x_post = x_post + post[t]
    return dw / batch


@torch.no_grad()
def stdp_phase(model, batches, options: STDPOptions, group: Group = SINGLE) -> dict:
    """Run one STDP phase on ``options.batches`` batches; returns statistics.
    Under several ranks each computes the weight change on its part of the
    global batch and the changes are averaged over the ranks (all-reduce)
    before they are applied: every rank applies the same update, the
    change one process would compute on the global batch."""
    neuron = LIFNeuron(options.neuron_tau, options.neuron_threshold).to(next(model.parameters()).device)
    fcs = head(model)
    first = next(layer for layer in model.layers if layer.kind == "linear")
    bounds = {fc: options.bound * getattr(model, fc).weight.abs().max().item() for fc in fcs}
    saved_config, was_training = model.config, model.training
    model.config = replace(model.config, timesteps=options.steps)
    model.eval()
    changed = {fc: 0.0 for fc in fcs}
    post_spikes = {fc: 0.0 for fc in fcs}
    done = 0
    try:
        for x, _ in batches:
            if done >= options.batches:
                break
            done += 1
            spikes = model.record(x, until=first.source)[first.source].flatten(2)   # frozen conv part, T_STDP steps
            for fc in fcs:
                layer = getattr(model, fc)
                post = neuron(layer(spikes))                         # STDP neurons: tau 10, threshold 5, reset 0
                dw = group.mean_(stdp_update(spikes, post, a_plus=options.a_plus, a_minus=options.a_minus,
                                             tau_plus=options.tau_plus, tau_minus=options.tau_minus))
                layer.weight += dw
                layer.weight.clamp_(-bounds[fc], bounds[fc])
                changed[fc] += dw.abs().mean().item()
                post_spikes[fc] += post.mean().item()
                spikes = post
    finally:
        model.config = saved_config
        model.train(was_training)
    # The same weights on every rank (all-reduced updates): a collective check all the same.
    bad = [fc for fc in fcs if not bool(torch.isfinite(getattr(model, fc).weight).all())]
    if group.any(bool(bad)):
        raise TrainingError(f"training stopped: the STDP phase left non-finite values in "
                            f"{(bad[0] + '.weight') if bad else 'a head layer on another rank'}; nothing was "
                            "saved of it, last.pt and best.pt keep the last good epoch")
    n = max(done, 1)
    return {fc: {"mean_abs_dw": changed[fc] / n, "post_rate": post_spikes[fc] / n} for fc in fcs}
