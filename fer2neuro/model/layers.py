"""The network's layer sequence (SPEC §1), declared once.

Every consumer walks this table instead of repeating the layer list: the
model builds its modules from it and runs through it, the NIR exporter turns
each layer into nodes, the summary into a row, the efficiency report reads
which spikes feed each synaptic layer. A new preset or image size is then a
config change only.

One frozen dataclass per kind of layer with explicit fields, in the style of
NIR's ``nir.ir``. Each layer knows its input shape and derives its output
shape from it, both per time step, batch excluded; the table chains them
from the 1 x H x W image. Names are the model's attribute names (and so the
state_dict keys and the NIR node names); they depend on the architecture's
blocks only (the paper's are SPEC §1's), never on widths or other options.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from fer2neuro.model.architecture import ConvBlock, DenseBlock
from fer2neuro.model.config import ModelConfig

INPUT = "input"                          # the encoded image: spikes with poisson, analog with direct
OUTPUT = "lif_out"                       # the output neurons, the same name in every architecture
NEURON_KINDS = ("if", "lif")
SPIKING_KINDS = ("if", "maxpool", "lif")  # a max pool of spikes is spikes (SPEC §2)
SYNAPTIC_KINDS = ("conv", "linear")


@dataclass(frozen=True)
class Layer:
    name: str
    input_shape: tuple[int, ...]
    kind: ClassVar[str]

    @property
    def shape(self) -> tuple[int, ...]:
        """Output shape of one time step; shape-preserving unless overridden."""
        return self.input_shape


@dataclass(frozen=True)
class Conv(Layer):
    """Conv2d without bias, stride 1, then BatchNorm2d ``batchnorm`` (folded
    into the convolution at export). ``source``: the spiking layer, or
    ``INPUT``, whose output it convolves."""

    batchnorm: str
    out_channels: int
    source: str
    kernel_size: int = 3
    padding: int = 1
    kind: ClassVar[str] = "conv"

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size ** 2

    @property
    def shape(self) -> tuple[int, int, int]:
        _, height, width = self.input_shape
        grow = 2 * self.padding - self.kernel_size + 1
        return self.out_channels, height + grow, width + grow


@dataclass(frozen=True)
class IF(Layer):
    """Integrate-and-fire neurons (SPEC §2)."""

    v_threshold: float
    kind: ClassVar[str] = "if"


@dataclass(frozen=True)
class LIF(Layer):
    """Leaky integrate-and-fire neurons, decay-input form (SPEC §2)."""

    tau: float
    v_threshold: float
    kind: ClassVar[str] = "lif"


@dataclass(frozen=True)
class MaxPool(Layer):
    """MaxPool2d with stride = kernel, no padding."""

    kernel_size: int = 2
    kind: ClassVar[str] = "maxpool"

    @property
    def shape(self) -> tuple[int, int, int]:
        channels, height, width = self.input_shape
        return channels, height // self.kernel_size, width // self.kernel_size


@dataclass(frozen=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"

    @property
    def shape(self) -> tuple[int]:
        return (math.prod(self.input_shape),)


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout with one mask per sample for all time steps; none in eval."""

    p: float
    kind: ClassVar[str] = "dropout"


@dataclass(frozen=True)
class Linear(Layer):
    """Linear without bias. ``source``: the spiking layer whose output it weighs."""

    out_features: int
    source: str
    kind: ClassVar[str] = "linear"

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def fan_in(self) -> int:
        return self.in_features

    @property
    def shape(self) -> tuple[int]:
        return (self.out_features,)


def network_layers(config: ModelConfig) -> tuple[Layer, ...]:
    """The layers of the network ``config`` describes, in data-flow order:
    its blocks (``architecture.py``) expanded, then the output layer.

    Names follow the block's position, so the paper's network keeps the
    names of SPEC §1: conv block i gives ``conv{i} bn{i} if{i} [pool{i}]``,
    dense block j ``drop{j} fc{j} lif{j}`` (``if_fc{j}`` for IF neurons),
    and the output layer ``fc{n+1} lif_out``."""
    thr, tau = config.v_threshold, config.tau
    table: list[Layer] = []
    spikes_from = INPUT

    def then(cls: type[Layer], name: str, **fields) -> None:
        # The synaptic layers' sources follow from the order, so they are not declared by hand.
        nonlocal spikes_from
        input_shape = table[-1].shape if table else (1, config.image_size, config.image_size)
        if cls.kind in SYNAPTIC_KINDS:
            fields["source"] = spikes_from
        table.append(cls(name, input_shape, **fields))
        if cls.kind in SPIKING_KINDS:
            spikes_from = name

    convs = [b for b in config.blocks if isinstance(b, ConvBlock)]
    denses = [b for b in config.blocks if isinstance(b, DenseBlock)]
    for i, block in enumerate(convs, 1):
        then(Conv, f"conv{i}", batchnorm=f"bn{i}", out_channels=block.channels, kernel_size=block.kernel,
             padding=block.kernel // 2)
        then(IF, f"if{i}", v_threshold=thr)
        if block.pool:
            then(MaxPool, f"pool{i}", kernel_size=block.pool)
    then(Flatten, "flatten")
    for j, block in enumerate(denses, 1):
        then(Dropout, f"drop{j}", p=config.dropout)
        then(Linear, f"fc{j}", out_features=block.width)
        if block.neuron == "lif":
            then(LIF, f"lif{j}", tau=tau, v_threshold=thr)
        else:
            then(IF, f"if_fc{j}", v_threshold=thr)
    then(Linear, f"fc{len(denses) + 1}", out_features=config.num_classes)
    then(LIF, OUTPUT, tau=tau, v_threshold=thr)
    return tuple(table)


def layer_names(config: ModelConfig, *kinds: str) -> tuple[str, ...]:
    """Names of ``config``'s layers of these kinds, in data-flow order."""
    return tuple(layer.name for layer in network_layers(config) if layer.kind in kinds)
