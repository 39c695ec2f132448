"""The Rockpool dialect: NIR files written by Rockpool 3.1.0's ``to_nir``
(rockpool/nn/modules/torch/nir.py:235-326, through nirtorch 1.0 and nir
1.0.4), run as the exporting torch modules ran with their default settings.

What the exporter writes (``_extract_rockpool_module``, nir.py:235-298):

* ``LIFTorch`` -> ``CubaLIF(tau_syn, tau_mem, r = tau_mem e^(-dt/tau_mem) / dt,
  v_leak = 0, v_threshold)`` (nir.py:252-275); ``w_in`` is nir's default 1.
  dt (1e-3 s by default) is written nowhere but in r; the module's ``bias``
  is written as v_leak = 0 whatever it is; a recurrent module's ``w_rec``
  is not written at all: the file of a ``has_rec=True`` layer is a
  feed-forward CubaLIF.
* ``LIFNeuronTorch`` -> ``LIF(tau, r = tau e^(-dt/tau) / dt, v_leak = 0,
  v_threshold)`` (nir.py:283-296).
* ``LinearTorch`` -> ``Linear(weight.T)`` (``Affine`` with a bias).
* The graph's Input type is the exporter's sample, with its batch dimension:
  ``[1, N]`` for the default ``torch.zeros((1, size_in))`` (nir.py:319-321);
  the Output type likewise (``[1, 1, N]``).

How Rockpool steps (lif_torch.py:685-720, lif_neuron_torch.py:253-279),
everything in float32 (every parameter and state is cast with
``torch.as_tensor(x, dtype=torch.float)``, lif_torch.py:254, and the spike
function returns ``.float()``), which the steps below repeat operation for
operation, in float32::

    LIFTorch (CubaLIF):
        alpha = exp(-dt / tau_mem), beta = exp(-dt / tau_syn)   (tau_to_decay, lif_torch.py:128-129)
        i = i + I                      (the step's input joins the synaptic current)
        i = i + W_rec s[t-1]           (zero without recurrent weights)
        v = v * alpha;  i = i * beta   (both decay; the new input decays too)
        v = v + i + noise + bias       (noise_std 0)
    LIFNeuronTorch (LIF):
        v = v * alpha;  v = v + I;  v = v + noise + bias
    s = (v >= thr) * floor(v / thr), at most 2**16    (StepPWL, lif_torch.py:43-46)
    v = v - s * thr                                   (subtractive reset)

``-dt / tau`` is torch's ``tau.reciprocal() * -dt`` (a Python float over a
tensor) and the exponential is torch's float32 ``exp``; the steps compute
both with torch where it is importable (it is fer2neuro's own dependency).

``rewrite`` drops the batch dimension from the Input and Output types and,
where the graph gives no dt, recovers Rockpool's dt from r: with x = dt /
tau, r = tau e^(-x) / dt = e^(-x) / x, so x e^x = 1 / r, x = W(1 / r)
(Lambert's W) and dt = tau W(1 / r); rounded to 6 significant digits, it
goes into the metadata when every neuron gives the same one.

Not exact, whatever the dialect: the linear layers. Rockpool's LinearTorch
is a float32 matrix product (torch's sgemm, float32 accumulation); the nir
target's Affine/Linear is a float64 product (exact for spikes times float32
weights), rounded to float32 by the step. Where a float32 accumulation
rounds differently a membrane differs in its last float32 bit, which
changes a spike only when the membrane is that close to the threshold.
Files of recurrent layers have lost their recurrent weights and cannot be
run as Rockpool ran them.
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects.base import Dialect, port_shape
from fer2neuro.nirgraph.dialects.numeric import floor, is_tensor, loaded_torch

DEFAULT_DT = 1e-3                 # LIFTorch / LIFNeuronTorch default dt (lif_torch.py:172)
MAX_SPIKES = 2.0 ** 16            # StepPWL's max_spikes_per_dt default (lif_torch.py:168)


# --- array-generic float32 helpers (numpy arrays for the nir target, torch
# tensors for the ONNX lowering; numeric.py) ---------------------------------

def f32(x):
    """x in float32: Rockpool's arithmetic."""
    if is_tensor(x):
        return x.float()
    return np.asarray(x, dtype=np.float32)


def decay(dt, tau):
    """exp(-dt / tau) in float32 as Rockpool computes it: torch's
    ``tau.reciprocal() * -dt`` and torch's float32 exp (lif_torch.py:128-129,
    lif_neuron_torch.py:54-55)."""
    if is_tensor(tau) or is_tensor(dt):
        torch = loaded_torch()
        return torch.exp(f32(tau).reciprocal() * f32(-dt))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of fer2neuro
        return np.exp(np.float32(1.0) / f32(tau) * np.float32(-dt))
    return torch.exp(-float(dt) / torch.as_tensor(f32(tau))).numpy()


def step_pwl(v, threshold):
    """StepPWL's forward: floor(v / thr) spikes where v >= thr, clamped to
    2**16."""
    spikes = f32(eq.where(v >= threshold, floor(v / threshold), 0.0))
    return f32(eq.where(spikes > MAX_SPIKES, MAX_SPIKES, spikes))


# --- the neuron steps: Rockpool's arithmetic, in float32 ---------------------

def _lif_torch(state, current, p, dt):
    """LIFTorch (CubaLIF), no recurrent weights (the file has none), noise 0."""
    thr = f32(p.v_threshold)
    alpha, beta = decay(dt, p.tau_mem), decay(dt, p.tau_syn)
    i_syn = f32(state["i"]) + f32(current)
    v = f32(state["v"]) * alpha
    i_syn = i_syn * beta
    v = (v + i_syn) + f32(p.v_leak)            # + noise (0) + bias: Rockpool's bias is the file's v_leak
    spikes = step_pwl(v, thr)
    return spikes, {"i": i_syn, "v": v - spikes * thr}


def _lif_neuron_torch(state, current, p, dt):
    """LIFNeuronTorch (LIF), noise 0."""
    thr = f32(p.v_threshold)
    v = f32(state["v"]) * decay(dt, p.tau)
    v = (v + f32(current)) + f32(p.v_leak)
    spikes = step_pwl(v, thr)
    return spikes, {"v": v - spikes * thr}


NEURONS = {
    nir.CubaLIF: eq.Neuron(("tau_syn", "tau_mem", "v_leak", "v_threshold"), ("i", "v"), True, _lif_torch),
    nir.LIF: eq.Neuron(("tau", "v_leak", "v_threshold"), ("v",), True, _lif_neuron_torch),
}


# --- rewrite -------------------------------------------------------------------

def _without_batch(shape, size: int | None):
    """Leading 1s dropped (Rockpool's sample batch) while what remains still
    holds ``size`` elements."""
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1 and (size is None or int(np.prod(shape[1:])) == size):
        shape = shape[1:]
    return shape


def lambert_w(x):
    """W(x) for x > 0 (the principal branch), by Newton's method."""
    x = np.asarray(x, dtype=np.float64)
    w = np.log1p(x)
    for _ in range(60):
        e = np.exp(w)
        w = w - (w * e - x) / (e * (w + 1.0))
    return w


def recovered_dt(graph: nir.NIRGraph) -> float | None:
    """The dt Rockpool's r encodes (r = tau e^(-dt/tau) / dt), where all its
    LIF/CubaLIF neurons give the same one, to 6 significant digits."""
    values = []
    for node in graph.nodes.values():
        if isinstance(node, nir.CubaLIF):
            tau, r = np.asarray(node.tau_mem, dtype=np.float64), np.asarray(node.r, dtype=np.float64)
        elif isinstance(node, nir.LIF):
            tau, r = np.asarray(node.tau, dtype=np.float64), np.asarray(node.r, dtype=np.float64)
        else:
            continue
        with np.errstate(all="ignore"):
            if not (np.all(np.isfinite(tau)) and np.all(tau > 0) and np.all(np.isfinite(r)) and np.all(r > 0)):
                return None
            values.append(np.ravel(tau * lambert_w(1.0 / r)))
    if not values:
        return None
    dts = np.concatenate(values)
    rounded = {float(f"{d:.6g}") for d in dts}
    if len(rounded) != 1 or not np.allclose(dts, next(iter(rounded)), rtol=1e-5, atol=0):
        return None
    return next(iter(rounded))


def rewrite(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Rockpool's files in NIR's terms: Input/Output types without the
    exporter's batch dimension, and the dt that r encodes in the metadata
    (where it gives none)."""
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Input):
            shape = port_shape(node.input_type)
            nexts = [graph.nodes[d] for s, d in graph.edges if s == name]
            size = None
            for n in nexts:
                if isinstance(n, (nir.Linear, nir.Affine)):
                    size = int(np.shape(n.weight)[1])
            if shape is not None:
                shape = _without_batch(shape, size)
                node.input_type = {"input": np.array(shape)}
                node.output_type = {"output": np.array(shape)}
        elif isinstance(node, nir.Output):
            prevs = [graph.nodes[s] for s, d in graph.edges if d == name]
            given = {port_shape(p.output_type) for p in prevs} - {None}
            shape = given.pop() if len(given) == 1 else port_shape(node.input_type)
            if shape is not None:
                size = int(np.prod(shape))
                shape = _without_batch(shape, size) if len(given) == 0 else shape
                node.input_type = {"input": np.array(shape)}
                node.output_type = {"output": np.array(shape)}
    meta = dict(getattr(graph, "metadata", None) or {})
    if "dt" not in meta:
        dt = recovered_dt(graph)
        if dt is not None:
            meta["dt"] = dt
            graph.metadata = meta
    return graph


# --- detect ------------------------------------------------------------------

ROCKPOOL_WRITES = (nir.Input, nir.Output, nir.Linear, nir.Affine, nir.CubaLIF, nir.LIF, nir.LI)


def detect(graph: nir.NIRGraph) -> bool:
    """A file as Rockpool's exporter writes it: no fer2neuro format and no
    dt in the metadata; only the node types Rockpool writes; neurons with
    v_leak = 0 (and w_in = 1) whose r is not 1 and encodes one dt for all
    (r = tau e^(-dt/tau) / dt, with 0 < dt < tau); and Rockpool's hand: node
    names of its Sequential ("<i>_<Module>Torch") or an Input type with the
    exporter's batch dimension."""
    meta = dict(getattr(graph, "metadata", None) or {})
    if meta.get("format") in ("fer2neuro.nir", b"fer2neuro.nir") or "dt" in meta:
        return False
    nodes = graph.nodes
    if not nodes or any(type(n) not in ROCKPOOL_WRITES for n in nodes.values()):
        return False
    neurons = [n for n in nodes.values() if isinstance(n, (nir.CubaLIF, nir.LIF))]
    if not neurons:
        return False
    for n in neurons:
        if not np.all(np.asarray(n.v_leak, dtype=np.float64) == 0):
            return False
        if isinstance(n, nir.CubaLIF) and not np.all(np.asarray(n.w_in, dtype=np.float64) == 1):
            return False
        if np.all(np.asarray(n.r, dtype=np.float64) == 1):
            return False
    dt = recovered_dt(graph)
    if dt is None:
        return False
    taus = [np.asarray(n.tau_mem if isinstance(n, nir.CubaLIF) else n.tau, dtype=np.float64) for n in neurons]
    if not all(np.all(dt < t) for t in taus):
        return False
    names = [k for k, n in nodes.items() if not isinstance(n, (nir.Input, nir.Output))]
    torch_names = all("_" in k and k.split("_", 1)[0].isdigit() and k.endswith("Torch") for k in names)
    batch_input = any(isinstance(n, nir.Input) and (port_shape(n.input_type) or (0,))[0] == 1
                      and len(port_shape(n.input_type) or ()) > 1 for n in nodes.values())
    return torch_names or batch_input


DIALECT = Dialect(
    name="rockpool",
    writer="Rockpool 3.1.0 (to_nir, torch modules with default settings; float32)",
    default_dt=DEFAULT_DT,
    neurons=NEURONS,
    conventions={
        "dt": "dt = 1e-3 s by default, written only through r = tau e^(-dt/tau) / dt",
        "reset": "reset by subtracting the threshold",
        "spikes_per_step": "floor(v / threshold) spikes per step, at most 2**16 (StepPWL)",
        "threshold": "spikes when v >= threshold",
        "decay": "exact exponential decay e^(-dt/tau) of v and of the synaptic current, the step's input "
                 "added to the synaptic current before it decays, unit input gain (r and w_in unused); "
                 "float32 arithmetic",
        "fields": "r written as tau e^(-dt/tau) / dt, w_in as 1 (both unused by Rockpool), the neuron bias "
                  "not written (v_leak 0), recurrent weights dropped (a has_rec LIFTorch is written as a "
                  "feed-forward CubaLIF), Input/Output types with the exporter's batch dimension",
        "unsupported": "no Conv2d, pooling, Flatten or IF; from_nir reads nir.LIF through a tau_mem "
                       "field nir.LIF does not have",
    },
    rewrite=rewrite,
    detect=detect,
)
