"""``fer2neuro verify``: the same samples through the float64 snnTorch model
and through every backend, compared spike for spike (SPEC §4)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from fer2neuro.progress import progress_bar

from fer2neuro.data import load_split
from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.memory import check_fits, checked_timesteps, model_values, steps_bytes
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.nirgraph.file import GraphInfo, read_graph
from fer2neuro.model.checkpoint import load_model
from fer2neuro.model.config import ENCODERS
from fer2neuro.model.config import MAX_TIMESTEPS as MAX_MODEL_TIMESTEPS
from fer2neuro.nirgraph.readout import Readout, classify
from fer2neuro.model.encoding import poisson_encode, poisson_generator
from fer2neuro.model.layers import OUTPUT
from fer2neuro.targets.base import Arithmetic
from fer2neuro.training.distributed import SINGLE, Group
from fer2neuro.verification.backends import REFERENCE, QuantisedReference, SnnTorchReference, TargetBackend
from fer2neuro.verification.compare import BackendComparison
from fer2neuro.verification.report import Report, compare_batch, failing_together, shard_batches


@dataclass
class VerificationOptions:
    backends: list[str]
    samples: int = 16
    data: str = "synthetic"
    split: str = "PublicTest"
    ferplus: str | None = None
    data_seed: int = 0
    encoder: str | None = None          # default: the checkpoint's
    timesteps: int | None = None        # default: the checkpoint's
    poisson_seed: int = 0
    graph: str | None = None            # a .nir file to verify instead of exporting afresh
    lava: str | None = None             # an exported Lava folder for the lava / lava-fixed / loihi backends
    onnx: str | None = None             # an exported .onnx file for the onnx backend
    batch_size: int = 16
    progress: bool = True


@dataclass(kw_only=True)
class VerificationReport(Report):
    """A checkpoint's verification: the float64 snnTorch model is the reference."""

    checkpoint: str
    options: VerificationOptions
    class_names: tuple[str, ...]
    reference_correct: int = 0          # samples whose reference prediction is the label
    reference: str = REFERENCE
    model: object = field(default=None, repr=False)           # the float64 reference model and the graph,
    graph: object = field(default=None, repr=False)           # for the Markdown report's membrane values

    shard_totals = (*Report.shard_totals, "reference_correct")

    @property
    def title(self) -> str:
        return self.checkpoint

    @property
    def reference_accuracy(self) -> float:
        return self.reference_correct / self.samples if self.samples else 0.0

    def summary_line(self) -> str:
        o = self.options
        return (f"{self.checkpoint}: {self.samples} samples of {o.data} {o.split}, {self.encoder} encoding, "
                f"T={self.timesteps}; reference {REFERENCE} (float64), "
                f"accuracy {self.reference_accuracy:.1%} on these samples")

    def markdown_header(self) -> list[str]:
        o = self.options
        return [f"- samples: {self.samples} of {o.data} {o.split}, {self.encoder} encoding, T={self.timesteps}",
                f"- reference: {REFERENCE} in float64 (accuracy on these samples {self.reference_accuracy:.1%})"]

    def reference_membranes(self, encoded, image, layer):
        x = image if self.encoder == "direct" else encoded
        trace = self.model.record(x.to(torch.float64), membranes=True)
        return trace[f"{layer}.v"][:, 0].numpy()

    def to_dict(self) -> dict:
        o = self.options
        return {
            "checkpoint": self.checkpoint, "reference": REFERENCE, "reference_dtype": "float64",
            "data": o.data, "split": o.split, "samples": self.samples, "encoder": self.encoder,
            "timesteps": self.timesteps, "poisson_seed": o.poisson_seed if self.encoder == "poisson" else None,
            "graph": o.graph, "lava": o.lava, "onnx": o.onnx, "equivalent": self.equivalent,
            "reference_accuracy": self.reference_accuracy,
            "reference_seconds": round(self.reference_seconds, 3),
            **self.comparison_dict(),
            "qat": self.qat,
            "qat_model_agreement": {name: {"bit_exact": c.counts_equal and c.first_divergence is None,
                                           "first_divergence": c.first_divergence.to_dict()
                                           if c.first_divergence else None}
                                    for name, c in self.quantised.items()},
        }


def encode_batch(images: torch.Tensor, encoder: str, timesteps: int,
                 generator: torch.Generator) -> torch.Tensor:
    """The input every backend receives, (T, B, 1, H, W) float64."""
    if encoder == "poisson":
        return poisson_encode(images, timesteps, generator)
    return images.unsqueeze(0).expand(timesteps, *images.shape).contiguous()


def verify(checkpoint: str | Path, options: VerificationOptions, group: Group = SINGLE) -> VerificationReport:
    """Verify ``checkpoint`` on ``options.samples`` samples. Under torchrun
    (``group`` of several ranks) every rank draws every batch's inputs as one
    process does, runs only its shard of the samples, and ends with the
    report of all of them (Report.merge_shards)."""
    model, ckpt = load_model(checkpoint, "cpu", dtype=torch.float64)
    cfg = ckpt.config
    encoder = options.encoder or cfg.encoder
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}: use one of {', '.join(ENCODERS)}")
    timesteps = options.timesteps or checked_timesteps(cfg.timesteps, f"{checkpoint}'s config")
    if timesteps > MAX_MODEL_TIMESTEPS:         # -T within a graph's bound, beyond the network's
        raise ConfigError(f"-T {timesteps}: {checkpoint} is a fer2neuro network, which runs 1 to "
                          f"{MAX_MODEL_TIMESTEPS} steps")
    model.config = replace(cfg, encoder=encoder, timesteps=timesteps)
    # a batch's inputs and the float64 reference's values of every layer, before any data is read
    check_fits(steps_bytes(timesteps=timesteps, values=model_values(model.config),
                           batch=min(options.batch_size, options.samples), itemsize=8),
               f"verifying batches of {min(options.batch_size, options.samples)} samples over T={timesteps}",
               "-T or --batch-size")
    dataset = load_split(options.data, options.split, limit=options.samples,
                         ferplus=options.ferplus, seed=options.data_seed)
    if tuple(dataset.class_names) != tuple(ckpt.class_names):
        raise CheckpointError(f"{checkpoint} was trained on classes ({', '.join(ckpt.class_names)}) but "
                              f"{options.data} has ({', '.join(dataset.class_names)})")
    graph = read_graph(options.graph) if options.graph else model_to_nir(model, encoder=encoder,
                                                                         timesteps=timesteps)
    reference = SnnTorchReference(model, encoder)
    predictions = deciding(graph)
    qat = ckpt.deployment.get("qat")
    quantised_model = QuantisedReference(model) if qat else None
    backends = [TargetBackend(name, graph, artifacts=(options.lava, options.onnx), layers=model.spiking_layers)
                for name in options.backends]
    for backend in backends:
        backend.check_encoding(encoder, timesteps)
    shapes = {}
    images = torch.from_numpy(dataset.images).to(torch.float64).div(255.0).unsqueeze(1)
    labels = dataset.labels
    report = VerificationReport(checkpoint=str(checkpoint), options=options, encoder=encoder,
                                timesteps=timesteps, samples=len(dataset),
                                class_names=tuple(ckpt.class_names), qat=qat)
    generator = poisson_generator(options.poisson_seed)
    batches = list(shard_batches(len(dataset), options.batch_size, group))
    with failing_together(group):
        for batch, mine in progress_bar(batches, desc="verify", unit="batch", disable=not options.progress, leave=False):
            encoded = encode_batch(images[batch], encoder, timesteps, generator)   # every rank draws every batch
            if mine is None:
                continue
            start = mine.start
            x, y = images[mine], labels[mine]
            encoded = encoded[:, mine.start - batch.start:mine.stop - batch.start]
            t0 = time.perf_counter()
            ref = reference.run(x, encoded)
            report.reference_seconds += time.perf_counter() - t0
            report.reference_correct += int((predictions(ref) == y).sum())
            if not shapes:
                shapes = {name: ref[name].shape[2:] for name in model.spiking_layers}
                report.comparisons = {b.name: BackendComparison.start(b.name, b.arithmetic, shapes, timesteps)
                                      for b in backends}
            fixed_outputs = compare_batch(report, backends, ref, encoded, x, start, labels=y, predict=predictions)
            if quantised_model is not None and fixed_outputs:
                expected = quantised_model.run(x, encoded)
                for name, out in fixed_outputs.items():
                    if name not in report.quantised:
                        report.quantised[name] = BackendComparison.start(name, Arithmetic.FIXED, shapes,
                                                                         timesteps)
                    report.quantised[name].add(expected, out, y, predictions(expected), predictions(out), start)
    report.merge_shards(group)
    report.model, report.graph = model, graph
    report.programs = {b.name: b.program for b in backends}
    return report


def deciding(graph, layer: str = OUTPUT):
    """spikes (every layer, (B, T, ...)) -> classes by SPEC §1's rule: most
    output spikes, ties to the highest output membrane worked out from the
    recorded spikes (nirgraph/readout.py), then the lowest index. Every
    backend's recording goes through this one function, so equal spikes
    give equal classes."""
    readout = Readout.of_graph(graph)
    dt = GraphInfo.of(graph).dt or 1.0

    def predict(spikes: dict[str, np.ndarray]) -> np.ndarray:
        return classify(spikes[layer], readout, spikes, dt)[0]
    return predict
