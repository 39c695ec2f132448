"""``--for norse``: a fer2neuro graph rewritten so that Norse 1.1.0's importer
(``norse.torch.from_nir(graph)``, at its default dt = 0.001) runs it as
fer2neuro means it (SPEC §2: IF and LIF, hard reset to 0, strict >, dt from
the metadata).

What the importer does with each node (norse/torch/utils/import_nir.py), and
what is written for it:

* IF -> ``IAFCell(IAFParameters(v_th=v_threshold))`` (import_nir.py:93-96):
  ``v' = v + I`` at any dt, r ignored (a logged warning where it is not 1),
  reset to 0 (v_reset is not read). fer2neuro's IF with ``dt * r = 1`` is
  that; r is written as the float with ``0.001 * r == dt * r_original``, so
  that the file still means the same in NIR at dt = 0.001 (Norse logs its
  "r is expected to be 1" warning for it).
* LIF -> ``LIFBoxCell(tau_mem_inv = 1 / tau, v_th, v_leak, dt)``
  (import_nir.py:120-130): ``v' = v + dt * (1 / tau) * (I + v_leak - v)``,
  r ignored, reset to 0. tau is written for dt = 0.001, moved by a few ulps
  so that Norse's ``0.001 * (1 / tau)`` is exactly fer2neuro's ``dt / tau``:
  the float operations are then fer2neuro's, in the same order.
* SumPool2d -> ``torch.nn.LPPool2d(1, ...)`` without padding
  (import_nir.py:131-138): kept where that is exact (no padding, a
  power-of-2 window area), else a Conv2d with one-hot channel weights.
* Flatten -> ``torch.nn.Flatten(start_dim, end_dim)`` (import_nir.py:85-86),
  which counts the batch: the dims are written negative, which torch and
  NIR read alike.
* Conv2d needs a bias (zeros); Affine and Linear are read as they are.

Everything else (AvgPool2d, LI, Threshold, Scale, ...) would be dropped by
the importer without a word, so it is an error here. The metadata gets
``dt = 0.001`` and ``fer2neuro_for = "norse"``.
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer.torch_importers import check_reset, rewrite_for_torch
from fer2neuro.nirgraph.dialects.numeric import f64, nearest_solution

PEER_DT = 1e-3                       # from_nir's default dt


def _if(name: str, node: nir.IF, dt: float) -> nir.IF:
    check_reset(name, node, "Norse")
    coefficient = dt * f64(node.r)
    if not np.all(coefficient == 1.0):
        raise GraphError(f"node {name!r} (IF): Norse's IAFCell adds its input unscaled (v += I, r and dt "
                         f"ignored); this IF scales it by dt * r = {np.unique(coefficient)[:3].tolist()}")
    r, _ = nearest_solution(lambda r: PEER_DT * r, coefficient, coefficient / PEER_DT)
    return nir.IF(r=r, v_threshold=f64(node.v_threshold), v_reset=f64(node.v_reset),
                  metadata=dict(node.metadata or {}))


def _lif(name: str, node: nir.LIF, dt: float) -> nir.LIF:
    check_reset(name, node, "Norse")
    if not np.all(f64(node.r) == 1.0):
        raise GraphError(f"node {name!r} (LIF): Norse's LIFBoxCell ignores r; this LIF has r = "
                         f"{np.unique(f64(node.r))[:3].tolist()}")
    tau_f = f64(node.tau)
    coefficient = dt / tau_f                                        # fer2neuro: (dt / tau) * (...)
    tau, _ = nearest_solution(lambda t: PEER_DT * np.reciprocal(t), coefficient, tau_f * (PEER_DT / dt))
    return nir.LIF(tau=tau, r=f64(node.r), v_leak=f64(node.v_leak), v_threshold=f64(node.v_threshold),
                   v_reset=f64(node.v_reset), metadata=dict(node.metadata or {}))


def adapt(graph: nir.NIRGraph) -> nir.NIRGraph:
    return rewrite_for_torch(graph, "Norse", "norse", PEER_DT, {nir.IF: _if, nir.LIF: _lif},
                             unmapped=" (its executor would skip the node without a word)")
