"""Layer table, parameter count and mult-adds (paper Table 1 and Table 3).

Mult-adds follow the paper's convention: a conv or linear layer costs
(output elements x fan-in) per step it runs; batch norm (folded into the
conv at deployment), pooling and neuron updates are not counted. With direct
encoding conv1 runs once per sample; every other weighted layer runs T times.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from fer2neuro.model.config import ModelConfig
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


def summarize(config: ModelConfig) -> ModelSummary:
    model = build_model(config)
    T, c, s = config.timesteps, config.channels, config.image_size
    h1, h2 = config.hidden
    conv1_runs = 1 if config.encoder == "direct" else T
    rows: list[LayerRow] = []

    def add(name, kind, shape, module=None, runs=T, fan_in=0):
        params = _trainable(module) if module is not None else 0
        out = 1
        for d in shape:
            out *= d
        rows.append(LayerRow(name, kind, tuple(shape), params, runs, out * fan_in * runs))

    add("encoder", config.encoder, (1, s, s), runs=T)
    add("conv1", "Conv2d 3x3 + BN", (c, s, s), model.conv1, conv1_runs, 1 * 9)
    rows[-1].params += _trainable(model.bn1)
    add("if1", "IF", (c, s, s))
    add("pool1", "MaxPool2d 2", (c, s // 2, s // 2))
    add("conv2", "Conv2d 3x3 + BN", (c, s // 2, s // 2), model.conv2, T, c * 9)
    rows[-1].params += _trainable(model.bn2)
    add("if2", "IF", (c, s // 2, s // 2))
    add("pool2", "MaxPool2d 2", (c, s // 4, s // 4))
    add("fc1", "Flatten+Dropout+Linear", (h1,), model.fc1, T, c * (s // 4) ** 2)
    add("lif1", f"LIF tau={config.tau:g}", (h1,))
    add("fc2", "Dropout+Linear", (h2,), model.fc2, T, h1)
    add("lif2", f"LIF tau={config.tau:g}", (h2,))
    add("fc3", "Linear", (config.num_classes,), model.fc3, T, h2)
    add("lif_out", f"LIF tau={config.tau:g} (output)", (config.num_classes,))
    assert sum(r.params for r in rows) == _trainable(model), "summary misses a layer"
    return ModelSummary(config, rows)
