"""``--for spyx``: a fer2neuro graph as Spyx 1.0.0's importer must read it to
run it as fer2neuro does, as far as Spyx can represent it.

What Spyx's importer (``spyx.nir.from_nir``, spyx/nir.py:349) builds and
runs (nirgraph/dialects/spyx.py has the measured equations):

* every IF / LIF / CubaLIF becomes a neuron that decides its spike from
  v[t-1] *before* adding the step's input and resets by subtracting the
  threshold (spyx/nn.py:167-168, 215-216, 451-454). fer2neuro's neurons add
  the input first and reset to v_reset (SPEC §2). Spyx's importer builds a
  ``Sequential`` chain (nir.py:262-272: the first out-edge of each node from
  "input"), so no graph it imports can feed a neuron's spikes back to reset
  it, and its only input-first neuron, ``PSU_LIF`` (a LI followed by a
  Threshold, nir.py:291-309; nn.py:315-317), never resets. A neuron with
  memory (a conv IF, a LIF) therefore has no faithful Spyx form: ``adapt``
  refuses the graph with a one-line GraphError naming it.
* what Spyx *can* run exactly: a stateless spike, ``nir.Threshold``, and
  fer2neuro's max-pool IF (threshold 0.5, reset to 0, after a SumPool2d of
  spikes: it spikes iff a window held a spike and keeps no charge), both as
  ``LI(tau = dt, r = 1)`` -> ``Threshold`` -- Spyx's ``PSU_LIF`` with beta =
  1 - dt / tau = 0: v = x, spike iff x > threshold, exactly. A Threshold on
  its own is dropped by Spyx's importer (nir.py:241, 311), hence the LI.
* Flatten: Spyx flattens channels last (H, W, C) (nn.py:758), so an
  Affine/Linear after a Flatten of (C, H, W) gets its columns in that order.
* Conv2d: Spyx reads the weight (OIHW -> HWIO), bias, stride and symmetric
  integer padding, but not dilation or groups (nir.py:177-195): refused where
  they are not 1. SumPool2d: a non-zero pad means XLA's SAME (nir.py:202-205):
  kept only where SAME pads the same, else refused.
* weights: Spyx's importer holds Affine/Linear/Conv2d weights and biases in
  float32 (nnx ``param_dtype``, even under ``jax_enable_x64``); a file whose
  weights are not float32 values runs in Spyx with them rounded (1e-8
  relative), which flips a spike only where a membrane comes that close to
  its threshold. ``adapt`` does not round them: that would change the
  graph fer2neuro runs.
* dt: Spyx reads none from the file (``from_nir(..., dt=1)``): run it with
  the file's dt (LI tau = dt gives beta = 0 at that dt).
"""
from __future__ import annotations

import copy

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.nirgraph.dialects.spyx import flatten_columns, input_shape, ints, metadata_dt, xla_same

SPIKING = (nir.IF, nir.LIF, nir.CubaLIF, nir.Threshold)
STATELESS = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.Flatten)
ORDER = ("Spyx's IF/LIF/CuBaLIF decide the spike from v[t-1] before adding the step's input and reset by "
         "subtracting the threshold (spyx/nn.py:167-168, 215-216), and no graph Spyx imports has a neuron that "
         "integrates first and resets")


def _ints(value, n=2):
    """``ints``, with a string (a padding mode) kept as it is."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value
    return ints(value, n)


def _preds(graph, name):
    return [s for s, d in graph.edges if d == name]


def _stateless_pool_if(graph: nir.NIRGraph, name: str, dt: float) -> bool:
    """An IF that spikes iff its input is >= 1 and never keeps charge: reset
    to 0, 0 <= threshold < r * dt, fed only by a SumPool2d of spikes (its
    input a count of spikes, 0, 1, 2, ...)."""
    node = graph.nodes[name]
    if not isinstance(node, nir.IF):
        return False
    reset = np.zeros(1) if node.v_reset is None else np.asarray(node.v_reset, dtype=np.float64)
    thr = np.asarray(node.v_threshold, dtype=np.float64)
    gain = np.asarray(node.r, dtype=np.float64) * dt
    if not ((reset == 0).all() and (thr >= 0).all() and (gain > thr).all()):
        return False
    pools = _preds(graph, name)
    if len(pools) != 1 or not isinstance(graph.nodes[pools[0]], nir.SumPool2d):
        return False
    sources = _preds(graph, pools[0])
    return len(sources) == 1 and isinstance(graph.nodes[sources[0]], SPIKING)


def _chain(graph: nir.NIRGraph) -> None:
    """Spyx runs the chain of first out-edges from "input" to "output"
    (spyx/nir.py:262-272) and nothing else."""
    for end, kind in (("input", nir.Input), ("output", nir.Output)):
        if not isinstance(graph.nodes.get(end), kind):
            raise GraphError(f"Spyx's importer walks the graph from a node named 'input' to one named 'output'; "
                             f"this graph has no {kind.__name__} node {end!r}")
    for name in graph.nodes:
        outs = [d for s, d in graph.edges if s == name]
        ins = _preds(graph, name)
        if len(outs) > 1 or len(ins) > 1:
            raise GraphError(f"node {name!r} has {len(ins)} inputs and {len(outs)} outputs: Spyx's importer runs a "
                             f"chain of single edges only (spyx/nir.py:262-272)")
    seen, curr = {"input"}, "input"
    while curr != "output":
        nxt = [d for s, d in graph.edges if s == curr]
        if not nxt:
            raise GraphError(f"the chain from 'input' stops at {curr!r} before 'output'")
        curr = nxt[0]
        seen.add(curr)
    off = [n for n in graph.nodes if n not in seen]
    if off:
        raise GraphError(f"node(s) {', '.join(map(repr, off))} are off the chain from 'input' to 'output', which "
                         f"Spyx's importer skips")


def _as_psu(graph: nir.NIRGraph, name: str, threshold, dt: float) -> None:
    """``name`` (a spiking node) becomes LI(tau = dt, r = 1) -> Threshold
    (Spyx's PSU_LIF with beta 0), the Threshold keeping the name."""
    shape = input_shape(graph.nodes[name]) or np.shape(threshold)
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), shape)
    li_name = f"{name}_membrane"
    if li_name in graph.nodes:
        raise GraphError(f"cannot add node {li_name!r}: the name is taken")
    nodes, edges = {}, []
    for key, node in graph.nodes.items():
        if key == name:
            nodes[li_name] = nir.LI(tau=np.full(shape, dt), r=np.ones(shape), v_leak=np.zeros(shape))
            nodes[name] = nir.Threshold(threshold=np.asarray(threshold, dtype=np.float64))
        else:
            nodes[key] = node
    for src, dst in graph.edges:
        if dst == name:
            edges += [(src, li_name), (li_name, name)]
        else:
            edges.append((src, dst))
    graph.nodes, graph.edges = nodes, edges


def _conv(name: str, node: nir.Conv2d) -> None:
    dilation, groups = _ints(node.dilation), int(np.asarray(node.groups).reshape(-1)[0])
    if dilation != (1, 1) or groups != 1:
        raise GraphError(f"node {name!r} (Conv2d): Spyx's importer builds nnx.Conv without dilation or groups "
                         f"(spyx/nir.py:177-195), this one has dilation {dilation}, groups {groups}")
    padding, stride = _ints(node.padding), _ints(node.stride)
    if isinstance(padding, str) and padding.lower() == "same" and stride != (1, 1):
        raise GraphError(f"node {name!r} (Conv2d): 'same' padding with stride {stride} is XLA's SAME in Spyx, "
                         f"not PyTorch's; write explicit padding")


def _pool(name: str, node: nir.SumPool2d) -> None:
    pad = _ints(node.padding)
    if not any(pad):
        return
    shape = input_shape(node)
    kernel, stride = _ints(node.kernel_size), _ints(node.stride)
    if shape is None or len(shape) != 3:
        raise GraphError(f"node {name!r} (SumPool2d): Spyx pools a padded window with XLA's SAME padding; "
                         f"without the node's input shape it cannot be checked")
    for size, k, s, p in zip(shape[1:], kernel, stride, pad):
        before, after = xla_same(size, k, s)
        if (before, after) != (p, p):
            raise GraphError(f"node {name!r} (SumPool2d): Spyx turns padding {pad} into XLA's SAME padding, "
                             f"({before}, {after}) for a size {size}, not ({p}, {p})")


def adapt(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` rewritten so that Spyx's importer runs it as fer2neuro's
    ``nir`` target runs the original (every spiking layer equal, keyed by the
    same node names); GraphError (one line) where Spyx cannot."""
    g = copy.deepcopy(graph)
    dt = metadata_dt(g)
    if any(isinstance(n, nir.NIRGraph) for n in g.nodes.values()):
        raise GraphError("the graph has subgraphs: Spyx's importer reads a subgraph only as a recurrent layer")
    _chain(g)
    replace = []
    for name, node in g.nodes.items():
        if isinstance(node, nir.Threshold):
            replace.append((name, node.threshold))
        elif isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            if not _stateless_pool_if(g, name, dt):
                raise GraphError(f"Spyx cannot run {name!r} ({type(node).__name__}) as fer2neuro does: {ORDER}")
            replace.append((name, np.full(np.shape(node.v_threshold), 0.5)))
        elif isinstance(node, nir.Conv2d):
            _conv(name, node)
        elif isinstance(node, nir.SumPool2d):
            _pool(name, node)
        elif not isinstance(node, STATELESS):
            raise GraphError(f"node {name!r} ({type(node).__name__}) has no Spyx module (spyx/nir.py:163-241)")
    flatten_columns(g, to_spyx=True)
    for name, threshold in replace:
        _as_psu(g, name, threshold, dt)
    return g
