"""``--for snntorch``: a fer2neuro graph rewritten so that snnTorch 1.0.0's
importer (``snntorch.import_nir.import_from_nir``) runs it as fer2neuro
means it (SPEC §2: IF and LIF, hard reset to 0, strict >, dt from the
metadata).

What the importer does with each node (snntorch/import_nir.py, nirtorch
2.6's nir_interpreter.py for the defaults), and what is written for it:

* IF -> ``snn.Leaky(beta=0.9, threshold=v_threshold * r, reset by
  subtraction, init_hidden=False)`` (import_nir.py:226-240): a leak of 0.1
  per step, and a module that returns ``(spk, mem)``, which the next module
  cannot take. An IF is written as a LIF whose ``beta = 1 - 1e-4 / tau`` is
  exactly 1 and whose input scale ``r * 1e-4 / tau`` is exactly ``dt * r``
  (1 for fer2neuro's IF), so that the importer's LIF (reset to zero,
  reset_delay=False) is the IF: ``v' = v + I``, spike if ``v' > thr``,
  then v = 0.
* LIF -> ``snn.Leaky(beta = 1 - 1e-4 / tau, threshold = v_threshold /
  (r * 1e-4 / tau), reset_mechanism="zero", reset_delay=False)``
  (import_nir.py:242-276): NIR's forward Euler at dt = 1e-4 whatever the
  file's dt, the input scale folded into the threshold (one value for the
  whole layer: ``np.unique(w_scale)[0]``), v_leak must be 0. tau is written
  for dt = 1e-4 (tau * 1e-4 / dt, moved by a few ulps so that the importer's
  beta is exactly ``1 - dt / tau``) and r so that the importer's w_scale is
  ``dt * r / tau``.
* SumPool2d -> nirtorch's default ``torch.nn.LPPool2d(norm_type=1)``
  (nir_interpreter.py:79-89): the window mean times its area, exact on spike
  counts when the area is a power of 2; padding is dropped. Kept as it is
  where that holds, else written as a Conv2d with one-hot channel weights.
* Flatten -> ``torch.nn.Flatten(start_dim, end_dim)`` (import_nir.py:215),
  which counts the batch dimension while NIR does not: fer2neuro's
  ``start_dim=0`` would fold the batch into the features. The dims are
  written negative (``start_dim=-3`` for a (C, H, W) input), which both
  read the same.
* Conv2d, Linear, Affine: as they are (a Conv2d needs a bias: zeros).

The graph's metadata gets ``dt = 1e-4`` (what the LIF fields are now written
for) and ``fer2neuro_for = "snntorch"``. It is still a NIR graph that means
what the original means at dt = 1e-4 (an IF as a LIF whose leak is 2**-60
of v per step).
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer.torch_importers import check_reset, rewrite_for_torch
from fer2neuro.nirgraph.describe import forward_order
from fer2neuro.nirgraph.dialects.numeric import f64, nearest_solution
from fer2neuro.nirgraph.flat import flatten_graph

PEER_DT = 1e-4                         # snnTorch's importer: dt = 1e-4 for LIF and CubaLIF
IF_TAU_STEPS = 2.0 ** 60               # an IF: tau = fl(2**60 * 1e-4), beta = 1 - 1e-4 / tau == 1


def uniform(name: str, node, field: str, value, peer: str, why: str) -> float:
    """The one value ``value`` holds, else a GraphError."""
    values = np.unique(f64(value))
    if values.size != 1:
        raise GraphError(f"node {name!r} ({type(node).__name__}): {peer} needs one {field} for the whole layer "
                         f"({why}); it has {values.size} different values")
    return float(values[0])


def check_acyclic(graph: nir.NIRGraph, peer: str, why: str) -> None:
    _, back = forward_order(flatten_graph(graph))
    if back:
        raise GraphError(f"{peer} cannot run this graph: it has a recurrent edge ({why})")


def _if_as_lif(name: str, node: nir.IF, dt: float) -> nir.LIF:
    check_reset(name, node, "snnTorch")
    thr = uniform(name, node, "v_threshold", node.v_threshold, "snnTorch", "its Leaky takes one threshold")
    k = uniform(name, node, "r", dt * f64(node.r), "snnTorch", "the input scale is folded into the threshold")
    if not k > 0:
        raise GraphError(f"node {name!r} (IF): snnTorch cannot represent an input scale dt * r = {k:g}")
    tau = float(f64(IF_TAU_STEPS) * PEER_DT)
    r = IF_TAU_STEPS if k == 1.0 else float(nearest_solution(lambda r: r * PEER_DT / tau, k, k * IF_TAU_STEPS)[0])
    shape = np.shape(node.v_threshold)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, r), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, thr), v_reset=np.zeros(shape),
                   metadata={**dict(node.metadata or {}), "fer2neuro_was": "IF"})


def _lif(name: str, node: nir.LIF, dt: float) -> nir.LIF:
    check_reset(name, node, "snnTorch")
    if not np.all(f64(node.v_leak) == 0):
        raise GraphError(f"node {name!r} (LIF): snnTorch's importer does not take v_leak (it asserts v_leak = 0)")
    tau_f, r_f = f64(node.tau), f64(node.r)
    thr = uniform(name, node, "v_threshold", node.v_threshold, "snnTorch", "its Leaky takes one threshold")
    coefficient = (dt / tau_f) * r_f                     # fer2neuro's input coefficient
    uniform(name, node, "dt * r / tau", coefficient, "snnTorch",
            "its importer divides the threshold by the first w_scale = r dt / tau of the layer")
    beta = 1.0 - dt / tau_f                              # fer2neuro's decay, as a factor
    tau, found = nearest_solution(lambda t: 1.0 - PEER_DT / t, beta, tau_f * (PEER_DT / dt))
    r, _ = nearest_solution(lambda r: r * PEER_DT / tau, coefficient, r_f)
    shape = np.broadcast_shapes(tau.shape, np.shape(node.v_threshold))
    full = lambda a: np.broadcast_to(f64(a), shape).copy()   # noqa: E731
    return nir.LIF(tau=full(tau), r=full(r), v_leak=np.zeros(shape), v_threshold=np.full(shape, thr),
                   v_reset=np.zeros(shape), metadata=dict(node.metadata or {}))


def _affine(name: str, node: nir.Affine, dt: float):
    """An Affine without bias as a Linear; one with a bias as it is."""
    if node.bias is None:
        return nir.Linear(weight=node.weight, metadata=dict(node.metadata or {}))
    return node


def adapt(graph: nir.NIRGraph) -> nir.NIRGraph:
    check_acyclic(graph, "snnTorch 1.0.0", "its importer wraps a recurrent LIF in a subgraph that nirtorch 2.6's "
                                           "nir_to_torch fails to build")
    return rewrite_for_torch(graph, "snnTorch", "snntorch", PEER_DT,
                             {nir.IF: _if_as_lif, nir.LIF: _lif, nir.Affine: _affine})
