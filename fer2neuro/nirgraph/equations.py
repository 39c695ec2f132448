"""Forward-Euler discretisation of NIR's neuron equations: the one place
the NIR reference target (and the ONNX lowering, which must equal it) takes
its dynamics from. Pure functions of the state and the input of one step;
the caller keeps the state.

With time step ``dt``, for input ``I[t]`` (the sum of every incoming edge)::

    I        (integrator)   v[t] = v[t-1] + dt * r * I[t]                   -> v[t]
    IF                      v'   = v[t-1] + dt * r * I[t]
    LI                      v[t] = v[t-1] + dt / tau * (v_leak - v[t-1] + r * I[t])   -> v[t]
    LIF                     v'   = v[t-1] + dt / tau * (v_leak - v[t-1] + r * I[t])
    CubaLI / CubaLIF        i[t] = i[t-1] + dt / tau_syn * (w_in * I[t] - i[t-1])
                            v'   = v[t-1] + dt / tau_mem * (v_leak - v[t-1] + r * i[t])
    firing (IF, LIF, CubaLIF)   s[t] = 1 if v' > v_threshold else 0
                                v[t] = v_reset if s[t] else v'             -> s[t]
    Threshold (stateless)   s[t] = 1 if I[t] > threshold else 0             -> s[t]

State starts at 0 (v and i). The comparison is strict ``>`` (SPEC §2) and the
reset is applied in the step that spikes. In the current-based neurons the
membrane integrates the synaptic current of the same step (i[t], not
i[t-1]), as Lava's and Loihi's CUBA neurons do. With dt = 1, r = 1,
v_leak = 0, an IF is SPEC's ``v' = v + I`` and a LIF SPEC's ``v' = v + (I - v)
/ tau``.

Every function takes numpy arrays (the NIR reference target) or torch
tensors (the ONNX lowering traces them into its graph), with the same
operations in the same order, so both compute the same roundings. With
tensors, pass ``dt`` as a 0-d tensor: torch rounds ``float / tensor`` as a
reciprocal and a product, numpy as one division.

``NEURONS`` describes each NIR neuron type (its parameters, its state, one
step function) and ``neuron_params`` reads and checks a node's parameters;
the reference and the ONNX lowering step every neuron through them, so a new
neuron type is added here and nowhere else.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import nir
import numpy as np

from fer2neuro.errors import TargetError
from fer2neuro.nirgraph.flat import FlatGraph


def where(condition, a, b):
    """np.where for arrays, torch.where for tensors (np.where would turn a
    tensor into an array, outside the traced graph)."""
    torch = sys.modules.get("torch")       # a tensor means torch is imported already
    if torch is not None and isinstance(condition, torch.Tensor):
        return torch.where(condition, a, b)
    return np.where(condition, a, b)


def fire(v_pre, v_threshold, v_reset):
    """Spike where the pre-reset membrane exceeds the threshold, then reset.
    -> (spikes as booleans, v after reset)"""
    spikes = v_pre > v_threshold
    return spikes, where(spikes, v_reset, v_pre)


def integrator_step(v, current, r, dt):
    return v + dt * r * current


def if_step(v, current, r, v_threshold, v_reset, dt):
    """-> (spikes, v after reset)"""
    return fire(integrator_step(v, current, r, dt), v_threshold, v_reset)


def leaky_integrator_step(v, current, tau, r, v_leak, dt):
    return v + (dt / tau) * (v_leak - v + r * current)


def lif_step(v, current, tau, r, v_leak, v_threshold, v_reset, dt):
    """-> (spikes, v after reset)"""
    return fire(leaky_integrator_step(v, current, tau, r, v_leak, dt), v_threshold, v_reset)


def synaptic_current_step(i_syn, current, tau_syn, w_in, dt):
    return i_syn + (dt / tau_syn) * (w_in * current - i_syn)


def cuba_li_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, w_in, dt):
    """-> (i_syn, v)"""
    i_syn = synaptic_current_step(i_syn, current, tau_syn, w_in, dt)
    return i_syn, leaky_integrator_step(v, i_syn, tau_mem, r, v_leak, dt)


def cuba_lif_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, v_threshold, v_reset, w_in, dt):
    """-> (spikes, i_syn, v after reset)"""
    i_syn, v_pre = cuba_li_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, w_in, dt)
    spikes, v = fire(v_pre, v_threshold, v_reset)
    return spikes, i_syn, v


def threshold(current, theta):
    return current > theta


# The registry: one uniform step per neuron type, ``step(state, current, p,
# dt) -> (output, new state)``, with ``state`` a dict by state variable and
# ``p`` an object with one attribute per parameter.

@dataclass(frozen=True)
class Neuron:
    """A NIR neuron type as the targets step it. Its output is the spikes
    (booleans) if it is ``spiking``, else its membrane v."""

    params: tuple[str, ...]            # the node's attributes the equations take
    states: tuple[str, ...]            # state variables, each starting at 0
    spiking: bool
    step: Callable
    # For a neuron that decides its spike from its state before it adds the
    # step's input (a dialect's, e.g. Spyx's): ``emit(state, p) -> spikes``,
    # the spikes ``step`` will emit this step. A recurrent edge that carries
    # the same step's spikes (Dialect.back_edge_t0 == "same step") needs it.
    emit: Callable | None = None


def _integrator(state, current, p, dt):
    v = integrator_step(state["v"], current, p.r, dt)
    return v, {"v": v}


def _if(state, current, p, dt):
    spikes, v = if_step(state["v"], current, p.r, p.v_threshold, p.v_reset, dt)
    return spikes, {"v": v}


def _leaky_integrator(state, current, p, dt):
    v = leaky_integrator_step(state["v"], current, p.tau, p.r, p.v_leak, dt)
    return v, {"v": v}


def _lif(state, current, p, dt):
    spikes, v = lif_step(state["v"], current, p.tau, p.r, p.v_leak, p.v_threshold, p.v_reset, dt)
    return spikes, {"v": v}


def _cuba_li(state, current, p, dt):
    i_syn, v = cuba_li_step(state["i"], state["v"], current, p.tau_syn, p.tau_mem, p.r, p.v_leak, p.w_in, dt)
    return v, {"i": i_syn, "v": v}


def _cuba_lif(state, current, p, dt):
    spikes, i_syn, v = cuba_lif_step(state["i"], state["v"], current, p.tau_syn, p.tau_mem, p.r, p.v_leak,
                                     p.v_threshold, p.v_reset, p.w_in, dt)
    return spikes, {"i": i_syn, "v": v}


NEURONS: dict[type, Neuron] = {
    nir.I: Neuron(("r",), ("v",), False, _integrator),
    nir.IF: Neuron(("r", "v_threshold", "v_reset"), ("v",), True, _if),
    nir.LI: Neuron(("tau", "r", "v_leak"), ("v",), False, _leaky_integrator),
    nir.LIF: Neuron(("tau", "r", "v_leak", "v_threshold", "v_reset"), ("v",), True, _lif),
    nir.CubaLI: Neuron(("tau_syn", "tau_mem", "r", "v_leak", "w_in"), ("i", "v"), False, _cuba_li),
    nir.CubaLIF: Neuron(("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"), ("i", "v"),
                        True, _cuba_lif),
}

# NIR nodes whose output is a spike train: the spiking neurons and the stateless Threshold.
SPIKING_TYPES = (*(t for t, neuron in NEURONS.items() if neuron.spiking), nir.Threshold)


def neuron_params(graph: FlatGraph, name: str, shape: tuple[int, ...],
                  neuron: Neuron | None = None) -> SimpleNamespace:
    """The node's parameters as float64 arrays that broadcast to ``shape``:
    those ``neuron`` steps with (a dialect's step, nirgraph/dialects), by
    default those of the node type's NIR equations."""
    node = graph.nodes[name]
    values = {}
    for p in (neuron or NEURONS[type(node)]).params:
        a = np.asarray(getattr(node, p), dtype=np.float64)
        try:
            if np.broadcast_shapes(a.shape, shape) != shape:
                raise ValueError
        except ValueError:
            raise TargetError(f"node {graph.describe(name)}: parameter {p} has shape {a.shape} but the "
                              f"node receives input of shape {shape}") from None
        if not np.isfinite(a).all():
            hint = (" (snnTorch's export_to_nir writes an IF neuron, beta = 1, as a LIF with tau = r = inf, "
                    "which has no Euler step; an IF is nir.IF)") if p in ("tau", "r") else ""
            raise TargetError(f"node {graph.describe(name)}: parameter {p} is not finite{hint}")
        values[p] = a
    for p in ("tau", "tau_mem", "tau_syn"):
        if p in values and not (values[p] > 0).all():
            raise TargetError(f"node {graph.describe(name)}: {p} must be > 0")
    return SimpleNamespace(**values)
