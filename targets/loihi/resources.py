"""What the exported network needs on Loihi 2: neurons, synapses, synaptic
memory, cores and chips, per layer, under stated per-core limits.

Default limits come from Intel's Loihi 2 technology brief ("Taking
Neuromorphic Computing to the Next Level with Loihi 2", Intel Labs, 2021):
128 neuro cores per chip, up to 1 million neurons and 120 million synapses
per chip. Spread evenly over the cores, that is 8,192 neurons and 937,500
synapses per core; both are options, since the real budget depends on how a
core's memory is partitioned between neuron state and synapses. The estimate
assumes one 8-bit weight per synapse for dense layers and stores a
convolution's shared kernel once per core that holds its output channels
(weight sharing), while counting every connection it makes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fer2neuro.targets.loihi import arithmetic as ar
from fer2neuro.targets.loihi.network import LoihiLayer


@dataclass(frozen=True)
class CoreLimits:
    neurons_per_core: int = 8192
    synapses_per_core: int = 937_500
    cores_per_chip: int = 128
    source: str = ("Intel Labs, Loihi 2 technology brief (2021): 128 cores, 1M neurons and 120M synapses "
                   "per chip, divided evenly over the cores")


@dataclass
class LayerResources:
    name: str
    kind: str
    neurons: int
    fan_in: int                 # synapses into one neuron (largest)
    synapses: int               # connections
    weights_stored: int         # distinct weights (a conv's kernel once)
    synaptic_memory_bytes: int
    cores: int
    fits: bool
    worst_case_input: int = 0   # largest |a_in| if every input spiked at once
    can_wrap: bool = False      # that input << 6 would leave the 24-bit current
    note: str = ""


def conv_connections(layer: LoihiLayer, input_shape: tuple[int, ...]) -> int:
    """Exact number of (input neuron, output neuron) pairs a convolution
    connects: nonzero kernel entries times the output positions where that
    tap falls inside the input (padding taps are no synapses)."""
    c = layer.conv
    kh, kw = layer.weight.shape[2:]
    ones = torch.ones(1, 1, *input_shape[1:], dtype=torch.float64)
    one_hot = torch.eye(kh * kw, dtype=torch.float64).reshape(kh * kw, 1, kh, kw)
    valid = torch.nn.functional.conv2d(ones, one_hot, stride=c["stride"], padding=c["padding"],
                                       dilation=c["dilation"]).sum((0, 2, 3)).reshape(kh, kw).numpy()
    nonzero = (layer.weight != 0)
    return int((nonzero * valid).sum())


def estimate(layers: list[LoihiLayer], names: list[str], input_shape: tuple[int, ...] | None,
             limits: CoreLimits = CoreLimits()) -> list[LayerResources]:
    out: list[LayerResources] = []
    previous = input_shape
    for layer, name in zip(layers, names):
        neurons = int(np.prod(layer.shape))
        if layer.kind == "input":
            fan_in = synapses = stored = 0
        elif layer.kind == "dense":
            fan_in = layer.weight.shape[1]
            synapses = int(np.count_nonzero(layer.weight))
            stored = synapses
        else:
            nonzero = (layer.weight != 0).reshape(layer.weight.shape[0], -1).sum(1)
            fan_in = int(nonzero.max())
            synapses = conv_connections(layer, previous)
            stored = int(nonzero.sum())
        cores = max(1, math.ceil(neurons / limits.neurons_per_core), math.ceil(synapses / limits.synapses_per_core))
        fits, note = True, ""
        if fan_in > limits.synapses_per_core:
            fits, note = False, (f"one neuron's fan-in ({fan_in}) exceeds the synapses of a core "
                                 f"({limits.synapses_per_core})")
        memory = stored if layer.kind != "conv" else stored * cores        # the kernel on every core it spans
        worst = 0
        if layer.weight is not None:
            w = layer.weight.reshape(layer.weight.shape[0], -1)
            worst = int(max(np.where(w > 0, w, 0).sum(1).max(), -np.where(w < 0, w, 0).sum(1).min()))
            if layer.kind == "dense":
                worst = int(worst * 2.0 ** layer.weight_exp) if layer.weight_exp < 0 else worst << layer.weight_exp
        can_wrap = (worst << ar.ACT_SHIFT) > ar.MAX_UV
        if can_wrap and not note:
            note = (f"the current can wrap if inputs of total weight above {ar.MAX_UV >> ar.ACT_SHIFT} spike in "
                    f"one step (worst case {worst})")
        out.append(LayerResources(name=name, kind=layer.kind, neurons=neurons, fan_in=fan_in, synapses=synapses,
                                  weights_stored=stored, synaptic_memory_bytes=memory, cores=cores, fits=fits,
                                  worst_case_input=worst, can_wrap=can_wrap, note=note))
        previous = layer.shape
    return out


def summary(resources: list[LayerResources], limits: CoreLimits = CoreLimits()) -> dict:
    cores = sum(r.cores for r in resources)
    return {
        "limits": asdict(limits),
        "layers": [asdict(r) for r in resources],
        "neurons": sum(r.neurons for r in resources),
        "synapses": sum(r.synapses for r in resources),
        "weights_stored": sum(r.weights_stored for r in resources),
        "synaptic_memory_bytes": sum(r.synaptic_memory_bytes for r in resources),
        "cores": cores,
        "chips": math.ceil(cores / limits.cores_per_chip),
        "fits": all(r.fits for r in resources),
        "layers_that_do_not_fit": [r.name for r in resources if not r.fits],
    }
