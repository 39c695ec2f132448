"""``export --target nir --for sinabs``: a fer2neuro graph for Sinabs 3.1.3's
``sinabs.from_nir`` (sinabs/nir.py:25-144), written so nir 1.0.4 reads it.

What ``from_nir`` builds, with no option to change it (its only arguments
are ``batch_size`` and ``num_timesteps``, nir.py:123-144):

* IF -> ``IAFSqueeze(spike_threshold = v_threshold, min_v_mem = -v_threshold)``
  (nir.py:86-92): r and v_reset are not read; MultiSpike (floor(v / thr)
  spikes per step, so ``v >= thr``), MembraneSubtract (v - spikes * thr), and
  v clipped from below at -thr.
* LIF -> ``LIFSqueeze(tau_mem = tau, spike_threshold = v_threshold,
  norm_input = False)`` (nir.py:94-108): v = e^(-1/tau) v + I; r is not read,
  a non-zero v_leak is refused; tau is held in float32 (layers/lif.py:90);
  the same MultiSpike and MembraneSubtract.
* Affine -> ``nn.Linear`` with float32 weights (nir.py:28-36); Conv2d ->
  ``nn.Conv2d`` with float32 weights and a bias it requires (nir.py:53-66);
  SumPool2d -> ``SumPool2d(kernel_size, stride)``, padding not read
  (nir.py:109-112); Flatten -> ``nn.Flatten`` (dims + 1 for the batch).
* Linear, CubaLIF, Threshold, Scale, AvgPool2d, a subgraph: no module (the
  mapping returns None and nirtorch drops the node from the data flow).

So fer2neuro's neurons (one spike per step, ``v > thr``, reset to v_reset,
no lower bound: SPEC §2) have no exact expression in Sinabs: after a spike
Sinabs keeps v - thr where fer2neuro resets to 0, it emits several spikes
where v >= 2 thr, and it rounds float64 weights to float32. ``adapt``
refuses such a graph with the first neuron it cannot express. With
``exact=False`` it returns the closest graph Sinabs reads (every convention
NIR can carry applied, the rest as Sinabs does it) for measuring how far
apart the two are:

* Linear -> Affine with a zero bias; a Conv2d without bias gets a zero bias;
* each IF/LIF threshold -> the next float64 above it, so that Sinabs's
  ``v >= thr'`` (``trunc(v / thr') >= 1``) fires exactly where ``v > thr``
  would;
* LIF: tau -> -dt / log(1 - dt / tau), so that e^(-1/tau') is NIR's Euler
  decay 1 - dt / tau (up to Sinabs's float32 tau), and NIR's input gain
  dt r / tau folded into the Affine/Conv2d that feeds it.
"""
from __future__ import annotations

import copy

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer.nir104 import write  # noqa: F401 - the nir 1.0.4 file Sinabs reads
from fer2neuro.nirgraph.file import GraphInfo

PEER = "Sinabs 3.1.3"

SINABS_NODES = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.Flatten,
                nir.IF, nir.LIF, nir.LI)


def _describe(name: str, node) -> str:
    return f"node {name!r} ({type(node).__name__})"


def _graph_dt(graph: nir.NIRGraph) -> float:
    return GraphInfo.of(graph).dt or 1.0


def _predecessors(graph: nir.NIRGraph, name: str) -> list[str]:
    return [src for src, dst in graph.edges if dst == name]


def _successors(graph: nir.NIRGraph, name: str) -> list[str]:
    return [dst for src, dst in graph.edges if src == name]


def _check_supported(graph: nir.NIRGraph) -> None:
    for name, node in graph.nodes.items():
        if not isinstance(node, SINABS_NODES):
            raise GraphError(f"{PEER} cannot represent {_describe(name, node)}: sinabs.from_nir has no module "
                             f"for it (sinabs/nir.py:25-120; nirtorch drops it from the data flow)")
        if isinstance(node, nir.SumPool2d) and np.any(np.asarray(node.padding) != 0):
            raise GraphError(f"{PEER} cannot represent {_describe(name, node)}: from_nir builds SumPool2d "
                             f"without padding (sinabs/nir.py:109-112)")
        if isinstance(node, (nir.LIF, nir.LI)) and np.any(np.asarray(node.v_leak) != 0):
            raise GraphError(f"{PEER} cannot represent {_describe(name, node)}: from_nir refuses v_leak != 0 "
                             f"(sinabs/nir.py:95-98)")


def _refuse_neuron(name: str, node) -> None:
    what = ("IAFSqueeze" if isinstance(node, nir.IF) else "LIFSqueeze")
    raise GraphError(f"{PEER} cannot run {_describe(name, node)} as fer2neuro means it: sinabs.from_nir builds "
                     f"{what} with several spikes per step (v >= threshold) and a reset by subtraction"
                     f"{' clipped at -threshold' if isinstance(node, nir.IF) else ''}, and has no option for "
                     f"one spike per step (v > threshold) and reset to v_reset (sinabs/nir.py:86-108)")


def _scale_feeder(graph: nir.NIRGraph, name: str, gain: np.ndarray) -> None:
    """Fold a neuron's input gain into the one Affine/Conv2d that feeds it."""
    preds = _predecessors(graph, name)
    feeder = graph.nodes.get(preds[0]) if len(preds) == 1 else None
    if not isinstance(feeder, (nir.Affine, nir.Conv1d, nir.Conv2d)) or len(_successors(graph, preds[0])) != 1:
        raise GraphError(f"{PEER} cannot represent {_describe(name, graph.nodes[name])}: its input gain dt r / tau "
                         f"has no Affine or Conv2d of its own to go into (from_nir's LIF reads no r)")
    gain = np.asarray(gain, dtype=np.float64)
    weight = np.asarray(feeder.weight, dtype=np.float64)
    channel = gain.reshape(-1) if gain.ndim else np.full(weight.shape[0], float(gain))
    if isinstance(feeder, nir.Affine):
        if channel.size not in (1, weight.shape[0]):
            raise GraphError(f"{PEER} cannot represent {_describe(name, graph.nodes[name])}: an input gain per "
                             f"neuron of shape {gain.shape} does not fit its Affine")
        feeder.weight = weight * channel.reshape(-1, 1)
        feeder.bias = np.asarray(feeder.bias, dtype=np.float64) * channel
        return
    per_channel = gain if gain.ndim == 0 else gain.reshape(gain.shape[0], -1)
    if gain.ndim and not np.all(per_channel == per_channel[:, :1]):
        raise GraphError(f"{PEER} cannot represent {_describe(name, graph.nodes[name])}: its input gain varies "
                         f"within a channel, which a Conv2d cannot carry")
    c = np.full(weight.shape[0], float(gain)) if gain.ndim == 0 else per_channel[:, 0]
    feeder.weight = weight * c.reshape(-1, *([1] * (weight.ndim - 1)))
    feeder.bias = np.asarray(feeder.bias, dtype=np.float64) * c


def adapt(graph: nir.NIRGraph, exact: bool = True) -> nir.NIRGraph:
    """``graph`` for ``sinabs.from_nir``; a GraphError naming the first node
    Sinabs cannot run as fer2neuro means it (with ``exact``, the default,
    every IF and LIF), else the closest graph (module docstring)."""
    graph = copy.deepcopy(graph)
    if any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        raise GraphError(f"{PEER} cannot represent a nested subgraph: sinabs.from_nir maps top-level nodes only")
    _check_supported(graph)
    dt = _graph_dt(graph)
    for name, node in list(graph.nodes.items()):
        if isinstance(node, (nir.IF, nir.LIF)) and exact:
            _refuse_neuron(name, node)
        if isinstance(node, nir.Linear):
            weight = np.asarray(node.weight, dtype=np.float64)
            graph.nodes[name] = nir.Affine(weight=weight, bias=np.zeros(weight.shape[0]))
        elif isinstance(node, (nir.Conv1d, nir.Conv2d)) and node.bias is None:
            node.bias = np.zeros(np.shape(node.weight)[0])
    for name, node in list(graph.nodes.items()):
        if isinstance(node, nir.IF):
            thr = np.asarray(node.v_threshold, dtype=np.float64)
            graph.nodes[name] = nir.IF(r=np.asarray(node.r, dtype=np.float64), v_threshold=np.nextafter(thr, np.inf),
                                       v_reset=np.zeros_like(thr))
        elif isinstance(node, nir.LIF):
            tau = np.asarray(node.tau, dtype=np.float64)
            with np.errstate(all="ignore"):
                if np.any(dt / tau >= 1):
                    raise GraphError(f"{PEER} cannot represent {_describe(name, node)}: dt / tau >= 1 has no "
                                     f"exponential decay e^(-1/tau) equal to 1 - dt / tau")
                tau_sinabs = -1.0 / np.log1p(-dt / tau)
            _scale_feeder(graph, name, dt * np.asarray(node.r, dtype=np.float64) / tau)
            thr = np.asarray(node.v_threshold, dtype=np.float64)
            graph.nodes[name] = nir.LIF(tau=tau_sinabs, r=np.ones_like(thr), v_leak=np.zeros_like(thr),
                                        v_threshold=np.nextafter(thr, np.inf), v_reset=np.zeros_like(thr))
    meta = dict(getattr(graph, "metadata", None) or {})
    meta["for_peer"] = "sinabs"
    if not exact:
        meta["for_peer_inexact"] = ("Sinabs subtracts the threshold, emits several spikes per step, clips IF "
                                    "membranes at -threshold and rounds weights and tau to float32")
    graph.metadata = meta
    return graph
