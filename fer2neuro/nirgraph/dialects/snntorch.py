"""The snnTorch dialect: NIR files written by snnTorch 1.0.0's
``export_to_nir`` (snntorch/export_nir.py), run as the exporting network ran.

What the exporter writes (snntorch/export_nir.py), with dt = 1e-4 hard-coded
and written nowhere (the graph's metadata stays empty):

* ``snn.Leaky(beta, threshold)`` -> ``LIF(tau = 1e-4 / (1 - beta), r = tau /
  1e-4, v_leak = 0, v_threshold, v_reset = 0)`` (export_nir.py:67-83). With
  NIR's forward Euler at dt = 1e-4 that is ``v' = beta v + I``: the decay and
  the unscaled input are NIR's. What the file cannot say is the reset:
  Leaky's defaults are ``reset_mechanism="subtract"`` and ``reset_delay=True``
  (snntorch/_neurons/leaky.py:150, 155), written as ``v_reset = 0``
  whatever the module does. beta = 1 (an IF) is written as tau = r = inf.
* ``snn.Synaptic(alpha, beta)`` -> ``CubaLIF(tau_syn = 1e-4 / (1 - alpha),
  tau_mem = 1e-4 / (1 - beta), r = tau_mem / 1e-4, w_in = tau_syn / 1e-4)``
  (export_nir.py:94-117), the same subtract reset one step late.
* ``snn.RLeaky`` -> ``<name>.lif`` (LIF as above) and ``<name>.w_rec`` (the
  recurrent Linear as an Affine, or a diagonal Linear for ``V``), with edges
  ``lif -> w_rec -> lif`` (export_nir.py:119-166). RLeaky adds
  ``recurrent(spk)`` with ``spk`` = 0 at t = 0, so the recurrent bias is
  added from the first step (rleaky.py:394-400).
* ``nn.Linear`` -> Affine or Linear, ``nn.Conv2d`` -> Conv2d (a zero bias if
  none), ``nn.AvgPool2d`` -> AvgPool2d with padding (0, 0) whatever the
  module's, ``nn.Flatten(s, e)`` -> ``Flatten(s - 1, e - 1)`` (NIR's count
  without the batch).

How snnTorch's Leaky steps (leaky.py:196-236, default settings), which the
step functions below repeat operation for operation::

    reset = H(v[t-1] - threshold)            # the previous step's spike, from its membrane
    v[t]  = beta * v[t-1] + I[t] - reset * threshold
    s[t]  = H(v[t] - threshold)              # H(x) = x > 0: a strict >

so a spike is decided in the step its threshold is crossed, and the
threshold is subtracted one step later, after that step's decay. NIR (and
SPEC §2) resets to v_reset in the same step.

The rewrite turns the file's fields into NIR's meaning at the dt the graph
runs at (its metadata's, else 1e-4) and makes the step's arithmetic give
exactly the exporting module's numbers: beta is recovered bit for bit from
tau (the float b with ``1e-4 / (1 - b) == tau``), tau is moved by a few ulps
so that ``1 - dt / tau`` is that beta, and where the file's input scale
``r * 1e-4 / tau`` is 1 (snnTorch's own files; its importer also reads it as
1, import_nir.py:254) r is set to ``tau / dt`` so that the step's
``r / (tau / dt)`` is exactly 1. A tau = r = inf neuron (beta = 1) becomes a
finite tau with ``1 - dt / tau == 1``.

Not expressible in a file: a Leaky built with ``reset_mechanism="zero"`` or
``reset_delay=False`` writes the same fields; this dialect runs snnTorch's
defaults.
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects.base import Dialect, rewrite_nodes
from fer2neuro.nirgraph.dialects.numeric import f64, nearest_solution

EXPORT_DT = 1e-4              # snnTorch's exporter and importer: dt = 1e-4, written nowhere
INFINITE_TAU_STEPS = 2.0 ** 60   # a beta = 1 neuron: tau = dt * 2**60, so that 1 - dt / tau == 1


def _decay_for(tau_file, dt: float):
    """(tau, beta): the file's tau = 1e-4 / (1 - beta) turned into the tau
    whose ``1 - dt / tau`` is exactly that beta (beta = 1 for tau = inf)."""
    tau_file = f64(tau_file)
    infinite = np.isinf(tau_file) & (tau_file > 0)
    with np.errstate(all="ignore"):
        finite_tau = np.where(infinite, 1.0, tau_file)
        beta0 = 1.0 - EXPORT_DT / finite_tau
        beta, _ = nearest_solution(lambda b: EXPORT_DT / (1.0 - b), finite_tau, beta0)
        tau, _ = nearest_solution(lambda t: 1.0 - dt / t, beta, finite_tau * (dt / EXPORT_DT))
    beta = np.where(infinite, 1.0, beta)
    tau = np.where(infinite, dt * INFINITE_TAU_STEPS, tau)
    return tau, beta


def _unit_scale(scale_file) -> np.ndarray:
    """Where the file's input scale (r dt / tau, or w_in dt / tau_syn, at dt =
    1e-4) is 1 as snnTorch writes it (its importer's np.allclose test,
    import_nir.py:254), or undefined (inf / inf)."""
    scale_file = f64(scale_file)
    with np.errstate(all="ignore"):
        return np.isnan(scale_file) | np.isclose(scale_file, 1.0)


def _scale_field(scale_file, tau, dt: float) -> np.ndarray:
    """The r (or w_in) whose ``r / (tau / dt)`` is the file's input scale:
    exactly 1 where snnTorch wrote 1."""
    per_step = f64(tau) / dt
    scale_file = f64(scale_file)
    return np.where(_unit_scale(scale_file), per_step, np.nan_to_num(scale_file) * per_step)


def _rewrite_node(node, dt: float):
    if isinstance(node, nir.LIF):
        tau_file, r_file = f64(node.tau), f64(node.r)
        tau, _ = _decay_for(tau_file, dt)
        with np.errstate(all="ignore"):
            scale = r_file * EXPORT_DT / tau_file
        shape = np.broadcast_shapes(tau.shape, np.shape(node.v_threshold))
        return nir.LIF(tau=np.broadcast_to(tau, shape).copy(),
                       r=np.broadcast_to(_scale_field(scale, tau, dt), shape).copy(),
                       v_leak=np.broadcast_to(f64(node.v_leak), shape).copy(),
                       v_threshold=np.broadcast_to(f64(node.v_threshold), shape).copy(),
                       v_reset=np.broadcast_to(f64(node.v_reset), shape).copy(),
                       metadata=dict(node.metadata or {}))
    if isinstance(node, nir.CubaLIF):
        tau_syn_file, tau_mem_file = f64(node.tau_syn), f64(node.tau_mem)
        tau_syn, _ = _decay_for(tau_syn_file, dt)
        tau_mem, _ = _decay_for(tau_mem_file, dt)
        with np.errstate(all="ignore"):
            w_scale = f64(node.w_in) * EXPORT_DT / tau_syn_file
            r_scale = f64(node.r) * EXPORT_DT / tau_mem_file
        shape = np.broadcast_shapes(tau_mem.shape, tau_syn.shape, np.shape(node.v_threshold))
        full = lambda a: np.broadcast_to(f64(a), shape).copy()   # noqa: E731
        return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem),
                           r=full(_scale_field(r_scale, tau_mem, dt)), v_leak=full(node.v_leak),
                           v_threshold=full(node.v_threshold), v_reset=full(node.v_reset),
                           w_in=full(_scale_field(w_scale, tau_syn, dt)), metadata=dict(node.metadata or {}))
    return node


def rewrite(graph: nir.NIRGraph) -> nir.NIRGraph:
    """snnTorch's fields -> NIR's, exact for the step below (module docstring),
    at the graph's dt (its metadata's, else 1e-4)."""
    return rewrite_nodes(graph, _rewrite_node, EXPORT_DT)


# --- the neuron steps: snnTorch's arithmetic, operation for operation ------

def _leaky(state, current, p, dt):
    """snn.Leaky, reset_mechanism="subtract", reset_delay=True (leaky.py:209-220, 238-243)."""
    v = state["v"]
    beta = 1.0 - dt / p.tau
    reset = (v - p.v_threshold) > 0                       # mem_reset(mem): the previous step's spike
    v = beta * v + current * (p.r / (p.tau / dt)) - reset * p.v_threshold
    spikes = (v - p.v_threshold) > 0                      # fire(mem): (mem - threshold) > 0
    return spikes, {"v": v}


def _synaptic(state, current, p, dt):
    """snn.Synaptic, reset_mechanism="subtract", reset_delay=True (synaptic.py, _base_sub)."""
    i_syn, v = state["i"], state["v"]
    alpha = 1.0 - dt / p.tau_syn
    beta = 1.0 - dt / p.tau_mem
    reset = (v - p.v_threshold) > 0
    i_syn = alpha * i_syn + current * (p.w_in / (p.tau_syn / dt))
    v = beta * v + i_syn * (p.r / (p.tau_mem / dt)) - reset * p.v_threshold
    spikes = (v - p.v_threshold) > 0
    return spikes, {"i": i_syn, "v": v}


NEURONS = {
    nir.LIF: eq.Neuron(("tau", "r", "v_threshold"), ("v",), True, _leaky),
    nir.CubaLIF: eq.Neuron(("tau_syn", "tau_mem", "r", "w_in", "v_threshold"), ("i", "v"), True, _synaptic),
}


# --- detect ------------------------------------------------------------------

def _neurons(graph: nir.NIRGraph):
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            yield from _neurons(node)
        elif type(node) in eq.NEURONS:
            yield node


def detect(graph: nir.NIRGraph) -> bool:
    """A file as snnTorch's exporter writes it: no metadata (in particular no
    dt and not fer2neuro's format), only LIF/CubaLIF neurons (it never
    writes IF or LI), each with v_leak = 0, v_reset = 0 and the input scale
    of dt = 1e-4 (r = tau / 1e-4, w_in = tau_syn / 1e-4), at least one with
    r > 1 (beta > 0), which no Norse or fer2neuro file has."""
    meta = dict(getattr(graph, "metadata", None) or {})
    if meta.get("format") in ("fer2neuro.nir", b"fer2neuro.nir") or "dt" in meta:
        return False
    neurons = list(_neurons(graph))
    if not neurons or any(not isinstance(n, (nir.LIF, nir.CubaLIF)) for n in neurons):
        return False
    big_r = False
    with np.errstate(all="ignore"):
        for n in neurons:
            if not (np.all(f64(n.v_leak) == 0) and np.all(f64(n.v_reset) == 0)):
                return False
            if isinstance(n, nir.LIF):
                tau, r = f64(n.tau), f64(n.r)
                scales = [r * EXPORT_DT / tau]
            else:
                tau, r = f64(n.tau_mem), f64(n.r)
                scales = [r * EXPORT_DT / tau, f64(n.w_in) * EXPORT_DT / f64(n.tau_syn)]
            if not all(np.all(_unit_scale(s)) for s in scales) or not np.all(tau > 0):
                return False
            big_r = big_r or bool(np.any(r > 1))
    return big_r


DIALECT = Dialect(
    name="snntorch",
    writer="snnTorch 1.0.0 (export_to_nir)",
    default_dt=EXPORT_DT,
    neurons=NEURONS,
    back_edge_t0="bias",
    conventions={
        "dt": "dt = 1e-4 s, hard-coded in the exporter and written nowhere (tau = 1e-4 / (1 - beta))",
        "reset": "reset by subtracting the threshold (Leaky's default reset_mechanism='subtract'), "
                 "written as v_reset = 0",
        "reset_delay": "the threshold subtracted one step after the spike, after that step's decay "
                       "(reset_delay=True: v[t] = beta v[t-1] + I[t] - thr s[t-1])",
        "recurrent_t0": "RLeaky adds its recurrent Linear's bias from t = 0 (recurrent(spk) with spk = 0)",
        "fields": "a Leaky with beta = 1 (an IF) written as a LIF with tau = r = inf; AvgPool2d padding "
                  "written as 0 whatever the module's",
    },
    rewrite=rewrite,
    detect=detect,
)
