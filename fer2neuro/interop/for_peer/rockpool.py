"""``export --target nir --for rockpool``: a fer2neuro graph for Rockpool
3.1.0's ``from_nir`` (rockpool/nn/modules/torch/nir.py:58-232).

What ``from_nir`` maps (``_convert_nir_to_rockpool``, nir.py:58-153):
Input/Output (to nothing), Linear and Affine (LinearTorch), CubaLIF
(LIFTorch: several spikes per step, ``v >= thr``, subtractive reset, dt =
min(tau_mem / (1 + r)), float32), LI (ExpSynTorch, with tau cast to int,
nir.py:111), LIF (LIFNeuronTorch, but it reads ``node.tau_mem``, a field
nir.LIF does not have: an AttributeError for every nir.LIF, nir.py:118), and
a 4-node subgraph of a CubaLIF and its recurrent Affine/Linear. Anything
else raises NotImplementedError (nir.py:153).

fer2neuro's graphs have Conv2d, SumPool2d, Flatten, IF and LIF nodes with
one spike per step, ``v > thr`` and reset to v_reset (SPEC §2): Rockpool has
no module for the first four, and none of its neurons resets to a value or
fires once per step. ``adapt`` therefore refuses every fer2neuro graph with
a GraphError naming the first node (in data-flow order) Rockpool cannot
represent. ``write`` writes a file nir 1.0.4 reads (for_peer/nir104.py:
Rockpool pins nir<=1.0.4, as Sinabs does).
"""
from __future__ import annotations

import nir

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer.nir104 import write  # noqa: F401 - the nir 1.0.4 file Rockpool reads
from fer2neuro.nirgraph.flat import kahn_order

PEER = "Rockpool 3.1.0"


def _order(graph: nir.NIRGraph) -> list[str]:
    """Nodes after their inputs, then those on (or after) a cycle."""
    order = kahn_order(graph)
    return order + [n for n in graph.nodes if n not in order]


def _reason(node) -> str | None:
    """Why Rockpool cannot run ``node`` as fer2neuro means it, or None."""
    if isinstance(node, (nir.Input, nir.Output, nir.Linear, nir.Affine)):
        return None
    if isinstance(node, nir.LIF):
        return ("from_nir reads a nir.LIF's tau_mem, which nir.LIF does not have (rockpool/nn/modules/torch/"
                "nir.py:118), and Rockpool's LIF neurons emit several spikes per step (v >= threshold) and "
                "subtract the threshold, with no reset to v_reset")
    if isinstance(node, (nir.CubaLIF, nir.LI)):
        return ("Rockpool's neurons decay exponentially, emit several spikes per step (v >= threshold) and "
                "subtract the threshold (lif_torch.py:685-720); fer2neuro's step is forward Euler with one "
                "spike and reset to v_reset")
    if isinstance(node, nir.IF):
        return "from_nir has no IF mapping (rockpool/nn/modules/torch/nir.py:153 raises NotImplementedError)"
    return (f"from_nir has no {type(node).__name__} mapping (rockpool/nn/modules/torch/nir.py:153 raises "
            f"NotImplementedError)")


def adapt(graph: nir.NIRGraph, exact: bool = True) -> nir.NIRGraph:
    """A GraphError naming the first node Rockpool cannot represent; a graph
    of only Linear/Affine nodes is returned as it is."""
    for name in _order(graph):
        node = graph.nodes[name]
        reason = _reason(node)
        if reason:
            raise GraphError(f"{PEER} cannot represent node {name!r} ({type(node).__name__}): {reason}")
    return graph
