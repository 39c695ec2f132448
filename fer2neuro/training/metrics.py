"""Accuracy with its 95 % confidence interval, per-class accuracy, precision,
recall and F1, macro-F1, and the confusion matrix."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Z_95 = 1.959963984540054      # two-sided 95 % quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion. Unlike the normal
    approximation p +- z sqrt(p(1-p)/n) it stays inside [0, 1] and is honest
    for small n or extreme p (e.g. a 56-face class)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of a paired comparison: ``b``
    faces one model gets right and the other wrong, ``c`` the reverse. Under
    "both models are as good" each discordant face is a fair coin, so the
    p-value is twice the smaller binomial tail of Bin(b + c, 1/2), at most 1.
    Exact rather than chi-squared: a few dozen discordant faces is common."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b} and {c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass
class Evaluation:
    class_names: tuple[str, ...]
    confusion: np.ndarray        # (K, K): rows = true class, columns = predicted
    loss: float = float("nan")
    # per sample, in order, where known: (labels, predictions), for paired
    # comparisons of two evaluations of the same faces (not in to_dict)
    samples: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    # spiking models: faces whose output layer did not spike at all (their
    # class came from the output membrane alone, nirgraph/readout.py)
    silent: int | None = None

    @classmethod
    def from_predictions(cls, labels, predictions, class_names, loss=float("nan")) -> "Evaluation":
        k = len(class_names)
        labels, predictions = np.asarray(labels), np.asarray(predictions)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (labels, predictions), 1)
        return cls(tuple(class_names), confusion, float(loss), (labels, predictions))

    def correct(self) -> np.ndarray:
        """Per sample, in order: whether it was classified right."""
        if self.samples is None:
            raise ValueError("this evaluation kept no per-sample predictions")
        labels, predictions = self.samples
        return labels == predictions

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else float("nan")

    @property
    def accuracy_ci95(self) -> tuple[float, float]:
        """95 % Wilson interval of the accuracy over these ``n`` samples."""
        return wilson_interval(int(np.trace(self.confusion)), self.n)

    def per_class(self) -> dict[str, dict]:
        """Per class: support ``n``, ``accuracy`` (= recall), ``precision`` and
        ``f1``; ``None`` where undefined (no sample, or never predicted)."""
        out = {}
        predicted = self.confusion.sum(0)
        for i, name in enumerate(self.class_names):
            support, hits = int(self.confusion[i].sum()), int(self.confusion[i, i])
            recall = hits / support if support else None
            precision = hits / int(predicted[i]) if predicted[i] else None
            if recall is None or precision is None:
                f1 = None if recall is None else 0.0
            else:
                f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out[name] = {"n": support, "accuracy": recall, "precision": precision, "f1": f1}
        return out

    @property
    def macro_f1(self) -> float:
        """Unweighted mean of the per-class F1 over the classes present in the
        labels (a never-predicted class counts as F1 = 0): the figure that an
        always-"happy" classifier cannot inflate."""
        scores = [d["f1"] for d in self.per_class().values() if d["f1"] is not None]
        return float(np.mean(scores)) if scores else float("nan")

    def to_dict(self) -> dict:
        low, high = self.accuracy_ci95
        return {"accuracy": self.accuracy, "accuracy_ci95": [low, high], "macro_f1": self.macro_f1,
                "n": self.n, "loss": self.loss, "silent_faces": self.silent, "per_class": self.per_class(),
                "class_names": list(self.class_names), "confusion": self.confusion.tolist()}

    def silence_warning(self) -> str | None:
        """A warning when more than half of the faces got no output spike."""
        if self.silent is None or not self.n or self.silent * 2 <= self.n:
            return None
        return (f"warning: {self.silent} of {self.n} faces ({self.silent / self.n:.0%}) got no output spike; "
                "their class came from the output membrane alone (the network is under-trained or its "
                "output layer fell silent)")

    def table(self) -> str:
        low, high = self.accuracy_ci95
        lines = [f"accuracy {self.accuracy:.4f} (95 % CI {low:.4f}-{high:.4f}) on {self.n} samples, "
                 f"macro-F1 {self.macro_f1:.4f}" +
                 (f" (loss {self.loss:.4f})" if np.isfinite(self.loss) else "")]
        lines.append(f"  {'class':<10} {'recall':>7} {'precis.':>7} {'F1':>7}")
        fmt = lambda v: "    n/a" if v is None else f"{v:7.4f}"   # noqa: E731
        for name, d in self.per_class().items():
            lines.append(f"  {name:<10} {fmt(d['accuracy'])} {fmt(d['precision'])} {fmt(d['f1'])}  (n={d['n']})")
        return "\n".join(lines)
