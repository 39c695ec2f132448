"""The Spyx runner (runners/protocol.py): run with the Spyx peer's own Python
(``.peers/spyx/bin/python``: Spyx 1.0.0 on Flax NNX, jax 0.10.2 CPU,
nir 1.0.8). It imports nothing of fer2neuro. JAX runs in float64
(``jax_enable_x64``) so that the state and the currents are float64.

``run``: ``spyx.nir.from_nir(graph, x, dt)`` (Spyx's documented importer,
spyx/nir.py:349) builds a ``spyx.nn.Sequential`` from the chain of edges
that starts at the node named "input" and runs it with ``jax.lax.scan``
over time. Spyx is time-major and channels-last: the inputs (B, T, C, H, W)
go in as (T, B, H, W, C), and each layer's output comes back to NIR's
(B, T, C, H, W) / (B, T, N). Each spiking node's spikes are the output of
the module it became, read by stepping the same modules in the same order as
``Sequential.__call__`` (spyx/nn.py:736) and keeping every layer's output;
that scan's last layer and final states are checked against ``from_nir``'s
own outputs. Spyx reads no dt from the file: ``--dt`` (default 1, Spyx's
own) goes to ``from_nir``.

``export KIND``: Spyx's own layers with their default settings (``LIF`` /
``RLIF``: beta drawn per neuron, threshold 1, subtract reset; ``nnx.Linear``
with a bias, ``nnx.Conv`` with SAME padding, ``SumPool``), weights drawn from
a seed and rounded to multiples of 2^-10 (so every sum of them over spikes is
exact in any order), the neurons' beta rounded to float32 (Spyx's default
parameter dtype, and what its exporter writes), exported with
``spyx.nir.to_nir`` (spyx/nir.py:474) and simulated by Spyx on seeded
Bernoulli inputs. Node names are those of the written file: ``layer_<i>``
for the i-th module, and for a recurrent layer the neuron inside the
subgraph ``layer_<i>`` as ``layer_<i>.layer_<i>.lif`` (subgraph name, dot,
inner name, as fer2neuro inlines subgraphs).
"""
from __future__ import annotations

import copy
import os
import sys

# This file is named like the peer: its folder (which Python puts first on
# sys.path for a script) must not shadow the real package. Import the
# sibling protocol module, then take the folder off the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402

protocol.leave_folder(__file__)

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

PEER = "spyx"
WEIGHT_GRID = 2.0 ** -10                             # export weights are multiples of this


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def version():
    _jax()
    import nir
    import spyx

    return spyx.__version__, nir.version


# --- layout -------------------------------------------------------------------

def to_spyx(x: np.ndarray) -> np.ndarray:
    """NIR (B, T, C, *spatial) -> Spyx (T, B, *spatial, C); (B, T, N) -> (T, B, N)."""
    x = np.swapaxes(np.asarray(x, dtype=np.float64), 0, 1)
    if x.ndim >= 4:
        x = np.moveaxis(x, 2, -1)
    return np.ascontiguousarray(x)


def to_nir(y) -> np.ndarray:
    """Spyx (T, B, *spatial, C) -> NIR (B, T, C, *spatial); (T, B, N) -> (B, T, N)."""
    y = np.swapaxes(np.asarray(y, dtype=np.float64), 0, 1)
    if y.ndim >= 4:
        y = np.moveaxis(y, -1, 2)
    return np.ascontiguousarray(y)


# --- stepping a Sequential and keeping every layer's output --------------------

def run_layers(model, x_spyx):
    """Spyx's ``Sequential`` stepped over time exactly as ``Sequential.__call__``
    and ``spyx.nn.run`` do (the same module calls in the same order, one
    ``jax.lax.scan``), keeping every layer's output. -> (outputs per layer,
    each (T, B, ...), final states)."""
    jax = _jax()
    import jax.numpy as jnp

    layers = list(model.layers)

    def step(state, x_t):
        outs, new_state = [], []
        for layer, s in zip(layers, state, strict=True):
            if s is not None:
                x_t, s = layer(x_t, s)
            else:
                x_t = layer(x_t)
            outs.append(x_t)
            new_state.append(s)
        return new_state, outs

    x = jnp.asarray(x_spyx)
    final, outs = jax.lax.scan(step, model.initial_state(x.shape[1]), x)
    return outs, final


def _module_name(module) -> str:
    kind = type(module)
    return f"{kind.__module__}.{kind.__name__}"


# --- run ---------------------------------------------------------------------------

def _layer_keys(graph):
    """The node each module of ``spyx.nir._build_model(graph)`` comes from and
    the spiking node it records, in module order: the same walk as Spyx's
    importer (spyx/nir.py:63-85, 244-343: RNN 2-cycles folded into subgraphs, the
    edge chain from "input" following each node's first out-edge, a LI fused
    with the Threshold after it, nodes without a Spyx module skipped).
    -> [(module node, recorded spiking node name or None)], the NIR nodes on
    the chain that Spyx skipped."""
    import nir
    import spyx.nir as snir

    g = snir._replace_rnn_subgraph_with_nirgraph(copy.deepcopy(graph))
    chain, curr = [], "input"
    while True:
        nxt = next((e for e in g.edges if e[0] == curr), None)
        if nxt is None:
            break
        chain.append(nxt)
        if nxt[1] == "output":
            break
        curr = nxt[1]
    built = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.IF, nir.LIF, nir.CubaLIF, nir.Flatten,
             nir.NIRGraph)
    keys, skipped, consumed = [], [], set()
    for src, dst in chain:
        if src == "input" or src in consumed:
            continue
        node = g.nodes[src]
        if isinstance(node, nir.LI):
            consumed.add(dst)
            keys.append((src, dst))                  # PSU_LIF: its spikes are the Threshold's
        elif isinstance(node, nir.NIRGraph):
            lif = next(k for k, n in node.nodes.items() if isinstance(n, (nir.IF, nir.LIF, nir.CubaLIF)))
            # a subgraph of the file: "<sub>.<inner>"; one Spyx made of a
            # flat 2-cycle keeps the file's own (flat) node name
            keys.append((src, f"{src}.{lif}" if isinstance(graph.nodes.get(src), nir.NIRGraph) else lif))
        elif isinstance(node, built):
            spiking = type(node).__name__ in protocol.SPIKING
            keys.append((src, src if spiking else None))
        elif not isinstance(node, (nir.Input, nir.Output)):
            skipped.append(f"{src} ({type(node).__name__})")
    return keys, skipped


def run(report, graph_path, x, dt):
    _jax()
    import jax.numpy as jnp
    import nir
    import spyx.nir as snir

    dt = 1.0 if dt is None else float(dt)
    graph = nir.read(graph_path)
    keys, skipped = _layer_keys(graph)
    if not keys:
        raise ValueError("Spyx's importer finds no chain of edges from a node named 'input' (spyx/nir.py:262-272)")
    xs = jnp.asarray(to_spyx(x))
    model, out = snir.from_nir(copy.deepcopy(graph), xs, dt=dt)
    report.loaded = True
    report.dt = dt
    meta_dt = (getattr(graph, "metadata", None) or {}).get("dt")
    if meta_dt is not None and float(np.asarray(meta_dt)) != dt:
        report.notes.append(f"the file's metadata says dt = {float(np.asarray(meta_dt))}; Spyx reads no dt "
                            f"from a file and ran with dt = {dt}")
    if skipped:
        report.notes.append("Spyx's importer built no module for " + ", ".join(skipped) + " (spyx/nir.py:241, 311 "
                            "returns None and _build_model skips the node)")
    layers = list(model.layers)
    if len(layers) != len(keys):
        raise RuntimeError(f"Spyx built {len(layers)} modules for {len(keys)} nodes on the chain")
    outs, _ = run_layers(model, xs)
    if not np.array_equal(np.asarray(outs[-1]), np.asarray(out)):
        report.notes.append("the per-layer scan's last layer differs from spyx.nir.from_nir's output")
    spikes = {}
    for (src, spiking), layer, y in zip(keys, layers, outs, strict=True):
        report.layers[src] = _module_name(layer)
        if spiking is not None:
            spikes[spiking] = to_nir(y)
            report.layers[spiking] = _module_name(layer)
    missing = [n for n in protocol.spiking_nodes(graph) if n not in spikes]
    if missing:
        report.notes.append("no Spyx module produced spiking node(s) " + ", ".join(missing))
    return spikes


# --- export -------------------------------------------------------------------

def _grid(a) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float64) / WEIGHT_GRID) * WEIGHT_GRID


def _float32_beta(layer) -> None:
    """Spyx's parameters are float32 unless x64 is on; its exporter writes
    them as float32 (spyx/nir.py:122-134): keep the model's beta on that grid."""
    import jax.numpy as jnp

    for name in ("beta", "alpha"):
        if hasattr(layer, name):
            getattr(layer, name)[...] = jnp.asarray(np.asarray(getattr(layer, name)[...], dtype=np.float32))


def _build(kind: str, seed: int):
    """Spyx's own network of ``kind`` with default neurons and seeded weights.
    -> (model, NIR input shape, NIR output shape)."""
    import jax.numpy as jnp
    import spyx.nn as snn
    from flax import nnx

    rngs = nnx.Rngs(seed)
    rng = np.random.default_rng(seed)

    zeros = nnx.initializers.zeros_init()      # the weights are drawn below: skip nnx's (slow, eager) draw

    def linear(n_in, n_out, mean, std):
        layer = nnx.Linear(n_in, n_out, kernel_init=zeros, rngs=rngs)
        layer.kernel[...] = jnp.asarray(_grid(rng.normal(mean, std, (n_in, n_out))))
        layer.bias[...] = jnp.asarray(_grid(rng.normal(0.0, 0.1, (n_out,))))
        return layer

    if kind == "dense":
        layers = [linear(16, 32, 0.15, 0.5), snn.LIF((32,), rngs=rngs),
                  linear(32, 10, 0.15, 0.6), snn.LIF((10,), rngs=rngs)]
        shape_in, shape_out = (16,), (10,)
    elif kind == "conv":
        conv = nnx.Conv(2, 4, (3, 3), kernel_init=zeros, rngs=rngs)    # padding="SAME", stride 1, bias
        conv.kernel[...] = jnp.asarray(_grid(rng.normal(0.1, 0.4, (3, 3, 2, 4))))   # HWIO
        conv.bias[...] = jnp.asarray(_grid(rng.normal(0.0, 0.1, (4,))))
        layers = [conv, snn.LIF((8, 8, 4), rngs=rngs), snn.SumPool((2, 2), (2, 2), "VALID"), snn.Flatten(),
                  linear(64, 10, 0.05, 0.3), snn.LIF((10,), rngs=rngs)]
        shape_in, shape_out = (2, 8, 8), (10,)
    elif kind == "recurrent":
        rec = snn.RLIF((24,), rngs=rngs)
        rec.recurrent_w[...] = jnp.asarray(_grid(rng.normal(0.0, 0.3, (24, 24))))
        layers = [linear(16, 24, 0.15, 0.5), rec, linear(24, 10, 0.15, 0.6), snn.LIF((10,), rngs=rngs)]
        shape_in, shape_out = (16,), (10,)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    for layer in layers:
        _float32_beta(layer)
    return snn.Sequential(*layers), shape_in, shape_out


def export(report, kind, graph_path, seed, samples, timesteps):
    _jax()
    import jax.numpy as jnp
    import nir
    import spyx.nir as snir

    model, shape_in, shape_out = _build(kind, seed)
    x = protocol.seeded_spikes(seed, samples, timesteps, shape_in)
    xs = jnp.asarray(to_spyx(x))
    outs, _ = run_layers(model, xs)
    graph = snir.to_nir(model, {"input": np.array(shape_in)}, {"output": np.array(shape_out)}, dt=1)
    nir.write(graph_path, graph)
    written = nir.read(graph_path)
    report.dt = 1.0
    spikes = {}
    for i, (layer, y) in enumerate(zip(model.layers, outs, strict=True)):
        key = f"layer_{i}"
        node = written.nodes.get(key)
        if node is None:
            continue
        report.layers[key] = _module_name(layer)
        if isinstance(node, nir.NIRGraph):
            inner = next(k for k, n in node.nodes.items() if isinstance(n, (nir.IF, nir.LIF, nir.CubaLIF)))
            key = f"{key}.{inner}"
            report.layers[key] = _module_name(layer)
        elif type(node).__name__ not in protocol.SPIKING:
            continue
        spikes[key] = to_nir(y)
    missing = [n for n in protocol.spiking_nodes(written) if n not in spikes]
    if missing:
        raise RuntimeError(f"no recorded Spyx layer for exported node(s) {', '.join(missing)}")
    rates = ", ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in spikes.items())
    report.notes.append(f"spike rates: {rates}")
    if os.environ.get("FER2NEURO_SPYX_ROUND_TRIP"):
        _round_trip_note(report, written, xs, spikes)
    return x, spikes


def _round_trip_note(report, written, xs, spikes) -> None:
    """Spyx's own importer on the file it just wrote, against the model
    (with FER2NEURO_SPYX_ROUND_TRIP set: it costs the importer's start-up)."""
    import spyx.nir as snir

    try:
        keys, _ = _layer_keys(written)
        model, _ = snir.from_nir(copy.deepcopy(written), xs, dt=1)
        outs, _ = run_layers(model, xs)
        parts = []
        for (_, spiking), y in zip(keys, outs, strict=True):
            if spiking in spikes:
                parts.append(f"{spiking} {float(np.mean(to_nir(y) == spikes[spiking])):.4f}")
        report.notes.append("Spyx's importer on its own export, share of neuron-steps equal to the model: "
                            + ", ".join(parts))
    except Exception as exc:  # noqa: BLE001 - a note, not the result
        report.notes.append(f"Spyx's importer cannot read its own export: {type(exc).__name__}: {exc}"[:300])


if __name__ == "__main__":
    sys.exit(protocol.main(PEER, version, run, export))
