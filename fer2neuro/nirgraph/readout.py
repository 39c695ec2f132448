"""How a class is read from the output layer (SPEC §1 as amended by issue 26),
for the trained model and for every backend alike:

1. the class whose output neuron spiked most over the T steps;
2. among classes tied at that count (on a face where no output neuron
   fired, all of them), the one whose output neuron ends with the highest
   membrane potential;
3. then the lowest index.

Before rule 2 a face that drove no output neuron over threshold was "class 0
because nothing fired", and a network whose output layer fell silent looked
like a constant classifier. The membrane says which class came closest.

The membrane is worked out here from the output layer's input current and
its recorded spikes, the same way for every backend: ``v' = v + (I - v) /
tau`` from ``v = 0`` (SPEC §2's LIF), set to 0 in each step where the neuron
spiked. The spikes come from the backend, so a backend's own rounding of
the threshold test cannot make this disagree with its spike counts, and two
backends with equal spikes (what ``verify`` proves) decide equally. The
current is the last linear layer applied to the recorded spikes of the
layer before it: the torch model's own current in training and
``evaluate``, and in float64 from the graph's weights for the exported
targets (``graph_membrane``), fixed-point targets included, whose integer
membranes are in another unit.

Works on numpy arrays and torch tensors alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fer2neuro.errors import DataError
from fer2neuro.nirgraph.equations import where


def output_membrane(currents, spikes, tau: float):
    """The output neurons' membrane after the last step, (B, K), from their
    input currents and spikes, both (T, B, K)."""
    v = currents[0] * 0
    for t in range(currents.shape[0]):
        v = v + (currents[t] - v) / tau
        v = where(spikes[t] > 0, v * 0, v)
    return v


def decide(counts, membrane=None):
    """Each face's class from its output spike counts (B, K) and, to break
    ties, its output membrane (B, K) or None (ties to the lowest index)."""
    if membrane is None:
        return counts.argmax(-1)
    if isinstance(counts, np.ndarray):
        best = counts.max(-1, keepdims=True)
    else:
        best = counts.amax(-1, keepdim=True)
    return where(counts == best, membrane, membrane * 0 - np.inf).argmax(-1)


@dataclass(frozen=True)
class Readout:
    """What the membrane rule needs of an exported network, in float64: the
    output neuron node, the recorded node whose spikes feed it through one
    affine layer, that layer's weight and bias, and the output LIF's
    parameters (NIR's: ``v' = v + dt / tau (v_leak - v + r I)``, reset to
    ``v_reset``). Small (K x N numbers), so an ONNX file carries it in its
    metadata (``to_json``) and decides as the graph it came from does."""

    neuron: str
    source: str
    weight: np.ndarray                 # (K, N)
    bias: np.ndarray                   # (K,)
    tau: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    v_reset: np.ndarray

    RULE = "most spikes, then the highest output membrane, then the lowest index"

    @classmethod
    def of_graph(cls, graph) -> "Readout | None":
        """The readout of a NIR graph with a single LIF output fed by one
        affine (or linear) layer, else None."""
        import nir

        from fer2neuro.nirgraph.flat import flatten_graph

        flat = flatten_graph(graph)
        if len(flat.outputs) != 1:
            return None
        neuron = _single(flat.predecessors(flat.outputs[0]))
        synapse = _single(flat.predecessors(neuron)) if neuron else None
        source = _single(flat.predecessors(synapse)) if synapse else None
        while source is not None and isinstance(flat.nodes[source], nir.Flatten):
            source = _single(flat.predecessors(source))
        if source is None or not isinstance(flat.nodes[neuron], nir.LIF) \
                or not isinstance(flat.nodes[synapse], (nir.Affine, nir.Linear)):
            return None
        lif, affine = flat.nodes[neuron], flat.nodes[synapse]
        weight = np.asarray(affine.weight, dtype=np.float64)
        bias = np.asarray(getattr(affine, "bias", np.zeros(len(weight))), dtype=np.float64)
        params = {k: np.asarray(getattr(lif, k), dtype=np.float64).reshape(-1) for k in ("tau", "r", "v_leak", "v_reset")}
        return cls(neuron, source, weight, bias, **params)

    def to_json(self) -> str:
        return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> "Readout":
        """From ``to_json``'s text; DataError if it is not a consistent,
        finite readout (the text comes from a file)."""
        try:
            d = json.loads(text)
            arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("weight", "bias", "tau", "r", "v_leak",
                                                                      "v_reset")}
            names = str(d["neuron"]), str(d["source"])
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"the model's readout metadata is not readable ({type(exc).__name__}: {exc})") from None
        k = arrays["weight"].shape[0] if arrays["weight"].ndim == 2 else -1
        if k < 1 or any(a.ndim != 1 or len(a) not in (1, k) for n, a in arrays.items() if n != "weight"):
            raise DataError("the model's readout metadata has inconsistent shapes")
        if not all(np.isfinite(a).all() for a in arrays.values()) or not (arrays["tau"] > 0).all():
            raise DataError("the model's readout metadata holds non-finite values or a tau <= 0")
        return cls(*names, **arrays)

    def membrane(self, recorded: dict[str, np.ndarray], dt: float) -> np.ndarray | None:
        """The output membrane after the last step (B, K) from a recording
        (node -> (B, T, ...)), or None if the source was not recorded."""
        from fer2neuro.nirgraph.equations import leaky_integrator_step

        if self.source not in recorded or self.neuron not in recorded:
            return None
        before = recorded[self.source]
        before = before.reshape(*before.shape[:2], -1).astype(np.float64)         # (B, T, N)
        currents = before @ self.weight.T + self.bias
        own = recorded[self.neuron].reshape(*before.shape[:2], -1)
        v = np.zeros(own.shape[::2])
        for t in range(currents.shape[1]):
            v = leaky_integrator_step(v, currents[:, t], self.tau, self.r, self.v_leak, dt)
            v = np.where(own[:, t] > 0, self.v_reset, v)
        return v


def spike_counts(output: np.ndarray) -> np.ndarray:
    """Each face's output spike count per class (B, K) from a recording's
    output spikes (B, T, ...)."""
    return output.reshape(*output.shape[:2], -1).sum(1, dtype=np.int64)


def classify(output: np.ndarray, readout: Readout | None, recorded: dict[str, np.ndarray],
             dt: float) -> tuple[np.ndarray, str]:
    """Each face's class from a recording's output spikes (B, T, K) by the
    rules above, and the rule applied (ties to the lowest index when there
    is no readout to work the membrane out from)."""
    counts = spike_counts(output)
    membrane = readout.membrane(recorded, dt) if readout is not None else None
    if membrane is None:
        return decide(counts), "most spikes, then the lowest index (no output membrane to break ties with)"
    return decide(counts, membrane), Readout.RULE


def _single(names):
    return names[0] if names and len(names) == 1 else None
