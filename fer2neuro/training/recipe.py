"""Training recipes: the paper's (SPEC §3, kept exactly) and fer2neuro's own.

A recipe is the set of choices around the network that decide how well it
learns: initialisation, augmentation, optimizer, learning-rate schedule, loss.

- ``paper``: SPEC §3 as written. He-normal initialisation, no augmentation
  beyond the loader's horizontal flip, Adam at a constant learning rate. With
  ``--select-on test`` it is the paper's whole protocol (Table 6). Loss:
  the rate MSE.
- ``fer2neuro``: random shift / rotation / zoom (``augment.py``), AdamW with
  decoupled weight decay, a cosine learning-rate schedule after a linear
  warm-up, and the ``current-ce`` loss (``losses.py``). He-normal
  initialisation: the rate-targeted one of ``init.py`` (``--init rate``)
  measured worse on FER2013 (docs/training.md).

Every part is also a ``train`` option of its own, so each can be switched off
and measured (ablations in ``docs/training.md``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fer2neuro.errors import ConfigError
from fer2neuro.training.augment import Augment
from fer2neuro.training.losses import check_loss
from fer2neuro.training.mixup import check_alpha

SCHEDULES = ("constant", "cosine")


INITS = ("he", "rate", "features")


@dataclass(frozen=True)
class Recipe:
    init: str = "he"                   # INITS: He-normal, init.py's rate targets, feature_init.py
    lr: float = 1e-3
    augment: Augment = Augment()
    weight_decay: float = 0.05         # AdamW's decoupled decay; 0 = plain Adam
    schedule: str = "cosine"
    warmup: float = 0.02               # fraction of training spent warming up (cosine only)
    loss: str = "current-ce"           # losses.LOSSES
    mixup: float = 0.0                 # mixup.py's Beta(alpha, alpha); 0 = off

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}: use one of {', '.join(INITS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        check_loss(self.loss)
        check_alpha(self.mixup)
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warm-up must be a fraction in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    def lr_factor(self, progress: float) -> float:
        """The learning rate, as a fraction of ``--lr``, at ``progress`` in
        [0, 1] of the run (steps done / steps planned, or time spent / time
        budget): linear warm-up, then constant or half a cosine down to 0."""
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return (progress + 1e-3) / (self.warmup + 1e-3)
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (progress - self.warmup) / (1 - self.warmup)))


RECIPES = {
    "fast": Recipe(init="features", lr=5e-3, augment=Augment(0.0, 0.0, 0.0), weight_decay=0.0, schedule="constant",
                   warmup=0.1, loss="current-ce"),
    "paper": Recipe(init="he", augment=Augment(0.0, 0.0, 0.0), weight_decay=0.0, schedule="constant",
                    warmup=0.0, loss="rate-mse"),
    "fer2neuro": Recipe(),
}


# ``--recipe auto``: the training samples a run will see (epochs x training
# images) from which ``fer2neuro`` beats ``fast``, and the time budget (in
# minutes) from which it does. Measured (docs/training.md, "Which recipe
# auto picks"): ``fast`` wins at 3.6 k (two epochs of 1,799 synthetic faces),
# 25 k (the demo) and 26 k samples (one FER2013 epoch), ``fer2neuro`` at 20
# minutes of FER2013 (about 400 k samples) and in the 8-epoch runs of
# ``deep`` (207 k, the table there).
AUTO = "auto"
AUTO_LONG_SAMPLES = 200_000
AUTO_LONG_MINUTES = 20.0


def auto_recipe(epochs: int, train_samples: int, time_budget: float | None) -> tuple[str, str]:
    """``--recipe auto``: (the recipe for this run, why), by the rule above."""
    if time_budget is not None:
        if time_budget >= AUTO_LONG_MINUTES:
            return "fer2neuro", f"a time budget of {time_budget:g} min >= {AUTO_LONG_MINUTES:g}"
        return "fast", f"a time budget of {time_budget:g} min < {AUTO_LONG_MINUTES:g}"
    seen = epochs * train_samples
    if seen >= AUTO_LONG_SAMPLES:
        return "fer2neuro", f"{epochs} epochs x {train_samples:,} training images = {seen:,} >= {AUTO_LONG_SAMPLES:,}"
    return "fast", f"{epochs} epochs x {train_samples:,} training images = {seen:,} < {AUTO_LONG_SAMPLES:,}"


def recipe(name: str, **overrides) -> Recipe:
    """A named recipe with some choices changed (``None`` keeps the recipe's)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    base = asdict(RECIPES[name])
    base["augment"] = RECIPES[name].augment
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Recipe(**base)
