"""The spyx dialect: NIR files as Spyx 1.0.0 (Flax NNX, jax 0.10.2) runs them.

Measured on Spyx's own source (``spyx/nn.py``, ``spyx/nir.py`` of 1.0.0)
and its simulations (interop/runners/spyx.py). What Spyx computes per step,
for input ``x[t]`` (the layer's current), beta = clip(1 - dt / tau, 0, 1):

    IF       s[t] = v[t-1] > thr;  v[t] = v[t-1] + x[t] - s[t] * thr          (nn.py:167-168)
    LIF      s[t] = v[t-1] > thr;  v[t] = beta * v[t-1] + x[t] - s[t] * thr   (nn.py:214-216)
    CubaLIF  s[t] = v[t-1] > thr;  v = v[t-1] - s[t] * thr;
             i[t] = alpha * i[t-1] + x[t];  v[t] = beta * v + i[t]           (nn.py:443-454)
    LI       v[t] = beta * v[t-1] + x[t]   (then a Threshold: s = v > thr)   (nn.py:315-317)

The spike is decided from the state of the previous step, before the step's
input is added (``order``), the reset subtracts the threshold (``reset``),
and the input enters with gain 1 whatever ``r``, ``w_in`` or ``v_leak`` say.
XLA (CPU) contracts ``beta * v + x`` into one fused multiply-add (its HLO
``multiply_add_fusion``): the steps here compute the same correctly rounded
``fma`` from an error-free product and sum, so the membranes are equal to
Spyx's bit for bit, not only the spikes.

``rewrite`` (the field conventions NIR's own nodes can express):

* LIF / CubaLIF / LI: Spyx's exporter writes ``r = beta`` (LIF, CubaLIF)
  and ``tau = dt / (1 - beta)`` in float32 (nir.py:587-605; a recurrent
  layer's in float64, nir.py:404-427); its importer reads ``beta = 1 - dt /
  tau`` in the file's dtype and ignores r, w_in, v_leak and v_reset
  (nir.py:207-225, 306, 329-332, 340-343). The beta Spyx ran with is the exporter's r
  where the node carries it (r equal to 1 - dt / tau to float32 precision),
  else the importer's value. NIR's fields cannot hold it exactly: no float64
  tau gives ``1 - dt / tau`` equal to 17 % of the float32 betas below 0.5.
  So after the rewrite r holds that beta exactly (CubaLIF: r beta, w_in
  alpha: fields Spyx's neurons have no use for, its input gain being 1),
  tau is set to match it (float64), v_leak = 0; the steps read the decay
  from r where it agrees with tau at the run's dt (``beta_of``). IF:
  ``r = 1 / dt`` (Spyx's gain of 1 in NIR's terms; the step ignores r).
* A Flatten feeding an Affine/Linear: Spyx flattens channels last (H, W, C)
  (nn.py:758); the weight's columns are permuted to NIR's (C, H, W) order.
* SumPool2d: Spyx pools with XLA's "SAME" padding wherever the file has a
  non-zero pad (nir.py:202-205): the pad becomes that SAME padding (refused
  where SAME is asymmetric). Conv2d: 'same' with a stride is XLA's SAME,
  dilation and groups are ignored by the importer (nir.py:177-195).
* A recurrent subgraph (4 nodes: Input, Linear/Affine, IF/LIF/CubaLIF,
  Output, as Spyx writes RIF/RLIF/RCuBaLIF, nir.py:391-448): Spyx's exporter
  routes the subgraph's input through the recurrent weight, but Spyx runs
  ``v = beta v + x + s @ W`` (nn.py:532-534): the input goes to the neuron
  and the weight carries only the feedback, without its bias (nir.py:338).
  That feedback is the spikes of the *same* step (they are decided before
  the input): the dialect's back edges are "same step" (base.py), so the
  targets feed the recurrent weight the spikes each neuron ``emit``s from
  its state before it takes its input.

* Affine / Linear / Conv2d weights and biases are rounded to float32: Spyx's
  importer assigns them to ``nnx.Linear`` / ``nnx.Conv`` parameters, float32
  (Flax's ``param_dtype``) even under ``jax_enable_x64`` (nir.py:169-195,
  316-327).
  The recurrent weight keeps its precision (an RLIF parameter, float64 under
  x64).

Conv2d weights need no reordering: Spyx's HWIO kernel is written as NIR's
OIHW (nir.py:322-325, 526) and both are cross-correlations.
"""
from __future__ import annotations

import re

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.nirgraph import equations as eq
from fer2neuro.nirgraph.dialects.base import Dialect

DEFAULT_DT = 1.0                  # spyx.nir.from_nir(..., dt=1) and to_nir(..., dt=1)
_SPLIT = 134217729.0              # 2**27 + 1: Veltkamp's split of a float64
_NAME = re.compile(r"layer_\d+(_threshold)?")
_AGREE = 2e-6                     # |r - (1 - dt / tau)| of a beta Spyx wrote as float32 r and tau


# --- arithmetic -------------------------------------------------------------------

def _split(a):
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fma(a, b, c):
    """a * b + c rounded once, as XLA's fused multiply-add computes it, from
    +, -, * only (numpy arrays and torch tensors alike): the product's
    exact error (Dekker), the exact sum of the three parts, and the one case
    where rounding their sum twice differs (a tie broken by a lower part)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl         # p + e == a * b exactly
    s, t = _two_sum(c, p)                                     # s + t == c + p exactly
    z, err = _two_sum(t, e)
    r, q = _two_sum(s, z)                                     # c + a*b == r + q + err exactly
    tie = (q != 0) & ((r + 2 * q) - r == 2 * q)               # r + q halfway between r and its neighbour
    return eq.where(tie & (err != 0) & ((err > 0) == (q > 0)), r + 2 * q, r)


def decay(tau, dt):
    """Spyx's importer: beta = clip(1 - dt / tau, 0, 1) (tau > 0: below 1)."""
    beta = 1.0 - dt / tau
    return beta - eq.where(beta < 0, beta, 0 * beta)


def beta_of(carrier, tau, dt):
    """The per-step decay Spyx runs with: the node's ``carrier`` field (r,
    or w_in for CubaLIF's alpha), which the rewrite sets to it exactly,
    where it agrees with ``1 - dt / tau`` (tau alone cannot carry every
    float32 beta exactly: ``1 - dt / tau`` in float64 misses 17 % of those
    below 0.5); else, at another dt, ``1 - dt / tau`` as Spyx's importer."""
    imported = decay(tau, dt)
    return eq.where(abs(carrier - imported) <= _AGREE, carrier, imported)


# --- the neurons as Spyx steps them ------------------------------------------------

def _fire(v, threshold):
    """Heaviside of v - thr (spyx/axn.py:25-27), on the previous step's v."""
    return (v - threshold) > 0


def _emit(state, p):
    """The spikes of this step, from the state alone (before the input)."""
    return _fire(state["v"], p.v_threshold)


def _if(state, current, p, dt):
    spikes = _fire(state["v"], p.v_threshold)
    v = state["v"] + current - spikes * p.v_threshold
    return spikes, {"v": v}


def _lif(state, current, p, dt):
    spikes = _fire(state["v"], p.v_threshold)
    v = fma(beta_of(p.r, p.tau, dt), state["v"], current) - spikes * p.v_threshold
    return spikes, {"v": v}


def _cuba_lif(state, current, p, dt):
    spikes = _fire(state["v"], p.v_threshold)
    v = state["v"] - spikes * p.v_threshold
    i_syn = fma(beta_of(p.w_in, p.tau_syn, dt), state["i"], current)
    v = fma(beta_of(p.r, p.tau_mem, dt), v, i_syn)
    return spikes, {"i": i_syn, "v": v}


def _li(state, current, p, dt):
    v = fma(beta_of(p.r, p.tau, dt), state["v"], current)
    return v, {"v": v}


NEURONS = {
    nir.IF: eq.Neuron(("v_threshold",), ("v",), True, _if, emit=_emit),
    nir.LIF: eq.Neuron(("tau", "r", "v_threshold"), ("v",), True, _lif, emit=_emit),
    nir.CubaLIF: eq.Neuron(("tau_syn", "tau_mem", "r", "w_in", "v_threshold"), ("i", "v"), True, _cuba_lif,
                           emit=_emit),
    nir.LI: eq.Neuron(("tau", "r"), ("v",), False, _li),
}


# --- rewrite ----------------------------------------------------------------------

def metadata_dt(graph: nir.NIRGraph) -> float:
    """The dt in a graph's metadata, else Spyx's own (1): Spyx reads none
    from a file."""
    value = (getattr(graph, "metadata", None) or {}).get("dt", DEFAULT_DT)
    return float(np.asarray(value))


def _importer_beta(tau, dt: float) -> np.ndarray:
    """``1 - dt / tau`` as Spyx's importer computes it: in the file's dtype
    (float32 where the file holds float32), then clipped to [0, 1]."""
    tau = np.asarray(tau)
    if not np.issubdtype(tau.dtype, np.floating):
        tau = tau.astype(np.float64)
    return np.clip((1 - dt / tau).astype(np.float64), 0.0, 1.0)


def _beta_of(r, tau, dt: float) -> np.ndarray:
    """The beta Spyx ran with: its exporter's r where the node carries it (r
    equal to 1 - dt / tau to float32 precision), else its importer's."""
    imported = _importer_beta(tau, dt)
    if r is not None:
        r = np.asarray(r, dtype=np.float64)
        try:
            close = np.allclose(r, imported, rtol=0.0, atol=_AGREE)
        except ValueError:
            close = False
        if close and np.isfinite(r).all():
            return np.clip(np.broadcast_to(r, np.broadcast_shapes(r.shape, imported.shape)), 0.0, 1.0)
    return imported


def tau_for(beta, dt: float) -> np.ndarray:
    """A float64 tau with ``1 - dt / tau == beta`` exactly (inf for beta 1)."""
    beta = np.asarray(beta, dtype=np.float64)
    with np.errstate(divide="ignore"):
        tau = dt / (1.0 - beta)
        best = tau.copy()
        ok = (1.0 - dt / tau) == beta
        up, down = tau.copy(), tau.copy()
        for _ in range(64):
            if ok.all():
                break
            up, down = np.nextafter(up, np.inf), np.nextafter(down, 0.0)
            for cand in (up, down):
                hit = ~ok & ((1.0 - dt / cand) == beta)
                best = np.where(hit, cand, best)
                ok = ok | hit
    return best


def _neuron_fields(node, dt: float) -> None:
    """The decay Spyx runs with, exactly, in the carrier field the dialect's
    step reads (r; w_in for CubaLIF's alpha), tau set to match it (float64),
    v_leak 0 (Spyx has none)."""
    if isinstance(node, nir.IF):
        node.r = np.full(np.shape(node.r), 1.0 / dt)       # Spyx's IF: v + x, NIR's: v + dt * r * x
    elif isinstance(node, (nir.LIF, nir.LI)):
        node.r = _beta_of(node.r, node.tau, dt)
        node.tau = tau_for(node.r, dt)
        node.v_leak = np.zeros(node.tau.shape)
    elif isinstance(node, nir.CubaLIF):
        node.r = _beta_of(node.r, node.tau_mem, dt)
        node.w_in = _beta_of(node.w_in, node.tau_syn, dt)
        node.tau_mem, node.tau_syn = tau_for(node.r, dt), tau_for(node.w_in, dt)
        node.v_leak = np.zeros(node.tau_mem.shape)


def input_shape(node) -> tuple[int, ...] | None:
    """The shape at a node's "input" port, or None where it has none."""
    value = (node.input_type or {}).get("input")
    if value is None:
        return None
    shape = tuple(int(s) for s in np.asarray(value).reshape(-1))
    return shape or None


def ints(value, n=2) -> tuple[int, ...]:
    """A field as ints, one value repeated ``n`` times (a kernel size, a stride)."""
    value = np.asarray(value).reshape(-1)
    if value.size == 1:
        value = np.repeat(value, n)
    return tuple(int(v) for v in value)


def xla_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """The padding (before, after) of XLA's "SAME" for one dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_padding(name: str, node, spatial, kernel, stride, what: str):
    pads = [xla_same(n, k, s) for n, k, s in zip(spatial, kernel, stride)]
    if any(lo != hi for lo, hi in pads):
        raise GraphError(f"node {name!r} ({what}): Spyx pads it with XLA's SAME padding {pads} (before, after), "
                         f"which NIR's symmetric padding cannot express")
    return np.array([lo for lo, _ in pads])


def _pool_padding(name: str, node) -> None:
    pad = ints(node.padding)
    if not any(pad):
        return
    kernel, stride = ints(node.kernel_size), ints(node.stride)
    shape = input_shape(node)
    if shape is not None and len(shape) == 3:
        node.padding = _same_padding(name, node, shape[1:], kernel, stride, "SumPool2d")
    elif all(p % 2 == 0 for p in pad):                     # Spyx writes SAME's total pad (nir.py:554-564)
        node.padding = np.array([p // 2 for p in pad])
    else:
        raise GraphError(f"node {name!r} (SumPool2d): Spyx pools it with SAME padding, asymmetric for a total "
                         f"pad of {pad}, which NIR's symmetric padding cannot express")


def _conv_fields(name: str, node) -> None:
    node.dilation = np.array([1, 1])                       # the importer builds nnx.Conv without dilation
    padding = node.padding.decode() if isinstance(node.padding, bytes) else node.padding
    if isinstance(padding, np.ndarray) and padding.dtype.kind in "US":
        padding = str(padding.reshape(-1)[0])
    stride = ints(node.stride)
    if isinstance(padding, str) and padding.lower() == "same" and any(s != 1 for s in stride):
        spatial = ints(node.input_shape) if node.input_shape is not None else None
        if spatial is None:
            shape = input_shape(node)
            spatial = shape[1:] if shape else None
        if spatial is None:
            raise GraphError(f"node {name!r} (Conv2d): 'same' padding with stride {stride} is XLA's SAME in Spyx, "
                             f"which needs the input size the node does not give")
        node.padding = _same_padding(name, node, spatial, node.weight.shape[-2:], stride, "Conv2d")


def flatten_columns(graph: nir.NIRGraph, to_spyx: bool = False) -> None:
    """The columns of each Affine/Linear fed by a Flatten of (C, *spatial)
    put in the other order: Spyx flattens channels last (H, W, C), NIR
    channels first. Reading Spyx's file: Spyx's columns to NIR's order, and a
    layer whose column count does not fit the Flatten is left as it is.
    ``to_spyx`` (a file for Spyx's importer, interop/for_peer/spyx.py):
    NIR's columns to Spyx's order, and such a layer is an error."""
    for src, dst in graph.edges:
        flat, dense = graph.nodes.get(src), graph.nodes.get(dst)
        if not isinstance(flat, nir.Flatten) or not isinstance(dense, (nir.Affine, nir.Linear)):
            continue
        shape = input_shape(flat)
        if shape is None:
            raise GraphError(f"node {src!r} (Flatten) feeds {dst!r} but has no input shape: Spyx flattens channels "
                             f"last, and the columns cannot be reordered without it")
        if len(shape) < 2:
            continue
        weight = np.asarray(dense.weight)
        if weight.shape[-1] != int(np.prod(shape)):
            if to_spyx:
                raise GraphError(f"node {dst!r}: {weight.shape[-1]} columns after a Flatten of {shape}")
            continue
        # column k of the channels-last flatten is element (*spatial, c); NIR's column for it is (c, *spatial)
        order = np.arange(weight.shape[-1]).reshape(shape)
        order = np.moveaxis(order, 0, -1).reshape(-1)
        if to_spyx:
            dense.weight = weight[:, order]
        else:
            new = np.empty_like(weight)
            new[:, order] = weight
            dense.weight = new


def _recurrent(name: str, sub: nir.NIRGraph) -> None:
    """A subgraph Spyx's importer takes for RIF/RLIF/RCuBaLIF (nir.py:88-119, 230-239)
    rewired as Spyx runs it: input -> neuron, neuron <-> weight."""
    kinds = {k: type(n) for k, n in sub.nodes.items()}
    inputs = [k for k, t in kinds.items() if t is nir.Input]
    outputs = [k for k, t in kinds.items() if t is nir.Output]
    cells = [k for k, t in kinds.items() if t in (nir.IF, nir.LIF, nir.CubaLIF)]
    weights = [k for k, t in kinds.items() if t in (nir.Affine, nir.Linear)]
    if len(sub.nodes) != 4 or not (len(inputs) == len(outputs) == len(cells) == len(weights) == 1):
        return
    (i,), (o,), (cell,), (w,) = inputs, outputs, cells, weights
    sub.edges = [(i, cell), (cell, w), (w, cell), (cell, o)]
    if isinstance(sub.nodes[w], nir.Affine):                # Spyx keeps the weight only (nir.py:338)
        sub.nodes[w] = nir.Linear(weight=np.asarray(sub.nodes[w].weight))


def _float32(a):
    return None if a is None else np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def _rewrite_graph(graph: nir.NIRGraph, dt: float, recurrent: bool = False) -> None:
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _recurrent(name, node)
            _rewrite_graph(node, dt, recurrent=True)
            continue
        if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)) and not recurrent:
            # nnx.Linear / nnx.Conv hold float32 parameters (param_dtype), x64 or not
            node.weight = _float32(node.weight)
            if getattr(node, "bias", None) is not None:
                node.bias = _float32(node.bias)
        if isinstance(node, nir.SumPool2d):
            _pool_padding(name, node)
        elif isinstance(node, nir.Conv2d):
            _conv_fields(name, node)
        else:
            _neuron_fields(node, dt)
    flatten_columns(graph)


def rewrite(graph: nir.NIRGraph) -> nir.NIRGraph:
    _rewrite_graph(graph, metadata_dt(graph))
    return graph


# --- detect -------------------------------------------------------------------------

def _r_is_beta(node, dt: float) -> bool:
    tau = node.tau if isinstance(node, nir.LIF) else node.tau_mem
    try:
        r = np.asarray(node.r, dtype=np.float64)
        beta = 1.0 - dt / np.asarray(tau, dtype=np.float64)
        return bool(np.allclose(r, beta, rtol=0.0, atol=_AGREE)) and not np.allclose(r, 1.0)
    except (TypeError, ValueError):
        return False


def detect(graph: nir.NIRGraph) -> bool:
    """Spyx's ``to_nir`` hand: nodes "input", "output" and "layer_<i>" only,
    and a field only Spyx writes (a LIF/CubaLIF whose r is its beta, a
    recurrent subgraph of "<layer>.lif"/"<layer>.w_rec", a LI followed by
    "<layer>_threshold"). Never a fer2neuro file."""
    meta = getattr(graph, "metadata", None) or {}
    fmt = meta.get("format", "")
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    if str(fmt).startswith("fer2neuro"):
        return False
    names = set(graph.nodes) - {"input", "output"}
    if not {"input", "output"} <= set(graph.nodes) or not names:
        return False
    if not all(_NAME.fullmatch(n) for n in names):
        return False
    dt = metadata_dt(graph)
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.LIF, nir.CubaLIF)) and _r_is_beta(node, dt):
            return True
        if isinstance(node, nir.NIRGraph) and {f"{name}.lif", f"{name}.w_rec"} <= set(node.nodes):
            return True
        if isinstance(node, nir.LI) and isinstance(graph.nodes.get(f"{name}_threshold"), nir.Threshold):
            return True
    return False


DIALECT = Dialect(
    name="spyx",
    writer="Spyx 1.0.0",
    default_dt=DEFAULT_DT,
    neurons=NEURONS,
    back_edge_t0="same step",
    conventions={
        "order": "the spike is decided from v[t-1] before the step's input is added; a recurrent weight feeds "
                 "back the spikes of the same step",
        "reset": "subtracts the threshold (v_reset is not read)",
        "fields": "LIF/CubaLIF r written as beta with tau = dt/(1-beta); read as beta = 1 - dt/tau with input "
                  "gain 1 (r, w_in, v_leak ignored); a non-zero SumPool2d pad means SAME",
        "flatten": "Flatten channels last (H, W, C)",
        "dt": "the file's dt is not read: from_nir(dt=1) unless given",
        "unsupported": "nodes without a Spyx module (Threshold not after a LI, Scale, Delay, ...) or off the "
                       "edge chain from 'input' are skipped",
    },
    rewrite=rewrite,
    detect=detect,
)
