"""Model configuration: the presets of SPEC §1 and the options users change."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real

from fer2neuro.errors import ConfigError
from fer2neuro.model.architecture import (MAX_WIDTH, Block, ConvBlock, DenseBlock, blocks_from_list, check_blocks,
                                          read_arch_file, two_conv_template)
from fer2neuro.shown import shown

ENCODERS = ("direct", "poisson")
MODEL_KINDS = ("snn", "cnn")
# More steps per sample than this is a typo, not a network (the paper runs 4 to 8); a
# checkpoint's timesteps of 10**7 must be refused before anything allocates T frames.
MAX_TIMESTEPS = 10_000
# What an architecture file (``train --arch``) may set besides its blocks, and
# the ranges every config's numbers are checked against (tau >= 1: dt = 1).
ARCH_NUMBERS = {"dropout": (0.0, 1.0), "tau": (1.0, 1e6), "v_threshold": (1e-6, 1e6)}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint.

    ``blocks``: the architecture (``architecture.py``), conv blocks then
    dense blocks; the output layer of ``num_classes`` LIF neurons follows.
    The default is the paper's (SPEC §1).
    """

    preset: str = "paper"
    model: str = "snn"
    blocks: tuple[Block, ...] = two_conv_template(128, (1152, 128))
    num_classes: int = 7
    timesteps: int = 4
    encoder: str = "direct"
    dropout: float = 0.5
    tau: float = 2.0
    v_threshold: float = 1.0
    image_size: int = 48
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        """Every field checked for its type and range, NaN and infinity
        refused: a config comes from the command line, an architecture file
        or a checkpoint's bytes (``checkpoint.load_checkpoint``), and this is
        the one place each of them is checked."""
        for name in ("preset", "model", "encoder"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {shown(getattr(self, name))}")
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"unknown model {self.model!r}: use one of {', '.join(MODEL_KINDS)}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}: use one of {', '.join(ENCODERS)}")
        self._integer("timesteps", 1, MAX_TIMESTEPS)
        self._integer("num_classes", 2, MAX_WIDTH)
        self._integer("image_size", 8, 1024)
        dropout = self._real("dropout", 0.0, 1.0)
        if dropout == 1.0:
            raise ConfigError("dropout must be a finite number from 0 to below 1, got 1.0")
        self._real("tau", *ARCH_NUMBERS["tau"])
        self._real("v_threshold", *ARCH_NUMBERS["v_threshold"])
        object.__setattr__(self, "blocks", blocks_from_list(self.blocks))
        check_blocks(self.blocks, self.image_size)
        names = self.class_names
        if isinstance(names, (str, bytes)) or not isinstance(names, (tuple, list)):
            raise ConfigError(f"class_names must be a list of strings, got {shown(names)}")
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise ConfigError(f"class_names must be strings, got {shown(bad[0])} ({type(bad[0]).__name__})")
        object.__setattr__(self, "class_names", tuple(names))
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"class_names: {len(self.class_names)} class names for {self.num_classes} output neurons")

    def _integer(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
            raise ConfigError(f"{name} must be an integer from {low} to {high}, got {shown(value)}")
        object.__setattr__(self, name, int(value))

    def _real(self, name: str, low: float, high: float) -> float:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
                or not low <= value <= high:
            raise ConfigError(f"{name} must be a finite number from {low:g} to {high:g}, got {shown(value)}")
        object.__setattr__(self, name, float(value))
        return float(value)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = [block.to_dict() for block in self.blocks]
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a model config is a mapping of fields, got a {type(d).__name__}")
        d = dict(d)
        if "blocks" not in d and ({"channels", "hidden"} & set(d)):
            # A checkpoint from before architectures were data: the two-conv template.
            default = cls()
            channels = d.pop("channels", default.blocks[0].channels)
            hidden = d.pop("hidden", [b.width for b in default.blocks if isinstance(b, DenseBlock)])
            if isinstance(channels, bool) or not isinstance(channels, int) or not isinstance(hidden, (list, tuple)):
                raise ConfigError(f"channels must be an integer and hidden a list, got {channels!r}, {hidden!r}")
            d["blocks"] = two_conv_template(channels, tuple(hidden))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(sorted(map(shown, unknown)))}")
        if "blocks" in d:
            d["blocks"] = blocks_from_list(d["blocks"])
        return cls(**d)

    def with_options(self, **overrides) -> "ModelConfig":
        """Copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, ModelConfig] = {
    # SPEC §1 / paper Table 1: 21,531,136 trainable parameters.
    "paper": ModelConfig(preset="paper", blocks=two_conv_template(128, (1152, 128))),
    # Same structure, narrow enough to train on a 2-core CPU in minutes.
    "small": ModelConfig(preset="small", blocks=two_conv_template(16, (256, 128)), dropout=0.0),
    # Same structure again, sized for an hour of FER2013 on a 2-core CPU (docs/training.md).
    "medium": ModelConfig(preset="medium", blocks=two_conv_template(32, (512, 128)), dropout=0.0),
    # Five conv layers in VGG style, chosen by measurement for an hour of FER2013 on a
    # 2-core CPU (docs/training.md, "The deep preset"): the first convolution pools at
    # once (with direct encoding it runs once per sample, its IF layer T times), then
    # two stages of two convolutions, one LIF hidden layer.
    "deep": ModelConfig(preset="deep", blocks=(ConvBlock(32, pool=2), ConvBlock(48), ConvBlock(48, pool=2),
                                               ConvBlock(96), ConvBlock(96, pool=2), DenseBlock(256)),
                        dropout=0.0),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name].with_options(**overrides)




def arch_config(arch: dict, **overrides) -> ModelConfig:
    """The config of an architecture read by ``architecture.read_arch_file``
    (``name``, ``blocks`` and optionally the ``ARCH_NUMBERS``); ``overrides``
    (command-line options, ``None`` ignored) win over the file. Dropout
    defaults to 0, as in the CPU presets."""
    unknown = set(arch) - {"name", "blocks", *ARCH_NUMBERS}
    if unknown:
        raise ConfigError(f"architecture: unknown field {sorted(map(str, unknown))[0]!r} "
                          f"(known: blocks, {', '.join(ARCH_NUMBERS)})")
    options = {"preset": str(arch.get("name") or "custom"), "blocks": blocks_from_list(arch["blocks"]),
               "dropout": 0.0}
    for name, (low, high) in ARCH_NUMBERS.items():
        if name not in arch:
            continue
        value = arch[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"architecture: {name} must be a number from {low:g} to {high:g}, got {value!r}")
        options[name] = float(value)
    return ModelConfig(**options).with_options(**overrides)


def network_config(preset: str, arch: dict | None = None, **overrides) -> ModelConfig:
    """The network a command names: ``--arch``'s (``load_arch``) if given, else ``--preset``'s."""
    return arch_config(arch, **overrides) if arch else preset_config(preset, **overrides)


def load_arch(path) -> dict:
    """An architecture file, read and checked whole (``arch_config`` of it
    builds), as plain data for ``arch_config``."""
    arch = read_arch_file(path)
    try:
        arch_config(arch)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return arch
