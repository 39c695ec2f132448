"""The paper's shallow CNN baseline (Table 4, "CPCPCPFF"): three conv-pool
blocks and two fully connected layers, trained with the same data, loop and
outputs as the SNN (paper: 59.23 % on FER2013).

The paper gives the layer pattern and a parameter count (50,805,191) but not
the widths; no choice of widths in that pattern reproduces the count with
3x3 kernels, so this baseline uses the SNN's own widths: the first conv
block's channels for every conv, the first dense block's width for the first
FC layer. Conv + BatchNorm + ReLU +
MaxPool(2) per block, dropout before each FC layer, logits out; trained with
cross-entropy (label-smoothed like the SNN's target).
"""
from __future__ import annotations

import torch
from torch import nn

from fer2neuro.model.architecture import DenseBlock
from fer2neuro.model.config import ModelConfig


class ShallowCNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # The widths of the SNN's first conv block and first dense block (the output's, if none).
        c = config.blocks[0].channels
        hidden = next((b.width for b in config.blocks if isinstance(b, DenseBlock)), config.num_classes)
        blocks = []
        for i in range(3):
            blocks += [nn.Conv2d(1 if i == 0 else c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        side = config.image_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout), nn.Linear(hidden, config.num_classes))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits (B, classes) for images (B, 1, H, W) in [0, 1]."""
        return self.classifier(self.features(x))
