"""``fer2neuro report CKPT``: parameters, size, mult-adds, synaptic
operations measured from real spikes, an energy estimate, and measured
throughput (paper Table 3, SPEC §5).

Synaptic operations (SynOps) count what an event-driven chip does: every
input spike of a synaptic layer triggers one accumulate per connection it
fans out to (border connections that fall outside the output excluded).
With direct encoding conv1 sees the analog image, so it is counted as
mult-adds, once per sample. Max pools are not synaptic and are not counted.

Energy, per sample: SNN = SynOps x E_AC (+ conv1 mult-adds x E_MAC with
direct encoding); the equivalent ANN (the same layers, one pass, no time) =
MACs x E_MAC. Constants: 45 nm CMOS, 32-bit floating point, from M. Horowitz,
"Computing's energy problem (and what we can do about it)", ISSCC 2014:
add 0.9 pJ, multiply 3.7 pJ, so E_AC = 0.9 pJ and E_MAC = 4.6 pJ. The
estimate counts arithmetic only (no memory traffic), the usual convention in
SNN papers; it compares operation counts, not chips.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from fer2neuro.model.layers import INPUT, SYNAPTIC_KINDS, network_layers
from fer2neuro.model.network import ConvSNN

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
ENERGY_SOURCE = "Horowitz, ISSCC 2014 (45 nm, 32-bit float): add 0.9 pJ, multiply 3.7 pJ"

def synaptic_inputs(config) -> dict[str, str]:
    """Synaptic layer -> the spiking layer (or the encoded input) that feeds it."""
    return {layer.name: layer.source for layer in network_layers(config) if layer.kind in SYNAPTIC_KINDS}


def conv_fanout(conv: nn.Conv2d, input_hw: tuple[int, int]) -> torch.Tensor:
    """Connections each input position makes, (H, W), per output channel
    summed: C_out x (output windows covering that position)."""
    ones = torch.ones(1, 1, *input_hw)
    kernel = torch.ones(1, 1, *conv.kernel_size)
    covered = nn.functional.conv_transpose2d(
        nn.functional.conv2d(ones, kernel, stride=conv.stride, padding=conv.padding).clamp(max=1), kernel,
        stride=conv.stride, padding=conv.padding)
    return covered[0, 0] * conv.out_channels


@torch.no_grad()
def synaptic_operations(model: ConvSNN, images: torch.Tensor, generator=None) -> dict:
    """Mean SynOps per sample for each synaptic layer, from real spikes."""
    trace = model.record(images, generator=generator)
    batch = images.shape[0]
    ops = {}
    for name, source in synaptic_inputs(model.config).items():
        if source == INPUT and model.config.encoder == "direct":
            continue                                   # analog pixels: counted as mult-adds, not SynOps
        spikes, synapse = trace[source], getattr(model, name)         # spikes: (T, B, ...)
        if isinstance(synapse, nn.Conv2d):
            fanout = conv_fanout(synapse, spikes.shape[-2:])
            ops[name] = float((spikes.sum((0, 1, 2)) * fanout).sum()) / batch
        else:
            ops[name] = float(spikes.sum()) * synapse.out_features / batch
    return ops


def ann_macs(model: nn.Module, image_size: int = 48) -> dict:
    """Mult-adds of one forward pass of the same layers as an ANN (per
    weighted layer), counted with forward hooks."""
    counts: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, inputs, output, name=name):
                fan_in = mod.weight[0].numel()
                counts[name] = int(output[0].numel() * fan_in)
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            if isinstance(model, ConvSNN):
                x = torch.zeros(1, 1, image_size, image_size)
                saved = model.config
                from dataclasses import replace

                model.config = replace(saved, timesteps=1, encoder="direct")
                try:
                    model(x)
                finally:
                    model.config = saved
            else:
                model(torch.zeros(1, 1, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return counts


def throughput(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16,
               steps: int = 3) -> dict:
    """Measured samples/s: inference (eval, no grad) and training (forward,
    backward, Adam step, on a copy) on the current device."""
    import copy

    from fer2neuro.training.losses import output_loss

    x, y = images[:batch_size], labels[:batch_size]
    model.eval()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        infer = steps * len(x) / (time.perf_counter() - start)
    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(trainee.parameters(), lr=1e-3)

    def step():
        loss = output_loss(trainee(x), y, 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    train = steps * len(x) / (time.perf_counter() - start)
    return {"inference_samples_per_s": infer, "train_samples_per_s": train, "batch_size": len(x)}


@dataclass
class EfficiencyReport:
    data: dict

    def to_dict(self) -> dict:
        return self.data


def efficiency_report(model: nn.Module, config, images: torch.Tensor, labels: torch.Tensor,
                      generator=None, device: str = "cpu") -> dict:
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs = ann_macs(model, config.image_size)
    out = {"model": config.model, "preset": config.preset, "params": params, "size_mb": params * 4 / 1e6,
           "ann_macs": sum(macs.values()), "ann_macs_per_layer": macs,
           "ann_energy_uj": sum(macs.values()) * E_MAC_PJ / 1e6,
           "energy_constants": {"E_AC_pJ": E_AC_PJ, "E_MAC_pJ": E_MAC_PJ, "source": ENERGY_SOURCE},
           "device": device, "samples": len(images)}
    if isinstance(model, ConvSNN):
        from fer2neuro.model.summary import summarize

        summary = summarize(config)
        synops = synaptic_operations(model, images, generator)
        analog = [name for name, source in synaptic_inputs(config).items() if source == INPUT]
        dense_macs = sum(macs[name] for name in analog) if config.encoder == "direct" else 0
        out.update({"timesteps": config.timesteps, "encoder": config.encoder,
                    "mult_adds": summary.mult_adds, "synops_per_layer": synops,
                    "synops": sum(synops.values()), "mult_adds_computed_densely": dense_macs,
                    "snn_energy_uj": (sum(synops.values()) * E_AC_PJ + dense_macs * E_MAC_PJ) / 1e6})
        out["energy_ratio_ann_over_snn"] = out["ann_energy_uj"] / max(out["snn_energy_uj"], 1e-12)
    out["throughput"] = throughput(model, images, labels)
    return out
