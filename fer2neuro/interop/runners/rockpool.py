"""The Rockpool runner (runners/protocol.py): run with the Rockpool peer's own
Python (``.peers/rockpool/bin/python``: Rockpool 3.1.0, nir 1.0.4, torch).
It imports nothing of fer2neuro.

``run``: ``rockpool.nn.modules.from_nir(graph)`` (Rockpool's documented
importer for torch modules, rockpool/nn/modules/torch/nir.py:172; it goes
through nirtorch), called once on the inputs (B, T, *shape): Rockpool's
modules loop over time themselves. Each spiking node's spikes are read by a
forward hook on the module it became. Rockpool computes in float32 (every
parameter and state is cast with ``torch.as_tensor(x, dtype=torch.float)``,
lif_torch.py:254, torch_module.py:262, and its spike function returns
``.float()``, lif_torch.py:43): a float64 network fails in its recurrent
product (lif_torch.py:691), so the runner runs Rockpool's own float32.
Rockpool's importer takes dt from the file's ``r`` (dt = min(tau_mem /
(1 + r)), nir.py:121-123, 132-134): ``--dt`` is not used.

``export KIND``: Rockpool's own LinearTorch and LIFTorch modules with their
default settings (tau_mem = tau_syn = 20 ms, dt = 1 ms, threshold 1, bias 0,
StepPWL: several spikes per step, ``>=``, subtractive reset), exported with
``to_nir``.

samna: ``import rockpool`` imports samna (rockpool/__init__.py ->
utilities/backend_management.py:67 calls check_samna_available(), which
runs ``import samna`` at line 42). samna 0.48.6 on PyPI is a stub whose
``__init__`` runs ``pip install --force-reinstall samna==0.48.6
--index-url <gitlab>``. The guard (runners/samna_guard.py, imported before
any peer import) refuses the import before any finder looks (Rockpool
catches the error and reports samna unavailable), and PIP_NO_INDEX keeps any
pip run off the network.
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

PEER = "rockpool"
SAMNA_IMPORTER = "rockpool/utilities/backend_management.py:42"    # where `import rockpool` imports samna


def _nir_io():
    """Rockpool's NIR functions; without nirtorch Rockpool swaps them for
    shims that raise on use (rockpool/nn/modules/torch/__init__.py:41-54)."""
    try:
        import nirtorch  # noqa: F401
    except ImportError:
        raise ImportError("nirtorch is not installed in the Rockpool environment: Rockpool's NIR import and "
                          "export need it (rockpool/nn/modules/torch/nir.py:27; Rockpool's 'nir' extra "
                          "declares it); add nirtorch==1.0 to requirements/peers/rockpool.txt") from None
    from rockpool.nn.modules.torch.nir import from_nir, to_nir

    return from_nir, to_nir


def version():
    import warnings

    import nir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import rockpool
    _nir_io()
    return rockpool.__version__, nir.version


def _hooks(modules: dict):
    spikes, handles = {}, []
    for name, module in modules.items():
        def hook(_mod, _inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            spikes[name] = out.detach().double().cpu().numpy()
        handles.append(module.register_forward_hook(hook))
    return spikes, handles


def run(report, graph_path, x, dt):
    import torch

    samna_guard.note(report, SAMNA_IMPORTER)
    from_nir, _ = _nir_io()
    graph = nir104.read(graph_path, "Rockpool")
    model = from_nir(graph)
    by_name = nir104.modules_by_node(model)
    missing = nir104.unmapped(graph, by_name)
    if missing:
        raise NotImplementedError(f"Rockpool's from_nir has no module for node(s) {', '.join(missing)}")
    report.loaded = True
    report.layers = {n: type(m).__name__ for n, m in by_name.items() if m is not None}
    cycle = nir104.cycle_note(graph, "Rockpool")
    if cycle:
        report.notes.append(cycle)
    dts = sorted({float(m.dt) for m in by_name.values() if m is not None and hasattr(m, "dt")})
    report.dt = dts[0] if len(dts) == 1 else None
    report.notes.append(f"Rockpool takes dt from r (dt = min(tau_mem / (1 + r))): {', '.join(f'{d:.9g}' for d in dts)}"
                        + ("; --dt is not used" if dt is not None else ""))
    report.notes.append("Rockpool computes in float32 (its parameters, states and spikes)")
    wanted = {}
    for n, node in graph.nodes.items():
        if type(node).__name__ in protocol.SPIKING:
            wanted[n] = by_name[n]
        elif type(node).__name__ == "NIRGraph":        # a recurrent CubaLIF subgraph -> one LIFTorch (nir.py:72-106)
            inner = [k for k, sub in node.nodes.items() if type(sub).__name__ in protocol.SPIKING]
            if len(inner) == 1:
                wanted[f"{n}.{inner[0]}"] = by_name[n]
    spikes, handles = _hooks(wanted)
    with torch.no_grad():
        model(torch.from_numpy(x).float())
    for h in handles:
        h.remove()
    return spikes


# --- export ------------------------------------------------------------------

def _build(kind: str):
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch

    if kind == "dense":
        return Sequential(LinearTorch((12, 16)), LIFTorch(16), LinearTorch((16, 8)), LIFTorch(8)), (12,)
    if kind == "recurrent":
        return Sequential(LinearTorch((12, 16)), LIFTorch(16, has_rec=True), LinearTorch((16, 8)),
                          LIFTorch(8)), (12,)
    if kind == "conv":
        raise NotImplementedError("Rockpool has no convolutional module its to_nir exports (it maps ExpSynTorch, "
                                  "LIFTorch, LIFNeuronTorch and LinearTorch only: rockpool/nn/modules/torch/"
                                  "nir.py:235-298), and its from_nir has no Conv2d")
    raise ValueError(f"unknown kind {kind!r}")


def _simulate(net, x):
    """Rockpool's own evolution on x (B, T, N), float32 -> the output of each
    submodule by its name in the Sequential."""
    import torch

    net.reset_state()
    with torch.no_grad():
        _, _, record = net(torch.from_numpy(x).float(), record=True)
    return {k[:-len("_output")]: v.detach().double().numpy() for k, v in record.items() if k.endswith("_output")}


def export(report, kind, graph_path, seed, samples, timesteps):
    import nir
    import torch
    from rockpool.nn.modules import LIFTorch, LinearTorch

    samna_guard.note(report, SAMNA_IMPORTER)
    _, to_nir = _nir_io()
    torch.manual_seed(seed)
    net, shape = _build(kind)
    x = protocol.seeded_spikes(seed, samples, timesteps, shape)
    names = list(net._submodulenames)
    mods = [getattr(net, n) for n in names]
    spiking = [n for n, m in zip(names, mods) if isinstance(m, LIFTorch)]
    linears = [m for m in mods if isinstance(m, LinearTorch)]
    # Seeded weights scaled (in float32) until each LIF layer fires at a
    # useful rate, 0.1 to 0.6 spikes per neuron and step; a layer's rate
    # depends on the weights before it (and its own recurrent weights).
    for layer, linear in zip(spiking, linears):
        lif = getattr(net, layer)
        for _ in range(60):
            rate = float(_simulate(net, x)[layer].mean())
            if 0.1 <= rate <= 0.6:
                break
            factor = 1.5 if rate < 0.1 else 1 / 1.5
            linear.weight = linear.weight.detach() * factor
            if lif._has_rec:
                lif.w_rec = lif.w_rec.detach() * factor
    graph = to_nir(net)
    nir.write(graph_path, graph)
    report.loaded = True
    in_file = {n for n, node in graph.nodes.items() if type(node).__name__ in protocol.SPIKING}
    if set(spiking) != in_file:
        raise RuntimeError(f"exported spiking nodes {sorted(in_file)} are not the network's {sorted(spiking)}")
    report.layers = {n: type(m).__name__ for n, m in zip(names, mods) if n in graph.nodes}
    outputs = _simulate(net, x)
    report.dt = float(getattr(net, spiking[0]).dt)
    report.notes.append("defaults: tau_mem = tau_syn = 20 ms, dt = 1 ms, threshold 1, bias 0, StepPWL "
                        "(floor(v / threshold) spikes when v >= threshold), subtractive reset; float32")
    if kind == "recurrent":
        report.notes.append("to_nir writes LIFTorch as a CubaLIF without its recurrent weights "
                            "(rockpool/nn/modules/torch/nir.py:252-275): the file has no recurrent edge")
    return x, {n: outputs[n] for n in spiking}


if __name__ == "__main__":
    sys.exit(protocol.main(PEER, version, run, export))
