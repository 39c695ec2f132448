"""Layer table, parameter count and mult-adds (paper Table 1 and Table 3).

Mult-adds follow the paper's convention: a conv or linear layer costs
(output elements x fan-in) per step it runs; batch norm (folded into the
conv at deployment), pooling and neuron updates are not counted. With direct
encoding conv1 runs once per sample; every other weighted layer runs T times.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from fer2neuro.model.config import ModelConfig
from fer2neuro.model.layers import INPUT, SYNAPTIC_KINDS, Layer, network_layers
from fer2neuro.model.network import build_model


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: tuple[int, ...]   # output shape of one time step, batch excluded
    params: int
    runs: int                # how many times the layer runs per sample
    mult_adds: int           # per sample, all runs


@dataclass
class ModelSummary:
    config: ModelConfig
    layers: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def mult_adds(self) -> int:
        return sum(r.mult_adds for r in self.layers)

    def to_dict(self) -> dict:
        return {
            "preset": self.config.preset,
            "blocks": [block.to_dict() for block in self.config.blocks],
            "timesteps": self.config.timesteps,
            "encoder": self.config.encoder,
            "total_params": self.total_params,
            "mult_adds": self.mult_adds,
            "layers": [dict(asdict(r), shape=list(r.shape)) for r in self.layers],
        }

    def table(self) -> str:
        head = f"{'#':>2}  {'layer':<8} {'type':<22} {'output (per step)':<18} {'params':>12} {'runs':>4} {'mult-adds':>14}"
        lines = [head, "-" * len(head)]
        for i, r in enumerate(self.layers, 1):
            shape = "x".join(map(str, r.shape))
            lines.append(f"{i:>2}  {r.name:<8} {r.kind:<22} {shape:<18} {r.params:>12,} {r.runs:>4} {r.mult_adds:>14,}")
        lines.append("-" * len(head))
        lines.append(f"total trainable parameters: {self.total_params:,}")
        lines.append(f"mult-adds per sample (T={self.config.timesteps}, {self.config.encoder}): "
                     f"{self.mult_adds:,} ({self.mult_adds / 1e6:.2f} M)")
        return "\n".join(lines)


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _describe(layer: Layer) -> str:
    if layer.kind == "conv":
        return f"Conv2d {layer.kernel_size}x{layer.kernel_size} + BN"
    if layer.kind == "maxpool":
        return f"MaxPool2d {layer.kernel_size}"
    if layer.kind == "lif":
        return f"LIF tau={layer.tau:g}"
    return {"if": "IF", "flatten": "Flatten", "dropout": "Dropout", "linear": "Linear"}[layer.kind]


def summarize(config: ModelConfig) -> ModelSummary:
    """One row for the encoder and one per layer of the table; a flatten or
    dropout joins the row of the layer it feeds (they have no weights and
    cost nothing)."""
    model = build_model(config)
    T = config.timesteps
    layers = network_layers(config)
    rows = [LayerRow("encoder", config.encoder, layers[0].input_shape, 0, T, 0)]
    prefix = ""
    for layer in layers:
        if layer.kind in ("flatten", "dropout"):
            prefix += _describe(layer) + "+"
            continue
        kind = prefix + _describe(layer) + (" (output)" if layer is layers[-1] else "")
        prefix = ""
        params, runs, fan_in = 0, T, 0
        if layer.kind in SYNAPTIC_KINDS:
            params = _trainable(getattr(model, layer.name))
            if layer.kind == "conv":
                params += _trainable(getattr(model, layer.batchnorm))
            runs = 1 if layer.source == INPUT and config.encoder == "direct" else T   # constant input: once
            fan_in = layer.fan_in
        mult_adds = math.prod(layer.shape) * fan_in * runs
        rows.append(LayerRow(layer.name, kind, layer.shape, params, runs, mult_adds))
    assert sum(r.params for r in rows) == _trainable(model), "summary misses a layer"
    return ModelSummary(config, rows)
