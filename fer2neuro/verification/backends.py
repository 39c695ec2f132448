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
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.model.network import SPIKING_LAYERS, ConvSNN
from fer2neuro.targets import get_target, target_names

REFERENCE = "snntorch"


class Backend(ABC):
    name: str
    precision: str

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
    precision = "float64"

    def __init__(self, model: ConvSNN, encoder: str) -> None:
        self.model = model.double().eval()
        self.encoder = encoder

    def run(self, images, encoded):
        x = images if self.encoder == "direct" else encoded
        trace = self.model.record(x.to(torch.float64))
        return {name: to_batch_major(trace[name]) for name in SPIKING_LAYERS}


class GraphBackend(Backend):
    """A simulation target running the exported NIR graph, or (``source``)
    an exported artifact of that graph, e.g. a Lava folder."""

    def __init__(self, name: str, graph: nir.NIRGraph, layers=SPIKING_LAYERS, source=None) -> None:
        self.target = get_target(name)
        self.name, self.precision = name, self.target.precision
        self.graph, self.layers = graph, list(layers)
        self.source = graph if source is None else source
        missing = [layer for layer in self.layers if layer not in graph.nodes]
        if missing:
            raise VerificationError(f"the graph has no node {', '.join(missing)}: verify needs a graph "
                                    f"exported by fer2neuro from this checkpoint")
        self.dt = GraphInfo.of(graph).dt or 1.0

    def run(self, images, encoded):
        inputs = encoded.transpose(0, 1).to(torch.float64).cpu().numpy()
        recording = self.target.run(self.source, inputs, dt=self.dt, record=self.layers)
        return {layer: recording.outputs[layer] for layer in self.layers}


class OnnxBackend(Backend):
    """The model exported to ONNX (in memory, or the file given with
    ``--onnx``), run by onnxruntime."""

    name = "onnx"

    def __init__(self, model: ConvSNN, encoder: str, timesteps: int, path: str | None = None) -> None:
        from fer2neuro.exporters.onnx_export import model_to_onnx, onnx_metadata, read_onnx

        self.target = get_target("onnx")
        self.proto = read_onnx(path) if path else model_to_onnx(model, encoder=encoder, timesteps=timesteps)
        meta = onnx_metadata(self.proto)
        if (meta["encoder"], int(meta["timesteps"])) != (encoder, timesteps):
            raise VerificationError(f"{path} was exported for {meta['encoder']} encoding and T={meta['timesteps']}, "
                                    f"but this run uses {encoder} and T={timesteps}")
        self.precision = meta.get("precision", "float32")

    def run(self, images, encoded):
        recording = self.target.run(self.proto, encoded.transpose(0, 1).to(torch.float64).cpu().numpy())
        return {layer: recording.outputs[layer] for layer in SPIKING_LAYERS}


def backend_names() -> list[str]:
    return [REFERENCE, *target_names()]


def parse_backends(spec: str) -> list[str]:
    """'snntorch,nir' or 'all' -> the backends to compare with the reference
    (the reference itself is always run and never listed)."""
    known = backend_names()
    names = known if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown backend {', '.join(unknown)}: use any of {', '.join(known)} or 'all'")
    chosen = list(dict.fromkeys(n for n in names if n != REFERENCE))
    if not chosen:
        raise ConfigError(f"nothing to compare: name at least one backend besides the reference "
                          f"{REFERENCE!r} (e.g. --backends {REFERENCE},nir)")
    return chosen
