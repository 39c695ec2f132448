"""The Sinabs runner (runners/protocol.py): run with the Sinabs peer's own
Python (``.peers/sinabs/bin/python``: Sinabs 3.1.3, nir 1.0.4, nirtorch 1.0,
torch). It imports nothing of fer2neuro.

``run``: ``sinabs.from_nir(graph, batch_size=B)`` (Sinabs's documented
importer, sinabs/nir.py:123), the network cast to float64, called once on
the inputs with time folded into the batch, (B*T, *shape), as Sinabs's
``*Squeeze`` layers expect; each spiking node's spikes are read by a forward
hook on the module it became. Sinabs has no dt: its decay is exp(-1/tau),
so ``--dt`` is not used.

``export KIND``: Sinabs's own layers with their default settings (IAF and
LIF: MultiSpike, MembraneSubtract, no min_v_mem, LIF norm_input=True),
exported with ``sinabs.to_nir`` and simulated by Sinabs in float64.

samna (SynSense's hardware SDK) is never imported: its package-index stub
(samna 0.48.6 on PyPI) runs ``pip install --force-reinstall samna==... --index-url
<gitlab>`` when imported. ``import sinabs`` does not import it (only
sinabs.backend.dynapcnn does); the guard (runners/samna_guard.py, imported
before any peer import) makes sure nothing does.
"""
from __future__ import annotations

import os
import sys

# This file is named like the peer: its folder (which Python puts first on
# sys.path for a script) must not shadow the real package. Import the
# sibling modules (samna_guard first: before any peer import), then take the
# folder off the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import samna_guard  # noqa: E402
import nir104  # noqa: E402
import protocol  # noqa: E402

protocol.leave_folder(__file__)

import numpy as np  # noqa: E402

PEER = "sinabs"


def version():
    import nir
    import sinabs

    return sinabs.__version__, nir.version


def _record_hooks(modules: dict, batch: int, steps: int):
    """Forward hooks storing each module's output as (B, T, *shape). Each
    returns the output as float64: Sinabs's MultiSpike returns float32
    counts (activation/spike_generation.py:39-41) whatever the network's
    dtype, which a float64 layer after it refuses; counts are exact in both."""
    spikes, handles = {}, []
    for name, module in modules.items():
        def hook(_mod, _inputs, output, name=name):
            out = output.detach().double()
            spikes[name] = out.cpu().numpy().reshape(batch, steps, *out.shape[1:])
            return out if output.dtype != out.dtype and _mod_is_double(_mod) else None
        handles.append(module.register_forward_hook(hook))
    return spikes, handles


def _mod_is_double(module) -> bool:
    import torch

    return any(t.dtype == torch.float64 for t in list(module.parameters()) + list(module.buffers()))


def run(report, graph_path, x, dt):
    import sinabs
    import torch

    samna_guard.note(report)
    graph = nir104.read(graph_path, "Sinabs")
    batch, steps = x.shape[:2]
    nested = [n for n, node in graph.nodes.items() if type(node).__name__ == "NIRGraph"]
    if nested:
        raise NotImplementedError(f"sinabs.from_nir maps no module for the subgraph node(s) {', '.join(nested)}")
    model = sinabs.from_nir(graph, batch_size=batch)
    # nirtorch keeps NIR name -> module; a node Sinabs has no mapping for
    # (sinabs/nir.py:25-120 returns None) is silently left out of the data
    # flow by nirtorch: an honest load failure here.
    by_name = nir104.modules_by_node(model)
    missing = nir104.unmapped(graph, by_name)
    if missing:
        raise NotImplementedError(f"sinabs.from_nir has no module for node(s) {', '.join(missing)} "
                                  f"(nirtorch would drop them from the data flow)")
    report.loaded = True
    report.layers = {n: type(m).__name__ for n, m in by_name.items() if m is not None}
    cycle = nir104.cycle_note(graph, "Sinabs")
    if cycle:
        report.notes.append(cycle)
    report.notes.append("Sinabs has no dt (decay exp(-1/tau)); --dt is not used" if dt is not None
                        else "Sinabs has no dt (decay exp(-1/tau))")
    report.notes.append("from_nir rounds Affine and Conv2d weights and LIF tau to float32 "
                        "(sinabs/nir.py:34-35,64-65; layers/lif.py:90); the network then runs in float64")
    model = model.double()
    wanted = {n: by_name[n] for n in protocol.spiking_nodes(graph)}
    spikes, handles = _record_hooks(wanted, batch, steps)
    with torch.no_grad():
        model(torch.from_numpy(x.reshape(batch * steps, *x.shape[2:])).double())
    for h in handles:
        h.remove()
    report.dt = None
    return spikes


# --- export ------------------------------------------------------------------

def _write_tolerant(path, graph) -> str | None:
    """nir.write; where it cannot, the same layout with its None fields
    stored as nir's readers take them. Sinabs's conv export leaves
    Conv2d.input_shape None (sinabs/nir.py:200-201) and Flatten.input_type
    None (sinabs/nir.py:225-229); h5py cannot store None (nir/serialization.py
    write_recursive), and no nir reader accepts a Conv2d without input_shape.
    So a None input_shape is written as an empty array (nir reads an
    input_shape of [] and leaves the spatial shape undetermined) and a None
    Flatten input_type is left out (nir's Flatten.from_dict reads its absence
    as None). Returns what was done differently, or None."""
    import h5py
    import nir

    try:
        nir.write(path, graph)
        return None
    except TypeError as exc:
        first = f"{type(exc).__name__}: {exc}"

    changed = []

    def rec(group, node, where):
        for k, v in node.items():
            if v is None:
                if k == "input_shape" and node.get("type") in ("Conv1d", "Conv2d"):
                    group.create_dataset(k, data=np.zeros(0, dtype=np.int64))
                    changed.append(f"{where}{k} as []")
                else:
                    changed.append(f"{where}{k} left out")
                continue
            if k == "metadata":
                if v:
                    rec(group.create_group(k), v, f"{where}{k}.")
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif isinstance(v, np.ndarray):
                group.create_dataset(k, data=v, dtype=v.dtype)
            elif isinstance(v, dict):
                rec(group.create_group(str(k)), v, "" if k in ("node", "nodes") else f"{where}{k}.")
            else:
                group.create_dataset(k, data=v)

    if os.path.exists(path):
        os.unlink(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=nir.version)
        rec(f.create_group("node"), graph.to_dict(), "")
    return (f"nir.write cannot write this Sinabs export ({first}: a None field); written with "
            f"{', '.join(changed)}")


def _build(kind: str, batch: int):
    """-> (model, input shape). Sinabs's layers with default settings."""
    import sinabs.layers as sl
    import torch.nn as nn

    if kind == "dense":
        return nn.Sequential(nn.Linear(12, 16), sl.LIFSqueeze(tau_mem=8.0, batch_size=batch),
                             nn.Linear(16, 8), sl.LIFSqueeze(tau_mem=8.0, batch_size=batch)), (12,)
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), sl.IAFSqueeze(batch_size=batch),
                             sl.SumPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
                             sl.LIFSqueeze(tau_mem=8.0, batch_size=batch)), (2, 8, 8)
    if kind == "recurrent":
        # Sinabs's recurrent layer; to_nir has no mapping for it (raises below).
        return nn.Sequential(nn.Linear(12, 16), sl.LIFRecurrent(tau_mem=8.0, rec_connect=nn.Linear(16, 16)),
                             nn.Linear(16, 8), sl.LIF(tau_mem=8.0)), (12,)
    raise ValueError(f"unknown kind {kind!r}")


def _forward(model, x, spiking: dict):
    """The model on x (B, T, *shape) -> each spiking layer's output (B, T, ...)."""
    import sinabs
    import torch

    sinabs.reset_states(model)
    batch, steps = x.shape[:2]
    spikes, handles = _record_hooks(spiking, batch, steps)
    with torch.no_grad():
        model(x.reshape(batch * steps, *x.shape[2:]))
    for h in handles:
        h.remove()
    return spikes


def export(report, kind, graph_path, seed, samples, timesteps):
    import sinabs
    import sinabs.layers as sl
    import torch
    import torch.nn as nn

    samna_guard.note(report)
    torch.manual_seed(seed)
    model, shape = _build(kind, samples)
    x = protocol.seeded_spikes(seed, samples, timesteps, shape)
    if kind == "recurrent":
        try:
            sinabs.to_nir(model, torch.zeros(samples, timesteps, *shape))
        except NotImplementedError as exc:
            raise NotImplementedError(f"Sinabs cannot export a recurrent network: to_nir maps LIF/IAF layers by "
                                      f"exact type (sinabs/nir.py:157,164) and raises for "
                                      f"{' '.join(str(exc).split())}") from None
        raise RuntimeError("sinabs.to_nir unexpectedly exported LIFRecurrent")
    names = dict(model.named_modules())
    spiking = {n: m for n, m in names.items() if isinstance(m, sl.StatefulLayer)}
    weights = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    # Seeded weights scaled by 1.5 or 1/1.5 (in float32) until each spiking
    # layer fires 0.1 to 0.6 spikes per neuron and step: a layer's rate depends on
    # the weights before it, so scale them in order.
    xt = torch.from_numpy(x).float()
    for layer, weight in zip(spiking, weights):
        with torch.no_grad():
            for _ in range(60):
                rate = float(_forward(model, xt, {layer: spiking[layer]})[layer].mean())
                if 0.1 <= rate <= 0.6:
                    break
                factor = 1.5 if rate < 0.1 else 1 / 1.5
                weight.weight.mul_(factor)
                if weight.bias is not None:
                    weight.bias.mul_(factor)
    sinabs.reset_states(model)
    graph = sinabs.to_nir(model, torch.zeros(samples, *shape))
    note = _write_tolerant(graph_path, graph)
    if note:
        report.notes.append(note)
    report.loaded = True
    in_file = {n for n, node in graph.nodes.items() if type(node).__name__ in protocol.SPIKING}
    if set(spiking) != in_file:
        raise RuntimeError(f"exported spiking nodes {sorted(in_file)} are not the model's {sorted(spiking)}")
    report.layers = {n: type(m).__name__ for n, m in names.items() if n in graph.nodes}
    model = model.double()
    spikes = _forward(model, torch.from_numpy(x), spiking)
    report.notes.append("defaults: MultiSpike, MembraneSubtract, min_v_mem None, LIF norm_input=True; "
                        "float64 simulation of float32 weights")
    report.dt = None
    return x, spikes


if __name__ == "__main__":
    sys.exit(protocol.main(PEER, version, run, export))
