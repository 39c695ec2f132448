"""Knowledge distillation (Hinton et al., 2015) from a trained teacher,
usually the CNN baseline (``train --model cnn``), into the spiking network.

The student's loss becomes ``(1 - w) L + w t^2 KL(p_teacher || p_student)``,
with ``L`` the run's own loss (``losses.py``), both distributions softmaxes
at temperature ``t``. The student's logits are its output layer's input
current averaged over the T steps (what ``current-ce`` reads, and what drives
the output neurons whose spikes classify); the CNN teacher's are its logits,
a spiking teacher's the same mean current. The teacher sees the same
augmented (and mixed) faces as the student, in eval mode, without gradients.

Only training changes: the student is the same network and deploys as any
other; the teacher is not stored in the checkpoint, only its path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.model.checkpoint import load_checkpoint
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.network import ConvSNN


@dataclass(frozen=True)
class DistillOptions:
    weight: float = 0.5              # w: the distillation term's share of the loss
    temperature: float = 4.0         # t

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and 0 < self.weight <= 1):
            raise ConfigError(f"--distill-weight must be in (0, 1], got {self.weight}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"--distill-temperature must be a finite number > 0, got {self.temperature}")


class Teacher:
    """A frozen trained model whose softened outputs the student learns from."""

    def __init__(self, model: torch.nn.Module, options: DistillOptions):
        self.model = model.eval().requires_grad_(False)
        self.options = options

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, ConvSNN):
            _, currents = self.model(images, with_currents=True)
            return currents.float().mean(0)
        return self.model(images).float()

    def blend(self, loss: torch.Tensor, student_logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The run's ``loss`` blended with the distillation term."""
        t, w = self.options.temperature, self.options.weight
        target = F.softmax(self.logits(images) / t, dim=-1)
        kd = F.kl_div(F.log_softmax(student_logits.float() / t, dim=-1), target, reduction="batchmean") * t * t
        return (1 - w) * loss + w * kd


def load_teacher(path: str, student: ModelConfig, device: torch.device, options: DistillOptions) -> Teacher:
    """The teacher in checkpoint ``path``, checked against the student: the
    same classes in the same order, the same input size."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--teacher: {exc}") from None
    mine, theirs = list(student.class_names), list(ckpt.config.class_names)
    if theirs != mine:
        raise ConfigError(f"--teacher {path}: it classifies {len(theirs)} classes ({', '.join(theirs)}); "
                          f"this run has {len(mine)} ({', '.join(mine)})")
    if ckpt.config.image_size != student.image_size:
        raise ConfigError(f"--teacher {path}: its input is {ckpt.config.image_size} px, this run's "
                          f"{student.image_size} px")
    return Teacher(ckpt.build(device), options)
