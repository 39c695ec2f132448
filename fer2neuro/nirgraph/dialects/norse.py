"""The Norse dialect: NIR files written by Norse 1.1.0's ``to_nir``
(norse/torch/utils/export_nir.py), run as the exporting network ran.

What the exporter writes (``_extract_norse_module``, dt = 0.001 by default,
written nowhere; tensors are Norse's ``p`` parameters as they are):

* ``LIFBoxCell`` -> ``LIF(tau = dt / tau_mem_inv, v_threshold = v_th,
  v_leak, r = 1)``, no v_reset (NIR's default 0). NIR's tau is τ = 1 /
  tau_mem_inv; Norse writes τ·dt.
* ``LIFCell`` -> ``CubaLIF(tau_mem = dt / tau_mem_inv, tau_syn = dt /
  tau_syn_inv, v_threshold, v_leak, r = 1)``, no w_in (NIR's default 1),
  no v_reset.
* ``LIBoxCell`` -> ``LI(tau = dt / tau_mem_inv, v_leak, r = 1)``;
  ``IAFCell`` -> ``IF(r = 1, v_threshold = v_th)``, no v_reset.
* ``Linear`` -> Affine (a zero bias where it has none), ``Conv2d`` ->
  Conv2d. Nothing else (Flatten, pooling, recurrent cells: no node).

How Norse steps them (norse/torch/functional), which the step functions
below repeat operation for operation:

* LIFBox (lif_box.py:95-101): ``v' = v + dt * tau_mem_inv * (I + v_leak -
  v)``, ``z = H(v' - v_th)`` with H(x) = x > 0, ``v = (1 - z) v' + z
  v_reset``. That is NIR's LIF at τ = 1 / tau_mem_inv.
* LIFCell (lif.py:335-345, lif_feed_forward_step): ``i' = i + I``; ``v' = v + dt *
  tau_mem_inv * ((v_leak - v) + i')``; ``i = i' - dt * tau_syn_inv * i'``;
  spike and reset as above. The current jumps by the input and decays after
  the membrane has used it: NIR's CubaLIF (whose membrane takes the current
  of the same step) with ``w_in = tau_syn / dt``, so that ``dt / tau_syn *
  w_in = 1``.
* IAF (iaf.py:93-97): ``v' = v + I`` whatever dt: NIR's IF with ``r = 1 / dt``.
* LIBox: ``v' = v + dt * tau_mem_inv * ((v_leak - v) + I)``: NIR's LI.

The rewrite gives every field NIR's meaning at the dt the graph runs at (its
metadata's, else 0.001): tau -> tau / dt (recovered bit for bit: the float
tau_mem_inv with ``fl(fl(1 / inv) * 0.001)`` equal to the file's value, as
torch computes ``0.001 / tensor``, then the tau whose ``dt / tau`` is
exactly Norse's ``dt * tau_mem_inv``), CubaLIF's w_in -> ``w_in * tau_syn /
dt`` and IF's r -> ``r / dt`` (each the float that makes the step's scale
exactly 1 where Norse's is). The rewritten graph is NIR; the steps only keep
Norse's order of float operations.

Not in the file and not expressible here: Norse starts v at v_leak (the
cells' ``initial_state``), fer2neuro's targets at 0 (the same for Norse's
default v_leak = 0); a v_reset other than 0 is not written.
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects.base import Dialect, rewrite_nodes
from fer2neuro.nirgraph.dialects.numeric import f64, nearest_solution

EXPORT_DT = 1e-3                 # to_nir's and from_nir's default dt, written nowhere
NORSE_WRITES = (nir.Input, nir.Output, nir.Affine, nir.Conv2d, nir.LIF, nir.CubaLIF, nir.LI, nir.IF)


def _tau(tau_file, dt: float) -> np.ndarray:
    """The file's tau = 0.001 / tau_mem_inv -> the NIR tau whose ``dt / tau``
    equals Norse's ``dt * tau_mem_inv`` bit for bit."""
    tau_file = f64(tau_file)
    with np.errstate(all="ignore"):
        inv, _ = nearest_solution(lambda v: np.reciprocal(v) * EXPORT_DT, tau_file, EXPORT_DT / tau_file)
        coefficient = dt * inv                             # Norse's step: dt * p.tau_mem_inv
        tau, _ = nearest_solution(lambda t: dt / t, coefficient, tau_file / EXPORT_DT)
    return tau


def _unit(scale, per_step) -> np.ndarray:
    """The field value whose ``value / per_step`` is ``scale``: exactly
    ``per_step`` where ``scale`` is 1."""
    scale, per_step = f64(scale), f64(per_step)
    return np.where(scale == 1.0, per_step, scale * per_step)


def _rewrite_node(node, dt: float):
    meta = dict(node.metadata or {})
    if isinstance(node, nir.LIF):
        return nir.LIF(tau=_tau(node.tau, dt), r=f64(node.r), v_leak=f64(node.v_leak),
                       v_threshold=f64(node.v_threshold), v_reset=f64(node.v_reset), metadata=meta)
    if isinstance(node, nir.LI):
        return nir.LI(tau=_tau(node.tau, dt), r=f64(node.r), v_leak=f64(node.v_leak), metadata=meta)
    if isinstance(node, nir.CubaLIF):
        tau_syn = _tau(node.tau_syn, dt)
        w_in = np.broadcast_to(_unit(node.w_in, tau_syn / dt), np.shape(node.v_threshold)).copy()
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=_tau(node.tau_mem, dt), r=f64(node.r),
                           v_leak=f64(node.v_leak), v_threshold=f64(node.v_threshold),
                           v_reset=f64(node.v_reset), w_in=w_in, metadata=meta)
    if isinstance(node, nir.IF):
        r_file = f64(node.r)
        r, _ = nearest_solution(lambda r: dt * r, r_file, r_file / dt)   # NIR's dt * r == Norse's 1
        return nir.IF(r=r, v_threshold=f64(node.v_threshold), v_reset=f64(node.v_reset), metadata=meta)
    return node


def rewrite(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Norse's fields -> NIR's (module docstring), at the graph's dt (its
    metadata's, else 0.001)."""
    return rewrite_nodes(graph, _rewrite_node, EXPORT_DT)


# --- the neuron steps: Norse's arithmetic, operation for operation -----------

def _lif_box(state, current, p, dt):
    """LIFBoxCell (functional/lif_box.py, lif_box_feed_forward_step)."""
    v = state["v"]
    v = v + (dt / p.tau) * (p.r * current + p.v_leak - v)
    spikes = (v - p.v_threshold) > 0
    return spikes, {"v": eq.where(spikes, p.v_reset, v)}


def _lif_cell(state, current, p, dt):
    """LIFCell (functional/lif.py, lif_feed_forward_step): the current jumps
    by the input, the membrane integrates it, then it decays."""
    i_syn, v = state["i"], state["v"]
    i_syn = i_syn + current * (p.w_in / (p.tau_syn / dt))
    v = v + (dt / p.tau_mem) * ((p.v_leak - v) + p.r * i_syn)
    i_syn = i_syn + -((dt / p.tau_syn) * i_syn)
    spikes = (v - p.v_threshold) > 0
    return spikes, {"i": i_syn, "v": eq.where(spikes, p.v_reset, v)}


NEURONS = {
    nir.LIF: eq.Neuron(("tau", "r", "v_leak", "v_threshold", "v_reset"), ("v",), True, _lif_box),
    nir.CubaLIF: eq.Neuron(("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"), ("i", "v"),
                           True, _lif_cell),
}


# --- detect ------------------------------------------------------------------

def _nodes(graph: nir.NIRGraph):
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            yield from _nodes(node)
        else:
            yield node


def detect(graph: nir.NIRGraph) -> bool:
    """A file as Norse's exporter writes it: no metadata, only the node types
    it writes (Affine, never Linear; no Flatten, no pooling), every neuron
    with r = 1 (and CubaLIF w_in = 1), and time constants written as τ·dt:
    every tau below 0.001 (τ below 1 s), at least one leaky neuron (an
    IF-only file shows nothing of Norse)."""
    meta = dict(getattr(graph, "metadata", None) or {})
    if meta.get("format") in ("fer2neuro.nir", b"fer2neuro.nir") or "dt" in meta:
        return False
    nodes = list(_nodes(graph))
    if any(not isinstance(n, NORSE_WRITES) for n in nodes):
        return False
    leaky = [n for n in nodes if isinstance(n, (nir.LIF, nir.LI, nir.CubaLIF))]
    if not leaky:
        return False
    for n in nodes:
        if isinstance(n, (nir.LIF, nir.LI, nir.CubaLIF, nir.IF)) and not np.all(f64(n.r) == 1):
            return False
        if isinstance(n, nir.CubaLIF) and not np.all(f64(n.w_in) == 1):
            return False
    for n in leaky:
        taus = [n.tau_mem, n.tau_syn] if isinstance(n, nir.CubaLIF) else [n.tau]
        if not all(np.all((f64(t) > 0) & (f64(t) < EXPORT_DT)) for t in taus):
            return False
    return True


DIALECT = Dialect(
    name="norse",
    writer="Norse 1.1.0 (to_nir)",
    default_dt=EXPORT_DT,
    neurons=NEURONS,
    rounding_only=frozenset(NEURONS),          # NIR's LIF and CubaLIF after the rewrite, in Norse's operation order
    conventions={
        "dt": "dt = 0.001 (to_nir's and from_nir's default), written nowhere",
        "fields": "tau, tau_mem, tau_syn written as tau * dt (dt / tau_mem_inv); CubaLIF (LIFCell) w_in "
                  "not written: its current jumps by the input (w_in = tau_syn / dt); IF's r = 1 means "
                  "v += I per step at any dt; v_reset not written",
    },
    rewrite=rewrite,
    detect=detect,
)
