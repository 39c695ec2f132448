"""Accuracy, per-class accuracy and the confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    class_names: tuple[str, ...]
    confusion: np.ndarray        # (K, K): rows = true class, columns = predicted
    loss: float = float("nan")

    @classmethod
    def from_predictions(cls, labels, predictions, class_names, loss=float("nan")) -> "Evaluation":
        k = len(class_names)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (np.asarray(labels), np.asarray(predictions)), 1)
        return cls(tuple(class_names), confusion, float(loss))

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else float("nan")

    def per_class(self) -> dict[str, dict]:
        out = {}
        for i, name in enumerate(self.class_names):
            support = int(self.confusion[i].sum())
            out[name] = {"n": support,
                         "accuracy": float(self.confusion[i, i] / support) if support else None}
        return out

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "loss": self.loss,
                "per_class": self.per_class(), "class_names": list(self.class_names),
                "confusion": self.confusion.tolist()}

    def table(self) -> str:
        lines = [f"accuracy {self.accuracy:.4f} on {self.n} samples" +
                 (f" (loss {self.loss:.4f})" if np.isfinite(self.loss) else "")]
        for name, d in self.per_class().items():
            acc = "  n/a " if d["accuracy"] is None else f"{d['accuracy']:.4f}"
            lines.append(f"  {name:<10} {acc}  (n={d['n']})")
        return "\n".join(lines)
