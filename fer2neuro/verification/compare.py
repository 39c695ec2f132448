"""Comparing one backend's spikes with the reference's, layer by layer.

Spike trains arrive in batches as uint8 arrays (B, T, *layer_shape), already
aligned in time (a backend with pipeline delays shifts its own trains before
they get here). Per layer we accumulate, over every (sample, neuron):

- ``match_fraction``: share whose spike count over the run is identical;
- ``identical_trains``: share whose whole spike train is identical;
- ``spike_agreement``: share of (sample, neuron, step) where both sides
  emitted the same (spike or no spike);
- ``count_difference``: backend spikes minus reference spikes (signed),
  ``count_ratio``: backend spikes / reference spikes, and
  ``abs_count_difference``: the sum of |count differences|;
- ``count_pairs``: how often each (reference count, backend count) occurs
  (CountPairs): what would be a (T+1) x (T+1) matrix, diagonal when the
  counts agree, held as its diagonal plus the off-diagonal pairs that occur,
  so that verify needs O(T) memory (the matrix at T = 30000 is 6.7 GiB).

The first divergence is where the difference starts: the first layer in
data-flow order whose trains differ (every layer before it matched, so the
cause lies in it), then its earliest step, sample and neuron.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Divergence:
    layer: str
    sample: int                      # index among the verified samples
    neuron: tuple[int, ...]          # index within the layer, e.g. (channel, row, col)
    neuron_flat: int
    time_step: int
    reference: int                   # the spike (0/1) each side emitted there
    backend: int

    def key(self, layer_index: int) -> tuple:
        return (layer_index, self.time_step, self.sample, self.neuron_flat)

    def describe(self) -> str:
        return (f"layer {self.layer}, sample {self.sample}, neuron {self.neuron} (flat {self.neuron_flat}), "
                f"step {self.time_step}: reference {self.reference}, backend {self.backend}")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "sample": self.sample, "neuron": list(self.neuron),
                "neuron_flat": self.neuron_flat, "time_step": self.time_step,
                "reference_spike": self.reference, "backend_spike": self.backend}


# The JSON report writes count_pairs as the (T+1) x (T+1) matrix up to this T,
# above it as the list of [reference count, backend count, occurrences] that occur.
DENSE_PAIRS_MAX_TIMESTEPS = 256


class CountPairs:
    """How often each (reference count, backend count) occurs over (sample,
    neuron) pairs: ``diagonal[c]`` for equal counts c, ``off[(r, b)]`` for
    the pairs that differ. Memory O(T) plus one entry per distinct
    off-diagonal pair seen (at most one per (sample, neuron) that
    differs), never O(T^2)."""

    def __init__(self, timesteps: int) -> None:
        self.timesteps = int(timesteps)
        self.diagonal = np.zeros(self.timesteps + 1, dtype=np.int64)
        self.off: dict[tuple[int, int], int] = {}

    def add(self, reference_counts: np.ndarray, backend_counts: np.ndarray) -> None:
        top = self.timesteps
        ref = np.minimum(reference_counts, top).ravel()
        out = np.minimum(backend_counts, top).ravel()
        same = ref == out
        self.diagonal += np.bincount(ref[same], minlength=top + 1)
        if not same.all():
            keys, occurrences = np.unique(ref[~same] * (top + 1) + out[~same], return_counts=True)
            for key, n in zip(keys.tolist(), occurrences.tolist()):
                pair = divmod(key, top + 1)
                self.off[pair] = self.off.get(pair, 0) + n

    def merge(self, other: "CountPairs") -> None:
        self.diagonal = self.diagonal + other.diagonal
        for pair, n in other.off.items():
            self.off[pair] = self.off.get(pair, 0) + n

    def entries(self) -> list[list[int]]:
        """[reference count, backend count, occurrences] of every pair that
        occurs, by reference count then backend count."""
        diagonal = [(c, c, int(n)) for c, n in enumerate(self.diagonal.tolist()) if n]
        return [list(e) for e in sorted(diagonal + [(r, b, n) for (r, b), n in self.off.items()])]

    def dense(self, bins: int | None = None) -> np.ndarray:
        """The (T+1) x (T+1) matrix, or, with fewer ``bins``, counts binned
        into a bins x bins one (a picture of a large T)."""
        size = self.timesteps + 1
        bins = size if bins is None else min(bins, size)
        matrix = np.zeros((bins, bins), dtype=np.int64)
        index = np.arange(size) * bins // size
        np.add.at(matrix, (index, index), self.diagonal)
        for (r, b), n in self.off.items():
            matrix[r * bins // size, b * bins // size] += n
        return matrix

    def to_json(self) -> dict:
        if self.timesteps <= DENSE_PAIRS_MAX_TIMESTEPS:
            return {"count_pairs": self.dense().tolist()}
        return {"count_pairs": None, "count_pairs_sparse": self.entries()}


# LayerComparison's running totals that add up over disjoint samples (with count_pairs)
MERGED_LAYER_TOTALS = ("pairs", "count_matches", "train_matches", "step_matches", "reference_spikes",
                       "backend_spikes", "abs_count_difference")


@dataclass
class LayerComparison:
    """Running totals for one layer of one backend."""

    name: str
    shape: tuple[int, ...]
    timesteps: int
    pairs: int = 0                   # (sample, neuron) pairs seen
    count_matches: int = 0
    train_matches: int = 0
    step_matches: int = 0            # (sample, neuron, step) entries that agree
    reference_spikes: int = 0
    backend_spikes: int = 0
    abs_count_difference: int = 0
    count_pairs: CountPairs = field(default=None)

    def __post_init__(self):
        if self.count_pairs is None:
            self.count_pairs = CountPairs(self.timesteps)

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))

    @property
    def match_fraction(self) -> float:
        return self.count_matches / self.pairs if self.pairs else 1.0

    @property
    def identical_trains(self) -> float:
        return self.train_matches / self.pairs if self.pairs else 1.0

    @property
    def spike_agreement(self) -> float:
        return self.step_matches / (self.pairs * self.timesteps) if self.pairs else 1.0

    @property
    def count_difference(self) -> int:
        return self.backend_spikes - self.reference_spikes

    @property
    def count_ratio(self) -> float:
        """Backend spikes per reference spike (1.0 when both are silent;
        infinite when only the backend spikes)."""
        if self.reference_spikes:
            return self.backend_spikes / self.reference_spikes
        return 1.0 if self.backend_spikes == 0 else float("inf")

    @property
    def reference_rate(self) -> float:
        """Spikes per neuron per step in the reference: near 0 means this
        layer's agreement proves little."""
        return self.reference_spikes / (self.pairs * self.timesteps) if self.pairs else 0.0

    def add(self, reference: np.ndarray, backend: np.ndarray, sample_offset: int) -> Divergence | None:
        """Fold in one batch; returns this batch's first divergence, if any."""
        if reference.shape != backend.shape:
            raise ValueError(f"layer {self.name}: reference {reference.shape} vs backend {backend.shape}")
        batch, steps = reference.shape[:2]
        ref = reference.reshape(batch, steps, -1)
        out = backend.reshape(batch, steps, -1)
        ref_counts = ref.sum(1, dtype=np.int64)
        out_counts = out.sum(1, dtype=np.int64)
        same = ref == out
        same_train = same.all(1)
        self.pairs += ref_counts.size
        self.step_matches += int(same.sum())
        self.count_matches += int((ref_counts == out_counts).sum())
        self.train_matches += int(same_train.sum())
        self.reference_spikes += int(ref_counts.sum())
        self.backend_spikes += int(out_counts.sum())
        self.abs_count_difference += int(np.abs(ref_counts - out_counts).sum())
        self.count_pairs.add(ref_counts, out_counts)
        if same_train.all():
            return None
        bs, ts, ns = np.nonzero(ref != out)
        first = np.lexsort((ns, bs, ts))[0]          # earliest step, then sample, then neuron
        b, t, n = int(bs[first]), int(ts[first]), int(ns[first])
        return Divergence(layer=self.name, sample=sample_offset + int(b),
                          neuron=tuple(int(i) for i in np.unravel_index(n, self.shape)),
                          neuron_flat=int(n), time_step=int(t),
                          reference=int(ref[b, t, n]), backend=int(out[b, t, n]))

    def merge(self, other: "LayerComparison") -> None:
        """Fold in the totals of the same layer over other samples (another
        rank's shard): the figures are sums, so any split gives the same."""
        if (other.name, other.shape, other.timesteps) != (self.name, self.shape, self.timesteps):
            raise ValueError(f"layer {self.name} {self.shape}, T={self.timesteps}: cannot merge "
                             f"{other.name} {other.shape}, T={other.timesteps}")
        for total in MERGED_LAYER_TOTALS:
            setattr(self, total, getattr(self, total) + getattr(other, total))
        self.count_pairs.merge(other.count_pairs)

    def to_dict(self) -> dict:
        return {"neurons": self.neurons, "shape": list(self.shape),
                "match_fraction": self.match_fraction, "identical_trains": self.identical_trains,
                "spike_agreement": self.spike_agreement, "count_ratio": self.count_ratio,
                "count_difference": self.count_difference, "abs_count_difference": self.abs_count_difference,
                "reference_spikes": self.reference_spikes, "backend_spikes": self.backend_spikes,
                "reference_rate": self.reference_rate, **self.count_pairs.to_json()}


@dataclass
class BackendComparison:
    """One backend against the reference, over every layer and batch."""

    backend: str
    precision: str
    layers: dict[str, LayerComparison]
    exact_required: bool
    seconds: float = 0.0
    samples: int = 0
    prediction_matches: int = 0
    predicted: int = 0               # samples with predictions on both sides (an output layer of classes)
    correct: int = 0
    labelled: int = 0                # samples with a label
    first_divergence: Divergence | None = None
    divergence_trains: tuple | None = None   # (reference, backend) spikes of that sample's layer, (T, ...)
    divergence_batch_index: int | None = None

    @classmethod
    def start(cls, backend: str, precision: str, shapes: dict[str, tuple[int, ...]],
              timesteps: int) -> "BackendComparison":
        return cls(backend=backend, precision=precision, exact_required=precision == "float64",
                   layers={n: LayerComparison(n, tuple(s), timesteps) for n, s in shapes.items()})

    def add(self, reference: dict, backend: dict, labels: np.ndarray | None, reference_pred: np.ndarray | None,
            backend_pred: np.ndarray | None, sample_offset: int) -> None:
        """Fold in one batch. ``labels``: None without a data set (a bare
        graph); the predictions: None when the output is not a layer of
        classes."""
        for name in self.layers:
            d = self.layers[name].add(reference[name], backend[name], sample_offset)
            if d is not None and (self.first_divergence is None or
                                  self.divergence_key(d) < self.divergence_key(self.first_divergence)):
                self.first_divergence = d
                b = d.sample - sample_offset
                self.divergence_trains = (reference[name][b], backend[name][b])
                self.divergence_batch_index = b
        self.samples += len(next(iter(reference.values())))
        if reference_pred is not None and backend_pred is not None:
            self.predicted += len(reference_pred)
            self.prediction_matches += int((reference_pred == backend_pred).sum())
            if labels is not None:
                self.labelled += len(labels)
                self.correct += int((backend_pred == labels).sum())

    def divergence_key(self, d: Divergence) -> tuple:
        """Which divergence comes first: layer in data-flow order, then step,
        sample and neuron."""
        return d.key(list(self.layers).index(d.layer))

    def merge(self, other: "BackendComparison") -> None:
        """Fold in the same backend's comparison over other samples (another
        rank's shard, its samples numbered globally): the totals add up and
        the first divergence is the earlier of the two, as if one process had
        compared every sample (the seconds add up too: time spent, not wall
        time)."""
        if list(other.layers) != list(self.layers):
            raise ValueError(f"{self.backend}: cannot merge a comparison of layers {', '.join(other.layers)}")
        for name, layer in self.layers.items():
            layer.merge(other.layers[name])
        for total in ("seconds", "samples", "prediction_matches", "predicted", "correct", "labelled"):
            setattr(self, total, getattr(self, total) + getattr(other, total))
        d = other.first_divergence
        if d is not None and (self.first_divergence is None or
                              self.divergence_key(d) < self.divergence_key(self.first_divergence)):
            self.first_divergence = d
            self.divergence_trains = other.divergence_trains
            self.divergence_batch_index = other.divergence_batch_index

    @property
    def counts_equal(self) -> bool:
        return all(layer.match_fraction == 1.0 for layer in self.layers.values())

    @property
    def bit_exact(self) -> bool:
        """Every spike train of every layer identical, not only the counts."""
        return self.counts_equal and all(layer.identical_trains == 1.0 for layer in self.layers.values())

    @property
    def equivalent(self) -> bool:
        """Float backends must match exactly; fixed-point ones are reported."""
        return self.counts_equal or not self.exact_required

    @property
    def prediction_agreement(self) -> float | None:
        """Share of samples whose output class (most output spikes) is the
        reference's; None without an output layer of classes."""
        if not self.predicted:
            return 1.0 if self.samples == 0 else None
        return self.prediction_matches / self.predicted

    @property
    def accuracy(self) -> float | None:
        if not self.labelled:
            return 0.0 if self.samples == 0 else None
        return self.correct / self.labelled

    def to_dict(self) -> dict:
        return {"precision": self.precision, "exact_required": self.exact_required,
                "equivalent": self.equivalent, "counts_equal": self.counts_equal,
                "prediction_agreement": self.prediction_agreement, "accuracy": self.accuracy,
                "seconds": round(self.seconds, 3),
                "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
                "layers": {n: layer.to_dict() for n, layer in self.layers.items()}}
