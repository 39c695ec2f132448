"""Architectures as data: a network is a list of blocks.

A block is a small frozen dataclass with explicit fields, in the style of
NIR's ``nir.ir``; the model config stores the list (so every checkpoint
carries its own architecture) and ``layers.network_layers`` expands it into
the layer table that everything downstream walks.

- ``ConvBlock(channels, kernel=3, pool=0)``: a stride-1 "same" convolution
  without bias, batch norm (folded into the convolution at export), IF
  neurons, then, if ``pool`` > 0, a ``pool`` x ``pool`` max pool (exported
  as a sum pool feeding an IF neuron, SPEC §2).
- ``DenseBlock(width, neuron="lif")``: dropout (the config's rate), a
  linear layer without bias, LIF (or IF) neurons.
- The output layer follows the last block: a linear layer to
  ``num_classes`` LIF neurons named ``lif_out``. It is not a block because
  every network has exactly one and its width is the label set's.

Only these deployable building blocks exist: each one lowers to NIR nodes
every target runs (Conv2d, SumPool2d, IF, Affine/Linear, LIF), so any list of
them exports, lowers and verifies with no per-architecture code.

A file for ``train --arch`` is YAML or JSON::

    blocks:
      - {conv: 32}
      - {conv: 32, pool: 2}
      - {conv: 64, kernel: 3, pool: 2}
      - {dense: 256}
      - {dense: 128, neuron: if}
    dropout: 0.1        # optional: any other model option (timesteps, tau, ...)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Union

from fer2neuro.errors import ConfigError

DENSE_NEURONS = ("lif", "if")
MAX_WIDTH = 1 << 16          # more neurons than this in one layer is a typo, not a network


def _positive_int(where: str, value, limit: int = MAX_WIDTH) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ConfigError(f"{where} must be an integer from 1 to {limit}, got {value!r}")
    return value


@dataclass(frozen=True)
class ConvBlock:
    channels: int
    kernel: int = 3
    pool: int = 0            # max-pool kernel (= stride) after the neurons; 0: none
    type: ClassVar[str] = "conv"

    def check(self, where: str) -> None:
        _positive_int(f"{where}: conv", self.channels)
        _positive_int(f"{where}: kernel", self.kernel, 15)
        if self.kernel % 2 == 0:
            raise ConfigError(f"{where}: kernel must be odd (a 'same' convolution), got {self.kernel}")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or not 0 <= self.pool <= 8:
            raise ConfigError(f"{where}: pool must be an integer from 0 (none) to 8, got {self.pool!r}")

    def to_dict(self) -> dict:
        d = {"conv": self.channels, "kernel": self.kernel}
        return d | ({"pool": self.pool} if self.pool else {})


@dataclass(frozen=True)
class DenseBlock:
    width: int
    neuron: str = "lif"
    type: ClassVar[str] = "dense"

    def check(self, where: str) -> None:
        _positive_int(f"{where}: dense", self.width)
        if self.neuron not in DENSE_NEURONS:
            raise ConfigError(f"{where}: neuron must be one of {', '.join(DENSE_NEURONS)}, got {self.neuron!r}")

    def to_dict(self) -> dict:
        return {"dense": self.width, "neuron": self.neuron}


Block = Union[ConvBlock, DenseBlock]
BLOCK_FIELDS = {ConvBlock: {"conv": "channels", "kernel": "kernel", "pool": "pool"},
                DenseBlock: {"dense": "width", "neuron": "neuron"}}


def block_from_dict(d, where: str) -> Block:
    """``{"conv": 32, "pool": 2}`` or ``{"dense": 128}`` -> the block."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a block is a mapping like {{conv: 32, pool: 2}} or {{dense: 128}}, got {d!r}")
    kinds = [cls for cls, keys in BLOCK_FIELDS.items() if next(iter(keys)) in d]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: a block has exactly one of 'conv' or 'dense', got keys {sorted(map(str, d))}")
    cls = kinds[0]
    unknown = set(d) - set(BLOCK_FIELDS[cls])
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(map(str, unknown))[0]!r} in a {cls.type} block "
                          f"(known: {', '.join(BLOCK_FIELDS[cls])})")
    block = cls(**{BLOCK_FIELDS[cls][k]: v for k, v in d.items()})
    block.check(where)
    return block


def blocks_from_list(items, where: str = "blocks") -> tuple[Block, ...]:
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise ConfigError(f"{where} must be a list of blocks, got {items!r}")
    return tuple(block if isinstance(block, (ConvBlock, DenseBlock)) else block_from_dict(block, f"{where}[{i}]")
                 for i, block in enumerate(items))


def check_blocks(blocks: tuple[Block, ...], image_size: int) -> None:
    """The list builds a network: conv blocks first (at least one), dense
    after, every pool dividing the side it pools, something left to flatten."""
    if not blocks or not isinstance(blocks[0], ConvBlock):
        raise ConfigError("blocks: the network starts with a conv block")
    side, dense_seen = image_size, False
    for i, block in enumerate(blocks):
        if not isinstance(block, (ConvBlock, DenseBlock)):
            raise ConfigError(f"blocks[{i}]: not a block: {block!r}")
        block.check(f"blocks[{i}]")
        if isinstance(block, DenseBlock):
            dense_seen = True
            continue
        if dense_seen:
            raise ConfigError(f"blocks[{i}]: a conv block after a dense block (convolutions come first)")
        if block.pool:
            if side % block.pool:
                raise ConfigError(f"blocks[{i}]: pool {block.pool} does not divide the {side}x{side} feature map "
                                  f"there (image size {image_size})")
            side //= block.pool


def conv_output_side(blocks: tuple[Block, ...], image_size: int) -> int:
    return image_size // math.prod(b.pool for b in blocks if isinstance(b, ConvBlock) and b.pool)


def two_conv_template(channels: int, hidden: tuple[int, ...]) -> tuple[Block, ...]:
    """The paper's network (SPEC §1): conv-BN-IF-pool x2 at one width, then
    LIF fully connected layers. What checkpoints written before architectures
    were data describe with ``channels`` and ``hidden``."""
    return (ConvBlock(channels, pool=2), ConvBlock(channels, pool=2), *(DenseBlock(w) for w in hidden))


def describe(blocks: tuple[Block, ...]) -> str:
    """One line, e.g. ``c32 c32p2 c64p2 d256 d128if``."""
    words = []
    for b in blocks:
        if isinstance(b, ConvBlock):
            words.append(f"c{b.channels}" + (f"k{b.kernel}" if b.kernel != 3 else "") + (f"p{b.pool}" if b.pool else ""))
        else:
            words.append(f"d{b.width}" + ("" if b.neuron == "lif" else b.neuron))
    return " ".join(words)


def read_arch_file(path: str | Path) -> dict:
    """A YAML or JSON architecture file -> ``{"name": file stem, "blocks":
    [block dicts], other model options}``, plain data (it goes into
    metrics.json and is compared on ``--resume``). Any problem with the
    file or a block is a one-line ``ConfigError`` naming the file and the
    field; ``config.load_arch`` checks the rest."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the architecture file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, parse_constant=lambda c: _bad_constant(c))
        else:
            import yaml

            data = yaml.safe_load(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except Exception as exc:        # yaml.YAMLError, json.JSONDecodeError: the parser's own words
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}"
                          f" ({' '.join(line.strip() for line in first[:3])})") from None
    if isinstance(data, list):
        data = {"blocks": data}
    if not isinstance(data, dict) or "blocks" not in data:
        raise ConfigError(f"{path}: an architecture file is a mapping with a 'blocks' list")
    try:
        data = {"name": path.stem, **data}
        data["blocks"] = [block.to_dict() for block in blocks_from_list(data["blocks"])]
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data


def _bad_constant(name: str):
    raise ConfigError(f"non-finite number {name} in the file")
