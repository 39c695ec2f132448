"""The Sinabs dialect: NIR files written by Sinabs 3.1.3's ``sinabs.to_nir``
(sinabs/nir.py:156-252, through nirtorch 1.0 and nir 1.0.4), run as the
exporting network ran with Sinabs's default layer settings.

What the exporter writes (``_extract_sinabs_module``, sinabs/nir.py:156-230):

* ``IAF``/``IAFSqueeze`` -> ``IF(r = 1, v_threshold = spike_threshold)``
  over the layer's shape (v_mem's shape without the batch, nir.py:157-163).
  Not written: the spike function, the reset, ``min_v_mem``, ``tau_syn``.
* ``LIF``/``LIFSqueeze`` -> ``LIF(tau = tau_mem, v_threshold, v_leak = 0,
  r = 1)`` (nir.py:164-171), each as the module holds it (a scalar ``tau``
  stays 0-d, with an empty input/output type). Not written: ``norm_input``
  (True by default, lif.py:72: the input is scaled by 1 - e^(-1/tau)),
  ``tau_syn``, ``min_v_mem``, the spike and reset functions.
* ``nn.Linear`` -> ``Affine`` (a zero bias if none, nir.py:178-184): Sinabs
  never writes Linear. ``nn.Conv2d`` -> ``Conv2d(input_shape = None)``
  (nir.py:199-212). ``SumPool2d`` -> ``SumPool2d(padding = (0, 0))``.
  ``nn.Flatten`` -> ``Flatten(input_type = None, start_dim - 1, end_dim - 1)``
  (nir.py:221-229). nir 1.0.4's ``nir.write`` cannot store the None fields
  (h5py refuses None), so a conv export is only a file once they are left out
  or written empty; ``rewrite`` fills them in.

How Sinabs steps (layers/functional/lif.py:6-45 with the defaults
``spike_fn = MultiSpike``, ``reset_fn = MembraneSubtract()``,
``min_v_mem = None``), which the steps below repeat operation for operation::

    IAF:  v = 1.0 * v + I                        (alpha_mem = 1, iaf.py:76-78; norm_input False)
    LIF:  a = exp(-1 / tau_mem)                  (lif.py:121)
          v = a * v + (1 - a) * I                (norm_input=True, functional/lif.py:24-30)
    s = (v > 0) * trunc(v / v_threshold)         (MultiSpike, activation/spike_generation.py:39-41)
    v = v - s * v_threshold                      (MembraneSubtract, activation/reset_mechanism.py:40-45)

so a neuron emits floor(v / threshold) spikes in one step (``>=`` the
threshold), keeps the remainder, and is not clipped from below. There is no
dt: tau counts steps (``default_dt`` 1, and the decay is e^(-dt/tau)).

The decay factor is computed with torch's ``exp`` where torch is importable
(it is fer2neuro's own dependency), as Sinabs computes it: numpy's float64
exp differs from torch's in the last bit for about half of all arguments.

Not expressible in a file: a layer built with other settings (norm_input
False, SingleSpike, MembraneReset, a min_v_mem, a tau_syn) writes the same
fields; this dialect runs Sinabs's defaults.
"""
from __future__ import annotations

import nir
import numpy as np

from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects.base import Dialect, port_shape
from fer2neuro.nirgraph.dialects.numeric import floor, is_tensor, loaded_torch
from fer2neuro.nirgraph.flat import kahn_order

# --- array-generic helpers (numpy arrays for the nir target, torch tensors
# for the ONNX lowering; numeric.py) ------------------------------------------

def exp(x):
    """torch's exp, for tensors and (through torch) for arrays, so that a
    decay factor is the one a torch peer computes; numpy's where torch is
    missing."""
    if is_tensor(x):
        return loaded_torch().exp(x)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of fer2neuro
        return np.exp(x)
    return torch.exp(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


def multi_spike(v, threshold):
    """Sinabs's MultiSpike: trunc(v / threshold) spikes where v > 0 (floor
    equals trunc there)."""
    return eq.where(v > 0, floor(v / threshold), 0.0)


# --- the neuron steps: Sinabs's arithmetic, operation for operation ---------

def _iaf(state, current, p, dt):
    """IAF with default settings: v = 1.0 * v + I (no dt: Sinabs has none)."""
    v = 1.0 * state["v"] + current * p.r          # r = 1 in Sinabs's files: an exact no-op
    spikes = multi_spike(v, p.v_threshold)
    return spikes, {"v": v - spikes * p.v_threshold}


def _lif(state, current, p, dt):
    """LIF with default settings (norm_input=True): v = a v + (1 - a) I."""
    alpha = exp(-dt / p.tau)
    v = alpha * state["v"] + (1.0 - alpha) * (current * p.r)
    spikes = multi_spike(v, p.v_threshold)
    return spikes, {"v": v - spikes * p.v_threshold}


NEURONS = {
    nir.IF: eq.Neuron(("r", "v_threshold"), ("v",), True, _iaf),
    nir.LIF: eq.Neuron(("tau", "r", "v_threshold"), ("v",), True, _lif),
}


# --- rewrite: the shapes Sinabs leaves out, inferred as nir does -------------

def _undetermined_conv(node) -> bool:
    shape = getattr(node, "input_shape", None)
    return shape is None or np.asarray(shape).size == 0


def _output_shape(node, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    from nir.ir.utils import calc_flatten_output, calculate_conv_output

    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        spatial = calculate_conv_output(shape[1:] if isinstance(node, nir.Conv2d) else shape[1],
                                        node.padding, node.dilation, np.shape(node.weight)[2:], node.stride)
        return (int(np.shape(node.weight)[0]), *(int(s) for s in np.asarray(spatial).reshape(-1)))
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        spatial = calculate_conv_output(shape[1:], node.padding, 1, node.kernel_size, node.stride)
        return (shape[0], *(int(s) for s in np.asarray(spatial).reshape(-1)))
    if isinstance(node, nir.Flatten):
        return tuple(int(s) for s in calc_flatten_output(list(shape), int(node.start_dim), int(node.end_dim)))
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (int(np.shape(node.weight)[0]),)
    if isinstance(node, (nir.Output, nir.Scale, nir.Threshold, nir.Delay)) or type(node) in eq.NEURONS:
        return shape
    return None


def infer_shapes(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Fill the input and output types (and a convolution's input_shape)
    that are missing or empty, from the Input nodes downstream, with the
    formulas of nir's own type inference (nir.ir.utils.calculate_conv_output,
    calc_flatten_output). Types that are given are kept."""
    out: dict[str, tuple[int, ...] | None] = {}
    for name in kahn_order(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            out[name] = port_shape(node.input_type)
            continue
        given = {out.get(src) for src, dst in graph.edges if dst == name} - {None}
        conv_unknown = isinstance(node, (nir.Conv1d, nir.Conv2d)) and _undetermined_conv(node)
        declared = None if conv_unknown else port_shape(node.input_type)
        shape = given.pop() if len(given) == 1 else declared
        if shape is None:
            out[name] = None if conv_unknown else port_shape(getattr(node, "output_type", None))
            continue
        if declared is None:
            node.input_type = {"input": np.array(shape)}
            if conv_unknown:
                node.input_shape = shape[1] if isinstance(node, nir.Conv1d) else tuple(shape[1:])
        produced = _output_shape(node, shape)
        if produced is not None and (conv_unknown or port_shape(getattr(node, "output_type", None)) is None):
            node.output_type = {"output": np.array(produced)}
        out[name] = port_shape(getattr(node, "output_type", None)) or produced
    return graph


def rewrite(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Sinabs's files in NIR's terms: its missing shapes filled in. The
    fields it writes mean NIR's (r = 1, v_leak = 0, Flatten dims without the
    batch); its dynamics are the steps above."""
    return infer_shapes(graph)


# --- detect ------------------------------------------------------------------

SINABS_WRITES = (nir.Input, nir.Output, nir.Affine, nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.Flatten,
                 nir.IF, nir.LIF, nir.LI)


def _ones(a) -> bool:
    return bool(np.all(np.asarray(a, dtype=np.float64) == 1))


def _zeros(a) -> bool:
    return bool(np.all(np.asarray(a, dtype=np.float64) == 0))


def detect(graph: nir.NIRGraph) -> bool:
    """A file as Sinabs's exporter writes it: no fer2neuro format and no dt
    in the metadata; only the node types Sinabs writes (never Linear or
    CubaLIF); IF and LIF with r = 1 and v_leak = 0; and Sinabs's own hand,
    which no other exporter leaves: a LIF/LI with a 0-d tau and an empty
    input type, or a convolution without input_shape, or a Flatten without
    input type."""
    meta = dict(getattr(graph, "metadata", None) or {})
    if meta.get("format") in ("fer2neuro.nir", b"fer2neuro.nir") or "dt" in meta:
        return False
    nodes = list(graph.nodes.values())
    if not nodes or any(type(n) not in SINABS_WRITES for n in nodes):
        return False
    if not any(isinstance(n, (nir.IF, nir.LIF)) for n in nodes):
        return False
    hand = False
    for n in nodes:
        if isinstance(n, (nir.IF, nir.LIF, nir.LI)):
            if not _ones(n.r) or (not isinstance(n, nir.IF) and not _zeros(n.v_leak)):
                return False
            if isinstance(n, nir.IF) is False and np.ndim(n.tau) == 0 and port_shape(n.input_type) is None:
                hand = True
        elif isinstance(n, (nir.Conv1d, nir.Conv2d)) and _undetermined_conv(n):
            hand = True
        elif isinstance(n, nir.Flatten) and port_shape(n.input_type) is None:
            hand = True
    return hand


DIALECT = Dialect(
    name="sinabs",
    writer="Sinabs 3.1.3 (sinabs.to_nir, default layer settings)",
    default_dt=1.0,
    neurons=NEURONS,
    conventions={
        "dt": "no dt: tau counts time steps (the decay is e^(-1/tau))",
        "reset": "reset by subtracting the threshold (MembraneSubtract), whatever the file says",
        "spikes_per_step": "floor(v / threshold) spikes per step (MultiSpike)",
        "threshold": "spikes when v >= threshold (trunc(v / threshold) >= 1)",
        "decay": "LIF: v = e^(-1/tau) v + (1 - e^(-1/tau)) I (exact exponential, input normalised: "
                 "norm_input=True)",
        "fields": "LIF written without its input normalisation, tau_syn, min_v_mem or spike/reset "
                  "functions; Conv2d without input_shape and Flatten without input type (nir.write "
                  "cannot store them)",
        "unsupported": "no recurrent layer export (LIFRecurrent, IAFRecurrent); from_nir maps no Linear, "
                       "CubaLIF, Threshold or subgraph",
    },
    rewrite=rewrite,
    detect=detect,
)
