"""Data-driven initialisation: scale each layer so that its neurons fire.

With He-normal weights the fully connected head of a fresh network is silent:
on the synthetic faces lif1 fires at ~5 %, lif2 and the output layer at 0 %
(small and paper presets alike). Rate-MSE then sees the same all-zero output
for every class, and the first few hundred optimizer steps only wake the head
up (the "slow start"). This module fixes that before the first step, in the
spirit of LSUV (Mishkin & Matas, 2016) and of threshold balancing for SNNs
(Sengupta et al., 2019), but on firing rates: layer by layer in data-flow
order, it multiplies the weights feeding each spiking layer (for the conv
layers: the BatchNorm scale) by the factor that makes the layer fire at a
target rate on one batch of training images, found by bisection on a log
scale. Forward passes only, in train mode (BatchNorm normalises with the
batch's statistics, as it will in training); the running statistics are left
as they were.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from fer2neuro.model.layers import NEURON_KINDS, SYNAPTIC_KINDS, network_layers
from fer2neuro.model.network import TimeSharedDropout



def knobs(config) -> list[tuple[str, str]]:
    """Each neuron layer, in data-flow order, and the parameter that scales
    its input current: the BatchNorm scale after a convolution, else the
    weights of the linear layer that feeds it (from the layer table)."""
    found, synapse = [], None
    for layer in network_layers(config):
        if layer.kind in SYNAPTIC_KINDS:
            synapse = layer
        elif layer.kind in NEURON_KINDS:
            found.append((layer.name, f"{synapse.batchnorm if synapse.kind == 'conv' else synapse.name}.weight"))
    return found


def default_rates(config) -> dict:
    """Target rates by position: 0.25 for the first conv IF layer, 0.2 for
    the other conv ones, 0.15 for the hidden fully connected layers, 0.2 for
    the output (the paper's network: if1 0.25, if2 0.2, lif1 lif2 0.15,
    lif_out 0.2)."""
    rates, convs_seen, linear_seen = {}, 0, False
    layers = network_layers(config)
    for layer in layers:
        if layer.kind == "linear":
            linear_seen = True
        elif layer.kind in NEURON_KINDS:
            if layer is layers[-1]:
                rates[layer.name] = 0.2
            elif linear_seen:
                rates[layer.name] = 0.15
            else:
                rates[layer.name] = 0.25 if convs_seen == 0 else 0.2
                convs_seen += 1
    return rates


@dataclass(frozen=True)
class RateInit:
    """Target firing rate per spiking layer (spikes per neuron per step);
    empty: ``default_rates`` of the model's architecture."""

    rates: dict = field(default_factory=dict)
    iterations: int = 10               # bisection steps: the factor to within 2^(12/2^10) ~ 1 %
    log2_range: float = 6.0            # factors from 1/64 to 64

    def to_dict(self) -> dict:
        return {"method": "rate", "target_rates": dict(self.rates)}


@contextmanager
def measuring(model):
    """Look at ``model`` as training will run it: BatchNorm normalises with
    the batch's statistics (train mode), but dropout is off so the rates are
    not noisy. Afterwards the running statistics and modes are as they were."""
    modes = {module: module.training for module in model.modules()}
    saved = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    for module in model.modules():
        if isinstance(module, TimeSharedDropout):
            module.eval()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, value in model.named_buffers():
                # snnTorch's neurons keep their state in buffers whose shape follows the batch
                value.copy_(saved[name]) if value.shape == saved[name].shape else value.set_(saved[name])
        for module, training in modes.items():     # one by one: a nested use keeps the outer modes
            module.training = training


@torch.no_grad()
def rate_initialise(model, images: torch.Tensor, options: RateInit = RateInit()) -> dict:
    """Scale ``model`` in place so every spiking layer fires at its target
    rate on ``images`` (one batch, on the model's device). Returns, per layer,
    the factor applied and the rate before and after (for metrics.json)."""
    params = dict(model.named_parameters())
    report = {}
    rates = options.rates or default_rates(model.config)
    with measuring(model):
        before = {k: float(v.mean()) for k, v in model.record(images).items() if k in rates}
        for layer, knob in knobs(model.config):
            target = rates.get(layer)
            if target is None:
                continue
            weight = params[knob]
            original = weight.clone()

            def rate_at(log2_factor: float) -> float:
                weight.copy_(original * 2.0 ** log2_factor)
                return float(model.record(images, until=layer)[layer].mean())

            low, high = -options.log2_range, options.log2_range
            if rate_at(high) < target:          # cannot reach it: take the largest factor
                best = high
            elif rate_at(low) > target:
                best = low
            else:
                for _ in range(options.iterations):
                    mid = (low + high) / 2
                    if rate_at(mid) < target:
                        low = mid
                    else:
                        high = mid
                best = (low + high) / 2
            rate = rate_at(best)
            report[layer] = {"factor": 2.0 ** best, "rate_before": before.get(layer, math.nan),
                             "rate_after": rate, "target": target}
    return report
