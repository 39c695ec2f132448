"""The backends ``fer2neuro verify`` compares: the snnTorch model in float64
(the reference) and the simulation targets running the exported graph.

Each backend turns one batch of samples into the spike trains of every
spiking layer, uint8 (B, T, *layer_shape), keyed by the model's layer names
and aligned in time with the reference.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import nir
import numpy as np
import torch

from fer2neuro.errors import ConfigError, VerificationError
from fer2neuro.model.network import ConvSNN
from fer2neuro.targets import get_target, target_names
from fer2neuro.targets.base import Arithmetic

REFERENCE = "snntorch"


class Backend(ABC):
    name: str
    arithmetic: Arithmetic

    @abstractmethod
    def run(self, images: torch.Tensor, encoded: torch.Tensor) -> dict[str, np.ndarray]:
        """images (B, 1, H, W) in [0, 1]; encoded: the input over time
        (T, B, 1, H, W), the same spikes or constant images for every backend."""


def to_batch_major(spikes: torch.Tensor) -> np.ndarray:
    """(T, B, ...) float spikes -> (B, T, ...) uint8."""
    return spikes.transpose(0, 1).to(torch.uint8).cpu().numpy()


class SnnTorchReference(Backend):
    """The trained model itself, in float64, computing as it does in training
    (with direct encoding, conv1 + BN once per sample)."""

    name = REFERENCE
    arithmetic = Arithmetic.FLOAT64

    def __init__(self, model: ConvSNN, encoder: str) -> None:
        self.model = model.double().eval()
        self.encoder = encoder

    def run(self, images, encoded):
        x = images if self.encoder == "direct" else encoded
        trace = self.model.record(x.to(torch.float64))
        return {name: to_batch_major(trace[name]) for name in self.model.spiking_layers}


class QuantisedReference(Backend):
    """A checkpoint fine-tuned for a fixed-point target (fer2neuro.qat): the
    integer network it was trained through, run as in training. Every
    fixed-point backend must equal it bit for bit."""

    name = "qat"
    arithmetic = Arithmetic.FIXED

    def __init__(self, model: ConvSNN) -> None:
        from fer2neuro.qat.loihi import LoihiQAT

        self.qat = LoihiQAT(model, emulate_overflow=False)
        self.layers = model.spiking_layers
        self.integer = None

    def run(self, images, encoded):
        spikes, self.integer, _ = self.qat.exact_spikes(images.to(torch.float64), encoded, self.integer)
        return {name: spikes[name] for name in self.layers}


class TargetBackend(Backend):
    """A simulation target running the exported NIR graph, or the first of
    ``artifacts`` (exported files or folders) that it opens as its own.
    ``layers``: the spiking layers to record (the model's ``spiking_layers``;
    None: every one the program records)."""

    def __init__(self, name: str, graph: nir.NIRGraph, artifacts=(), layers=None) -> None:
        target = get_target(name)
        self.source = next((str(a) for a in artifacts if a and target.accepts(a)), None)
        self.program = target.open(graph if self.source is None else self.source)
        self.name, self.arithmetic = name, self.program.arithmetic
        self.layers = list(self.program.layers if layers is None else layers)
        missing = [layer for layer in self.layers if layer not in self.program.layers]
        if missing:
            where = self.source or "the graph"
            raise VerificationError(f"{where} has no layer {', '.join(missing)}: verify needs what fer2neuro "
                                    f"exported from this checkpoint")
        self.dt = self.program.info.dt or 1.0

    def check_encoding(self, encoder: str, timesteps: int) -> None:
        """An artifact exported for other inputs than this run's is refused up front."""
        info = self.program.info
        if self.source is None or not info.encoder:
            return
        if info.encoder != encoder or (self.program.fixed_timesteps and info.timesteps != timesteps):
            raise VerificationError(f"{self.source} was exported for {info.encoder} encoding and "
                                    f"T={info.timesteps}, but this run uses {encoder} and T={timesteps}")

    def run(self, images, encoded):
        inputs = encoded.transpose(0, 1).to(torch.float64).cpu().numpy()
        recording = self.program.run(inputs, dt=self.dt, record=self.layers)
        return {layer: recording.outputs[layer] for layer in self.layers}


def backend_names() -> list[str]:
    return [REFERENCE, *target_names()]


def parse_backends(spec: str, reference: str = REFERENCE) -> list[str]:
    """'snntorch,nir' or 'all' -> the backends to compare with the reference
    (the reference itself is always run and never listed). A checkpoint's
    reference is the snnTorch model; a bare NIR graph's (``reference="nir"``)
    is the nir target, and there is no model to run."""
    known = backend_names() if reference == REFERENCE else target_names()
    names = known if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if reference != REFERENCE and REFERENCE in names:
        raise ConfigError(f"{REFERENCE} is the trained model: a NIR graph has none to run (verify the "
                          f"checkpoint to compare with it); the graph's reference is {reference}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown backend {', '.join(unknown)}: use any of {', '.join(known)} or 'all'")
    chosen = list(dict.fromkeys(n for n in names if n != reference))
    example = f"--backends {REFERENCE},nir" if reference == REFERENCE else f"--targets {reference},lava"
    if not chosen:
        raise ConfigError(f"nothing to compare: name at least one backend besides the reference "
                          f"{reference!r} (e.g. {example})")
    return chosen
