"""Model configuration: the presets of SPEC §1 and the options users change."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from fer2neuro.errors import ConfigError

ENCODERS = ("direct", "poisson")
MODEL_KINDS = ("snn", "cnn")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint.

    ``channels``: width of both conv layers; ``hidden``: widths of the two
    hidden fully connected layers (paper: 1152 and 128).
    """

    preset: str = "paper"
    model: str = "snn"
    channels: int = 128
    hidden: tuple[int, int] = (1152, 128)
    num_classes: int = 7
    timesteps: int = 4
    encoder: str = "direct"
    dropout: float = 0.5
    tau: float = 2.0
    v_threshold: float = 1.0
    image_size: int = 48
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"unknown model {self.model!r}: use one of {', '.join(MODEL_KINDS)}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}: use one of {', '.join(ENCODERS)}")
        if self.timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {self.timesteps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tau < 1.0:
            raise ConfigError(f"tau must be >= 1 (dt = 1), got {self.tau}")
        if self.channels < 1 or min(self.hidden) < 1 or self.num_classes < 2:
            raise ConfigError("channels, hidden sizes must be >= 1 and num_classes >= 2")
        if self.image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4, got {self.image_size}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"{len(self.class_names)} class names for {self.num_classes} output neurons")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        if "class_names" in d:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)

    def with_options(self, **overrides) -> "ModelConfig":
        """Copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, ModelConfig] = {
    # SPEC §1 / paper Table 1: 21,531,136 trainable parameters.
    "paper": ModelConfig(preset="paper", channels=128, hidden=(1152, 128)),
    # Same structure, narrow enough to train on a 2-core CPU in minutes.
    "small": ModelConfig(preset="small", channels=16, hidden=(256, 128), dropout=0.0),
    # Same structure again, sized for an hour of FER2013 on a 2-core CPU (docs/training.md).
    "medium": ModelConfig(preset="medium", channels=32, hidden=(512, 128), dropout=0.0),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name].with_options(**overrides)
