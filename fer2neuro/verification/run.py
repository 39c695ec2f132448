"""``fer2neuro verify``: the same samples through the float64 snnTorch model
and through every backend, compared spike for spike (SPEC §4)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fer2neuro.data import load_split
from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.nirgraph.file import read_graph
from fer2neuro.model.checkpoint import load_model
from fer2neuro.model.config import ENCODERS
from fer2neuro.model.encoding import poisson_encode, poisson_generator
from fer2neuro.model.network import SPIKING_LAYERS
from fer2neuro.targets.base import Arithmetic
from fer2neuro.verification.backends import REFERENCE, QuantisedReference, SnnTorchReference, TargetBackend
from fer2neuro.verification.compare import BackendComparison


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


@dataclass
class VerificationReport:
    checkpoint: str
    options: VerificationOptions
    encoder: str
    timesteps: int
    samples: int
    class_names: tuple[str, ...]
    reference_accuracy: float
    comparisons: dict[str, BackendComparison] = field(default_factory=dict)
    fixed_agreement: dict[str, BackendComparison] = field(default_factory=dict)   # "a vs b" -> a as reference
    qat: str | None = None              # the fixed-point target the checkpoint was fine-tuned for
    quantised: dict[str, BackendComparison] = field(default_factory=dict)   # fixed-point backend vs the QAT model
    reference_seconds: float = 0.0
    model: object = field(default=None, repr=False)           # the float64 reference model and the graph,
    graph: object = field(default=None, repr=False)           # for the Markdown report's membrane values
    divergence_inputs: dict = field(default_factory=dict, repr=False)   # backend -> (encoded, image) of that sample
    programs: dict = field(default_factory=dict, repr=False)            # backend -> the opened target program

    @property
    def fixed_bit_exact(self) -> bool:
        """SPEC §4: the fixed-point backends agree with each other bit for bit."""
        return all(c.bit_exact for c in self.fixed_agreement.values())

    @property
    def quantised_bit_exact(self) -> bool:
        """A QAT checkpoint: every fixed-point backend spikes exactly as the
        model it was fine-tuned as (fer2neuro.qat)."""
        return all(c.bit_exact for c in self.quantised.values())

    @property
    def equivalent(self) -> bool:
        return all(c.equivalent for c in self.comparisons.values()) and self.fixed_bit_exact and \
            self.quantised_bit_exact

    def failures(self) -> list[str]:
        out = []
        for name, c in self.comparisons.items():
            if not c.equivalent:
                where = f": first divergence at {c.first_divergence.describe()}" if c.first_divergence else ""
                out.append(f"{name} differs from {REFERENCE}{where}")
        for pair, c in self.fixed_agreement.items():
            if not self.fixed_bit_exact and c.first_divergence:
                out.append(f"fixed-point backends {pair} differ: first divergence at {c.first_divergence.describe()}")
        for name, c in self.quantised.items():
            if c.first_divergence:
                out.append(f"{name} differs from the {self.qat} QAT model: first divergence at "
                           f"{c.first_divergence.describe()}")
        return out

    def to_dict(self) -> dict:
        o = self.options
        return {
            "checkpoint": self.checkpoint, "reference": REFERENCE, "reference_dtype": "float64",
            "data": o.data, "split": o.split, "samples": self.samples, "encoder": self.encoder,
            "timesteps": self.timesteps, "poisson_seed": o.poisson_seed if self.encoder == "poisson" else None,
            "graph": o.graph, "lava": o.lava, "onnx": o.onnx, "equivalent": self.equivalent,
            "reference_accuracy": self.reference_accuracy,
            "reference_seconds": round(self.reference_seconds, 3),
            "backends": {name: c.to_dict() for name, c in self.comparisons.items()},
            "fixed_point_agreement": {pair: {"bit_exact": c.counts_equal and c.first_divergence is None,
                                             "first_divergence": c.first_divergence.to_dict()
                                             if c.first_divergence else None,
                                             "layers": {n: {"identical_trains": layer.identical_trains,
                                                            "match_fraction": layer.match_fraction}
                                                        for n, layer in c.layers.items()}}
                                      for pair, c in self.fixed_agreement.items()},
            "qat": self.qat,
            "qat_model_agreement": {name: {"bit_exact": c.counts_equal and c.first_divergence is None,
                                           "first_divergence": c.first_divergence.to_dict()
                                           if c.first_divergence else None}
                                    for name, c in self.quantised.items()},
        }

    def table(self) -> str:
        o = self.options
        lines = [f"{self.checkpoint}: {self.samples} samples of {o.data} {o.split}, {self.encoder} encoding, "
                 f"T={self.timesteps}; reference {REFERENCE} (float64), "
                 f"accuracy {self.reference_accuracy:.1%} on these samples"]
        head = f"  {'layer':<8} {'neurons':>8} {'ref spikes':>11} {'rate':>6} {'counts equal':>13} " \
               f"{'trains equal':>13} {'Δspikes':>9}"
        for name, c in self.comparisons.items():
            kind = "fixed point" if c.precision == Arithmetic.FIXED else c.precision
            verdict = ("EQUIVALENT" if c.counts_equal else "DIFFERS") if c.exact_required else \
                ("identical here" if c.counts_equal else f"reported ({kind}: not required to match)")
            lines += ["", f"{name} ({c.precision}, {c.seconds:.2f} s): {verdict}; predictions agree on "
                          f"{c.prediction_matches}/{c.samples}, accuracy {c.accuracy:.1%}", head]
            for layer in c.layers.values():
                lines.append(f"  {layer.name:<8} {layer.neurons:>8} {layer.reference_spikes:>11} "
                             f"{layer.reference_rate:>6.3f} {layer.match_fraction:>12.4%} "
                             f"{layer.identical_trains:>12.4%} {layer.count_difference:>+9d}")
            if c.first_divergence:
                lines.append(f"  first divergence: {c.first_divergence.describe()}")
        for pair, c in self.fixed_agreement.items():
            exact = c.counts_equal and c.first_divergence is None
            lines += ["", f"fixed point, {pair}: " + ("BIT-EXACT (every spike of every layer)" if exact else
                                                       f"DIFFER; first divergence at {c.first_divergence.describe()}")]
        for name, c in self.quantised.items():
            exact = c.counts_equal and c.first_divergence is None
            lines += ["", f"{name} vs the {self.qat} QAT model: " + (
                "BIT-EXACT (every spike of every layer)" if exact else
                f"DIFFER; first divergence at {c.first_divergence.describe()}")]
        return "\n".join(lines)


def encode_batch(images: torch.Tensor, encoder: str, timesteps: int,
                 generator: torch.Generator) -> torch.Tensor:
    """The input every backend receives, (T, B, 1, H, W) float64."""
    if encoder == "poisson":
        return poisson_encode(images, timesteps, generator)
    return images.unsqueeze(0).expand(timesteps, *images.shape).contiguous()


def verify(checkpoint: str | Path, options: VerificationOptions) -> VerificationReport:
    model, ckpt = load_model(checkpoint, "cpu", dtype=torch.float64)
    cfg = ckpt.config
    encoder = options.encoder or cfg.encoder
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}: use one of {', '.join(ENCODERS)}")
    timesteps = options.timesteps or cfg.timesteps
    model.config = replace(cfg, encoder=encoder, timesteps=timesteps)
    dataset = load_split(options.data, options.split, limit=options.samples,
                         ferplus=options.ferplus, seed=options.data_seed)
    if tuple(dataset.class_names) != tuple(ckpt.class_names):
        raise CheckpointError(f"{checkpoint} was trained on classes ({', '.join(ckpt.class_names)}) but "
                              f"{options.data} has ({', '.join(dataset.class_names)})")
    graph = read_graph(options.graph) if options.graph else model_to_nir(model, encoder=encoder,
                                                                         timesteps=timesteps)
    reference = SnnTorchReference(model, encoder)
    qat = ckpt.deployment.get("qat")
    quantised_model = QuantisedReference(model) if qat else None
    backends = [TargetBackend(name, graph, artifacts=(options.lava, options.onnx)) for name in options.backends]
    for backend in backends:
        backend.check_encoding(encoder, timesteps)
    shapes = {}
    images = torch.from_numpy(dataset.images).to(torch.float64).div(255.0).unsqueeze(1)
    labels = dataset.labels
    report = VerificationReport(checkpoint=str(checkpoint), options=options, encoder=encoder,
                                timesteps=timesteps, samples=len(dataset),
                                class_names=tuple(ckpt.class_names), reference_accuracy=0.0, qat=qat)
    generator = poisson_generator(options.poisson_seed)
    correct = 0
    batches = range(0, len(dataset), options.batch_size)
    for start in tqdm(batches, desc="verify", unit="batch", disable=not options.progress, leave=False):
        x = images[start:start + options.batch_size]
        y = labels[start:start + options.batch_size]
        encoded = encode_batch(x, encoder, timesteps, generator)
        t0 = time.perf_counter()
        ref = reference.run(x, encoded)
        report.reference_seconds += time.perf_counter() - t0
        ref_pred = predictions(ref)
        correct += int((ref_pred == y).sum())
        if not shapes:
            shapes = {name: ref[name].shape[2:] for name in SPIKING_LAYERS}
            report.comparisons = {b.name: BackendComparison.start(b.name, b.arithmetic, shapes, timesteps)
                                  for b in backends}
        fixed_outputs = {}
        for backend in backends:
            t0 = time.perf_counter()
            out = backend.run(x, encoded)
            comparison = report.comparisons[backend.name]
            comparison.seconds += time.perf_counter() - t0
            had = comparison.first_divergence
            comparison.add(ref, out, y, ref_pred, predictions(out), start)
            if comparison.first_divergence is not had:
                b = comparison.divergence_batch_index
                report.divergence_inputs[backend.name] = (encoded[:, b:b + 1].clone(), x[b:b + 1].clone())
            if backend.arithmetic is Arithmetic.FIXED:
                fixed_outputs[backend.name] = out
        if quantised_model is not None and fixed_outputs:
            expected = quantised_model.run(x, encoded)
            for name, out in fixed_outputs.items():
                if name not in report.quantised:
                    report.quantised[name] = BackendComparison.start(name, Arithmetic.FIXED, shapes, timesteps)
                report.quantised[name].add(expected, out, y, predictions(expected), predictions(out), start)
        names = list(fixed_outputs)
        for other in names[1:]:
            pair = f"{names[0]} vs {other}"
            if pair not in report.fixed_agreement:
                report.fixed_agreement[pair] = BackendComparison.start(other, Arithmetic.FIXED, shapes, timesteps)
            first = fixed_outputs[names[0]]
            report.fixed_agreement[pair].add(first, fixed_outputs[other], y, predictions(first),
                                             predictions(fixed_outputs[other]), start)
    report.reference_accuracy = correct / len(dataset)
    report.model, report.graph = model, graph
    report.programs = {b.name: b.program for b in backends}
    return report


def predictions(spikes: dict[str, np.ndarray]) -> np.ndarray:
    """Most output spikes, ties to the lowest index (SPEC §1)."""
    return spikes["lif_out"].sum(1, dtype=np.int64).argmax(-1)
