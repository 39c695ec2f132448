"""What a verification found, whatever the reference: the comparisons of
every backend with the reference, the fixed-point backends with each other,
the backends that could not run, and the verdict, as a table and as JSON.

Two kinds of run fill it: a checkpoint (the float64 snnTorch model is the
reference, run.py) and a bare NIR graph (the ``nir`` target is the
reference, graph.py). Each subclass says what was run on what (its header);
everything after the header is shared, and so are the Markdown report
(markdown.py) and the picture (plots.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fer2neuro.targets.base import Arithmetic
from fer2neuro.verification.compare import BackendComparison


def one_line(message) -> str:
    return " ".join(str(message).split())


@dataclass(kw_only=True)
class Report:
    reference: str                      # the backend everything is compared with
    encoder: str
    timesteps: int
    samples: int
    comparisons: dict[str, BackendComparison] = field(default_factory=dict)
    fixed_agreement: dict[str, BackendComparison] = field(default_factory=dict)   # "a vs b" -> a as reference
    qat: str | None = None              # the fixed-point target the checkpoint was fine-tuned for
    quantised: dict[str, BackendComparison] = field(default_factory=dict)   # fixed-point backend vs the QAT model
    unavailable: dict[str, str] = field(default_factory=dict)    # backend -> why it cannot run the graph
    reference_seconds: float = 0.0
    divergence_inputs: dict = field(default_factory=dict, repr=False)   # backend -> (encoded, image) of that sample
    programs: dict = field(default_factory=dict, repr=False)            # backend -> the opened target program

    # -- what a subclass says about its run ---------------------------------------------------------
    @property
    def title(self) -> str:
        raise NotImplementedError

    def summary_line(self) -> str:
        """The table's first line: what ran on what."""
        raise NotImplementedError

    def markdown_header(self) -> list[str]:
        """The Markdown report's bullets before the verdict."""
        raise NotImplementedError

    def reference_membranes(self, encoded: torch.Tensor, image: torch.Tensor | None, layer: str) -> np.ndarray | None:
        """The reference's membrane of ``layer`` over time, (T, *shape), for
        one sample (encoded (T, 1, ...)); None if it has none."""
        return None

    # -- the verdict --------------------------------------------------------------------------------
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
                out.append(f"{name} differs from {self.reference}{where}")
        for pair, c in self.fixed_agreement.items():
            if not self.fixed_bit_exact and c.first_divergence:
                out.append(f"fixed-point backends {pair} differ: first divergence at {c.first_divergence.describe()}")
        for name, c in self.quantised.items():
            if c.first_divergence:
                out.append(f"{name} differs from the {self.qat} QAT model: first divergence at "
                           f"{c.first_divergence.describe()}")
        return out

    def verdict_line(self) -> str:
        """The closing line of an equivalent run."""
        return (f"equivalent: every float64 backend matches {self.reference} spike for spike"
                + ("; the fixed-point backends agree bit for bit" if self.fixed_agreement else "")
                + (f"; they equal the {self.qat} QAT model bit for bit" if self.quantised else ""))

    # -- JSON ---------------------------------------------------------------------------------------
    def comparison_dict(self) -> dict:
        """The JSON keys every report shares after its header."""
        return {
            "backends": {name: c.to_dict() for name, c in self.comparisons.items()},
            "fixed_point_agreement": {pair: pair_dict(c) for pair, c in self.fixed_agreement.items()},
        }

    # -- the table ----------------------------------------------------------------------------------
    def table(self) -> str:
        lines = [self.summary_line()]
        for name, c in self.comparisons.items():
            lines += ["", backend_line(name, c), *layer_table(c)]
            if c.first_divergence:
                lines.append(f"  first divergence: {c.first_divergence.describe()}")
        for pair, c in self.fixed_agreement.items():
            lines += ["", f"fixed point, {pair}: " + bit_exact_words(c)]
        for name, c in self.quantised.items():
            lines += ["", f"{name} vs the {self.qat} QAT model: " + bit_exact_words(c)]
        for name, reason in self.unavailable.items():
            lines += ["", f"{name}: cannot run: {reason}"]
        return "\n".join(lines)


def pair_dict(c: BackendComparison) -> dict:
    """Two backends that must agree bit for bit (the fixed-point pair)."""
    return {"bit_exact": c.counts_equal and c.first_divergence is None,
            "first_divergence": c.first_divergence.to_dict() if c.first_divergence else None,
            "layers": {n: {"identical_trains": layer.identical_trains, "match_fraction": layer.match_fraction}
                       for n, layer in c.layers.items()}}


def bit_exact_words(c: BackendComparison) -> str:
    if c.counts_equal and c.first_divergence is None:
        return "BIT-EXACT (every spike of every layer)"
    return f"DIFFER; first divergence at {c.first_divergence.describe()}"


def verdict_word(c: BackendComparison) -> str:
    kind = "fixed point" if c.precision == Arithmetic.FIXED else c.precision
    if c.exact_required:
        return "EQUIVALENT" if c.counts_equal else "DIFFERS"
    return "identical here" if c.counts_equal else f"reported ({kind}: not required to match)"


def backend_line(name: str, c: BackendComparison) -> str:
    line = f"{name} ({c.precision}, {c.seconds:.2f} s): {verdict_word(c)}"
    if c.predicted:
        line += f"; predictions agree on {c.prediction_matches}/{c.predicted}"
    if c.labelled:
        line += f", accuracy {c.accuracy:.1%}"
    return line


def format_ratio(ratio: float) -> str:
    return f"{ratio:.3f}" if np.isfinite(ratio) else "inf"


def layer_table(c: BackendComparison) -> list[str]:
    """Per spiking layer: how much of it agrees with the reference."""
    width = max([8, *(len(n) for n in c.layers)])
    lines = [f"  {'layer':<{width}} {'neurons':>8} {'ref spikes':>11} {'rate':>6} {'spikes equal':>13} "
             f"{'counts equal':>13} {'trains equal':>13} {'ratio':>7} {'Δspikes':>9}"]
    for layer in c.layers.values():
        lines.append(f"  {layer.name:<{width}} {layer.neurons:>8} {layer.reference_spikes:>11} "
                     f"{layer.reference_rate:>6.3f} {layer.spike_agreement:>12.4%} {layer.match_fraction:>12.4%} "
                     f"{layer.identical_trains:>12.4%} {format_ratio(layer.count_ratio):>7} "
                     f"{layer.count_difference:>+9d}")
    return lines


def compare_batch(report: Report, backends, reference: dict[str, np.ndarray], encoded: torch.Tensor,
                  images: torch.Tensor | None, start: int, *, labels=None, predict=None,
                  tolerate: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Run every backend on one batch and fold its spikes into its comparison
    with the reference's (``reference``: layer -> (B, T, ...)), and the
    fixed-point backends' into their comparison with each other (the first
    of them is the pair's reference). ``predict``: spikes -> the class of
    each sample, or None. With ``tolerate``, a backend that fails on the
    batch (a TargetError or DataError) is reported in ``report.unavailable``
    instead of stopping the run. Returns the fixed-point backends' spikes."""
    from fer2neuro.errors import Fer2NeuroError

    reference_pred = predict(reference) if predict else None
    fixed_outputs = {}
    for backend in backends:
        if backend.name in report.unavailable:
            continue
        comparison = report.comparisons[backend.name]
        t0 = time.perf_counter()
        try:
            out = backend.run(images, encoded)
        except Fer2NeuroError as exc:
            if not tolerate:
                raise
            report.unavailable[backend.name] = one_line(exc)
            del report.comparisons[backend.name]
            report.fixed_agreement = {pair: c for pair, c in report.fixed_agreement.items()
                                      if backend.name not in pair.split(" vs ")}
            continue
        comparison.seconds += time.perf_counter() - t0
        had = comparison.first_divergence
        comparison.add(reference, out, labels, reference_pred, predict(out) if predict else None, start)
        if comparison.first_divergence is not had:
            b = comparison.divergence_batch_index
            report.divergence_inputs[backend.name] = (encoded[:, b:b + 1].clone(),
                                                      None if images is None else images[b:b + 1].clone())
        if backend.arithmetic is Arithmetic.FIXED:
            fixed_outputs[backend.name] = out
    names = list(fixed_outputs)
    for other in names[1:]:
        pair = f"{names[0]} vs {other}"
        if pair not in report.fixed_agreement:
            ours, theirs = report.comparisons[names[0]].layers, report.comparisons[other].layers
            shapes = {n: layer.shape for n, layer in ours.items() if n in theirs}
            report.fixed_agreement[pair] = BackendComparison.start(other, Arithmetic.FIXED, shapes,
                                                                   report.timesteps)
        first = fixed_outputs[names[0]]
        report.fixed_agreement[pair].add(first, fixed_outputs[other], labels,
                                         predict(first) if predict else None,
                                         predict(fixed_outputs[other]) if predict else None, start)
    return fixed_outputs
