"""Why a peer's spikes differ from fer2neuro's: each candidate cause is a
hypothesis that is *tested*, not guessed.

The first layer where a peer diverges receives, by definition, the same
spikes from the layers before it as fer2neuro's reference does. So its input
current is known (the reference's, summed over the layer's input edges), and
each convention can be tried on that layer alone: step the layer with NIR's
equations changed in one respect (subtract reset, ``>=``, several spikes per
step, spike before input, the reset one step late, exponential decay, the
peer's dt) and count how many neuron-steps then equal the peer's. A
convention that makes the layer exact is the cause; one that only improves
it is reported with its figure. Two conventions are whole-graph matters and
are tried on the whole graph: the flatten order (an Affine after a Flatten
read channels-last) and the peer's full dialect (nirgraph/dialects).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import nir
import numpy as np

from fer2neuro.nirgraph.flat import FlatGraph


@dataclass(frozen=True)
class Knobs:
    """NIR's neuron dynamics with each convention a peer may change."""

    reset: str = "zero"              # "zero" (to v_reset) or "subtract" (v - v_threshold)
    reset_delay: bool = False        # the reset of a spike at t applied at t + 1
    threshold: str = ">"             # ">" or ">="
    spikes_per_step: str = "one"     # "one" or "many" (floor(v / threshold), each subtracting it)
    order: str = "input first"       # or "spike first": the spike decided from v[t-1], then the input added
    decay: str = "euler"             # or "exp": v_leak + (v - v_leak) e^(-dt/tau) + (1 - e^(-dt/tau)) r I


NIR_KNOBS = Knobs()
# cause name (dialects.base.CAUSES) -> the one-convention change it tests
SINGLE_CHANGES = {
    "reset": Knobs(reset="subtract"),
    "reset_delay": Knobs(reset_delay=True),
    "threshold": Knobs(threshold=">="),
    "spikes_per_step": Knobs(spikes_per_step="many", reset="subtract", threshold=">="),
    "order": Knobs(order="spike first"),
    "decay": Knobs(decay="exp"),
}


def _params(node) -> dict[str, np.ndarray]:
    def get(name, default):
        value = getattr(node, name, None)
        return np.asarray(default if value is None else value, dtype=np.float64)
    return {"r": get("r", 1.0), "tau": get("tau", get("tau_mem", np.inf)), "v_leak": get("v_leak", 0.0),
            "thr": get("v_threshold", 1.0), "v_reset": get("v_reset", 0.0), "tau_syn": get("tau_syn", np.inf),
            "w_in": get("w_in", 1.0)}


def _integrate(v, current, p, dt, knobs: Knobs):
    if not np.isfinite(p["tau"]).all():                      # IF: no leak
        return v + dt * p["r"] * current
    if knobs.decay == "exp":
        a = np.exp(-dt / p["tau"])
        return p["v_leak"] + (v - p["v_leak"]) * a + (1.0 - a) * p["r"] * current
    return v + (dt / p["tau"]) * (p["v_leak"] - v + p["r"] * current)


def _fire(v, p, knobs: Knobs):
    above = v >= p["thr"] if knobs.threshold == ">=" else v > p["thr"]
    if knobs.spikes_per_step == "many":
        return np.where(above, np.floor(v / p["thr"]), 0.0)
    return above.astype(np.float64)


def _reset(v, spikes, p, knobs: Knobs):
    if knobs.reset == "subtract":
        return v - spikes * p["thr"]
    return np.where(spikes > 0, p["v_reset"], v)


def step_layer(node, currents: np.ndarray, dt: float, knobs: Knobs) -> np.ndarray:
    """An IF, LIF or CubaLIF layer on ``currents`` (B, T, *shape) with
    ``knobs``' dynamics -> spikes (B, T, *shape), counts where several."""
    p = {k: np.broadcast_to(a, currents.shape[2:]) for k, a in _params(node).items()}
    cuba = isinstance(node, nir.CubaLIF)
    v = np.zeros(currents.shape[:1] + currents.shape[2:])
    i_syn = np.zeros_like(v)
    pending = np.zeros_like(v)
    out = np.zeros(currents.shape)
    for t in range(currents.shape[1]):
        current = currents[:, t]
        if cuba:
            i_syn = i_syn + (dt / p["tau_syn"]) * (p["w_in"] * current - i_syn)
            current = i_syn
        if knobs.order == "spike first":
            spikes = _fire(v, p, knobs)
            v = _integrate(_reset(v, spikes, p, knobs), current, p, dt, knobs)
        elif knobs.reset_delay:
            v = _integrate(_reset(v, pending, p, knobs), current, p, dt, knobs)
            spikes = pending = _fire(v, p, knobs)
        else:
            v = _integrate(v, current, p, dt, knobs)
            spikes = _fire(v, p, knobs)
            v = _reset(v, spikes, p, knobs)
        out[:, t] = spikes
    return out


def layer_current(flat: FlatGraph, layer: str, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The sum of a layer's inputs in the reference (None when one input was
    not recorded, or the layer is on a cycle)."""
    sources = flat.predecessors(layer)
    if not sources or any(src not in outputs for src in sources):
        return None
    return sum(np.asarray(outputs[src], dtype=np.float64) for src in sources)


def equal_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.asarray(a, dtype=np.float64) == np.asarray(b, dtype=np.float64)))


@dataclass
class CauseTest:
    cause: str
    change: str            # what was changed, in words
    equal: float           # share of the layer's neuron-steps then equal to the peer's

    def to_dict(self) -> dict:
        return {"cause": self.cause, "change": self.change, "equal": round(self.equal, 6)}


def _changes(knobs: Knobs) -> str:
    """What ``knobs`` change from NIR's dynamics, in words."""
    return ", ".join(f"{k} {v}" for k, v in vars(knobs).items() if getattr(NIR_KNOBS, k) != v)


def test_layer_causes(flat: FlatGraph, layer: str, outputs: dict[str, np.ndarray], peer_spikes: np.ndarray,
                      dt: float, peer_dt: float | None) -> list[CauseTest]:
    """Each single convention, and the peer's dt, tried on ``layer`` with the
    reference's input current, then their greedy combination. Empty when
    the layer is not an IF, LIF or CubaLIF or its input is unknown."""
    node = flat.nodes[layer]
    if not isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
        return []
    currents = layer_current(flat, layer, outputs)
    if currents is None or currents.shape != peer_spikes.shape:
        return []

    @functools.cache            # the greedy combination tries the single changes again
    def score(knobs: Knobs, step_dt: float) -> float:
        return equal_fraction(step_layer(node, currents, step_dt, knobs), peer_spikes)

    tests = [CauseTest(cause, _changes(knobs), score(knobs, dt)) for cause, knobs in SINGLE_CHANGES.items()]
    if peer_dt is not None and peer_dt != dt:
        tests.append(CauseTest("dt", f"dt {peer_dt:g} instead of {dt:g}", score(NIR_KNOBS, peer_dt)))
    combined = combine_causes(score, dt, peer_dt)
    if combined is not None:
        tests.append(combined)
    return tests


def _merge(a: Knobs, b: Knobs) -> Knobs:
    """``a`` with every convention ``b`` changes from NIR's."""
    return Knobs(**{k: (v if v != getattr(NIR_KNOBS, k) else getattr(a, k)) for k, v in vars(b).items()})


def combine_causes(score, dt: float, peer_dt: float | None) -> CauseTest | None:
    """Several conventions at once, chosen greedily: the change that brings
    the layer closest to the peer first, then the one that improves most on
    that, until the layer is exact or nothing improves it. Reported when it
    takes two changes or more. ``score(knobs, dt)``: the layer's share of
    neuron-steps equal to the peer's with those dynamics."""
    chosen: list[str] = []
    knobs, step_dt = NIR_KNOBS, dt
    best = score(knobs, dt)
    while best < 1.0:
        trials = {cause: (score(_merge(knobs, change), step_dt), change)
                  for cause, change in SINGLE_CHANGES.items() if cause not in chosen}
        if peer_dt is not None and peer_dt != dt and "dt" not in chosen:
            trials["dt"] = (score(knobs, peer_dt), None)
        if not trials:
            break
        cause, (equal, change) = max(trials.items(), key=lambda item: item[1][0])
        if equal <= best:
            break
        chosen.append(cause)
        best = equal
        if change is None:
            step_dt = peer_dt
        else:
            knobs = _merge(knobs, change)
    if len(chosen) < 2:
        return None
    words = _changes(knobs) + (f", dt {step_dt:g}" if step_dt != dt else "")
    return CauseTest(" + ".join(chosen), words, best)


def channels_last_flatten(graph: nir.NIRGraph) -> nir.NIRGraph | None:
    """A copy of ``graph`` whose Affine/Linear nodes after a Flatten of a
    (C, H, W) tensor read it channels last (H, W, C), as a JAX/Flax model
    flattens; None when the graph has no such Flatten."""
    import copy

    out = copy.deepcopy(graph)
    changed = False
    for src, dst in out.edges:
        flat_node, dense = out.nodes.get(src), out.nodes.get(dst)
        if not isinstance(flat_node, nir.Flatten) or not isinstance(dense, (nir.Affine, nir.Linear)):
            continue
        shape = np.asarray(flat_node.input_type.get("input", ())).reshape(-1)
        if shape.size != 3:
            continue
        c, h, w = (int(s) for s in shape)
        weight = np.asarray(dense.weight)
        if weight.shape[-1] != c * h * w:
            continue
        # column k of a channels-last flatten is (h, w, c); NIR's column for that input is (c, h, w)
        order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        new = np.empty_like(weight)
        new[:, order] = weight
        dense.weight = new
        changed = True
    return out if changed else None


__all__ = ["CauseTest", "Knobs", "NIR_KNOBS", "SINGLE_CHANGES", "channels_last_flatten", "equal_fraction",
           "layer_current", "step_layer", "test_layer_causes"]
