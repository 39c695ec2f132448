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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from fer2neuro.targets.base import Arithmetic, unable_reason
from fer2neuro.verification.compare import BackendComparison


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

    # per-run figures that add up over the shards of the samples (a subclass may add its own)
    shard_totals = ("reference_seconds",)

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

    # -- one run sharded over processes (torchrun) ----------------------------------------------------
    def merge_shards(self, group) -> None:
        """Every rank compared its shard of the samples (shard_batches); make
        every rank's report that of all the samples, as one process makes it:
        the comparisons' totals add up, a first divergence is the earliest
        over the shards (with that sample's inputs), a backend that could not
        run on one shard cannot run (for the reason of the earliest shard).
        Only the seconds differ: time spent on all ranks together."""
        if not group.active:
            return
        kept = ("comparisons", "fixed_agreement", "quantised", "unavailable", "divergence_inputs",
                *self.shard_totals)
        parts = group.gather({name: getattr(self, name) for name in kept})
        merged = {"comparisons": {}, "fixed_agreement": {}, "quantised": {}}
        unavailable, inputs = {}, {}
        for part in parts:                          # rank order: sample order
            for name, why in part["unavailable"].items():
                unavailable.setdefault(name, why)
            for kind, comparisons in merged.items():
                for name, c in part[kind].items():
                    if name in comparisons:
                        comparisons[name].merge(c)
                    else:
                        comparisons[name] = c
                    if kind == "comparisons" and c.first_divergence is not None and \
                            comparisons[name].first_divergence is c.first_divergence and \
                            name in part["divergence_inputs"]:
                        inputs[name] = part["divergence_inputs"][name]
        for name in self.shard_totals:
            setattr(self, name, sum(part[name] for part in parts))
        self.unavailable = unavailable
        self.comparisons = {n: c for n, c in merged["comparisons"].items() if n not in unavailable}
        self.fixed_agreement = {pair: c for pair, c in merged["fixed_agreement"].items()
                                if not set(pair.split(" vs ")) & set(unavailable)}
        self.quantised = merged["quantised"]
        self.divergence_inputs = {n: v for n, v in inputs.items() if n in self.comparisons}

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


def shard_batches(samples: int, batch_size: int, group) -> Iterator[tuple[slice, slice | None]]:
    """The batches one process runs over ``samples`` samples, each with this
    rank's part of it (``group.shard``: a contiguous run of samples), or None
    where it has none. Every rank walks every batch, so whatever is drawn
    per batch (the Poisson spikes) is drawn as one process draws it; a
    sample is run in the batch it is in, or a part of it."""
    shard = group.shard(samples)
    for start in range(0, samples, batch_size):
        lo, hi = max(start, shard.start), min(start + batch_size, samples, shard.stop)
        yield slice(start, min(start + batch_size, samples)), (slice(lo, hi) if lo < hi else None)


@contextmanager
def failing_together(group):
    """A user error (Fer2NeuroError) on one rank is raised on every rank (the
    lowest failing rank's), so that none waits in a collective for a rank
    that has stopped, and every rank exits with the same status."""
    from fer2neuro.errors import Fer2NeuroError

    try:
        yield
    except Fer2NeuroError as exc:
        group.gather((type(exc), str(exc)))
        raise
    errors = [e for e in group.gather(None) if e]
    if errors:
        kind, message = errors[0]
        raise kind(message)


def drop_backend(report: Report, name: str, why: str) -> None:
    """``name`` could not run: unavailable, with nothing of it compared."""
    report.unavailable[name] = why
    report.comparisons.pop(name, None)
    report.divergence_inputs.pop(name, None)
    report.fixed_agreement = {pair: c for pair, c in report.fixed_agreement.items()
                              if name not in pair.split(" vs ")}


def compare_batch(report: Report, backends, reference: dict[str, np.ndarray], encoded: torch.Tensor,
                  images: torch.Tensor | None, start: int, *, labels=None, predict=None,
                  tolerate: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Run every backend on one batch and fold its spikes into its comparison
    with the reference's (``reference``: layer -> (B, T, ...)), and the
    fixed-point backends' into their comparison with each other (the first
    of them is the pair's reference). ``predict``: spikes -> the class of
    each sample, or None. With ``tolerate``, a backend that fails on the
    batch, whatever it raises (a user error, or a fault inside the backend
    such as Lava's), goes to ``report.unavailable`` with why on one line and
    the others go on. Returns the fixed-point backends' spikes."""
    reference_pred = predict(reference) if predict else None
    fixed_outputs = {}
    for backend in backends:
        if backend.name in report.unavailable:
            continue
        comparison = report.comparisons[backend.name]
        t0 = time.perf_counter()
        try:
            out = backend.run(images, encoded)
        except Exception as exc:        # noqa: BLE001 - with tolerate, any failure makes it unavailable
            if not tolerate:
                raise
            drop_backend(report, backend.name, unable_reason(exc))
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
