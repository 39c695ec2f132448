"""The snnTorch runner (runners/protocol.py): run with the snnTorch peer's own
Python (``.peers/snntorch/bin/python``: snnTorch 1.0.0, nir 1.0.8, nirtorch
2.6, torch). It imports nothing of fer2neuro.

``run``: ``snntorch.import_nir.import_from_nir(graph)``, snnTorch's
documented importer (snntorch/import_nir.py:471; ``snntorch.import_from_nir``
itself is commented out of snntorch/__init__.py in 1.0.0), which builds a
torch.fx GraphModule through ``nirtorch.nir_to_torch``. The GraphModule is
called once per step, ``out, state = module(x[:, t], state)``; each spiking
node's spikes are read by a forward hook on the submodule it became
(nirtorch names them after the NIR nodes: ``.`` -> ``_``, Python keywords
prefixed ``nir_node_``; an RNN subgraph that snnTorch's importer wraps is a
nested GraphModule named after the prefix before the first ``.``).
snnTorch has no dt parameter: its importer fixes dt = 1e-4 for LIF and
CubaLIF (import_nir.py:243, 279) and ignores the file's metadata, so
``--dt`` is not used.

Float64, and what it takes (each is reported in the notes):

* ``nirtorch.nir_to_torch`` casts every module to its ``dtype`` argument,
  float32 by default (nirtorch/nir_interpreter.py:564, 622), and snnTorch's
  importer does not pass one: it is called with ``dtype=torch.float64``;
* snnTorch's spike function (the ATan surrogate's forward, snntorch/
  surrogate.py:190) returns ``(x > 0).float()``, float32 spikes, which a
  float64 Linear refuses: every neuron's ``spike_grad`` is replaced by the
  same Heaviside in the membrane's dtype (the forward values are the same).

Batching: a Flatten that the importer built with ``start_dim=0`` (NIR's own
convention, counted without the batch: snnTorch's importer hands the file's
start_dim to ``torch.nn.Flatten`` unchanged, import_nir.py:216) folds the
batch into the features; such a graph is run one sample at a time.

``export KIND``: snnTorch's own network of KIND with default neuron settings
(``snn.Leaky``: reset_mechanism="subtract", reset_delay=True; ``snn.RLeaky``
with an all-to-all recurrent Linear for "recurrent"), ``init_hidden=True``
as in snnTorch's export example, exported with
``snntorch.export_nir.export_to_nir(net, sample, ignore_dims=[0])`` and
simulated by snnTorch in float64. Two things are needed for the export to
pass nir 1.0.8's type inference (``export_to_nir`` calls
``graph.infer_types()``, export_nir.py:299): ``ignore_dims=[0]`` (else the
Input node keeps the sample's batch dimension), and beta and threshold given
per neuron (a scalar beta is written as a 0-d tau, whose type [] does not
match the layer's).
"""
from __future__ import annotations

import contextlib
import os
import sys

# This file is named like the peer: its folder (which Python puts first on
# sys.path for a script) must not shadow the real package. Import the
# sibling modules, then take the folder off the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402
import torch_peer  # noqa: E402

protocol.leave_folder(__file__)

import numpy as np  # noqa: E402

PEER = "snntorch"


def version():
    import nir
    import snntorch

    return snntorch.__version__, nir.version


def _heaviside(x):
    """snnTorch's spike function forward (x > 0), in the membrane's dtype."""
    return (x > 0).to(x.dtype)


def _float64_spikes(module) -> int:
    import snntorch as snn

    count = 0
    for m in module.modules():
        if isinstance(m, snn.SpikingNeuron):
            m.spike_grad = _heaviside
            count += 1
    return count


def _reset_states(module) -> None:
    """Zero every snnTorch neuron's hidden state (an empty state is re-made
    as zeros of the input's shape at the next call)."""
    import snntorch as snn

    torch = torch_peer.float64_torch()
    for m in module.modules():
        if isinstance(m, snn.SpikingNeuron):
            for name in ("mem", "syn", "spk"):
                if isinstance(getattr(m, name, None), torch.Tensor):
                    setattr(m, name, torch.zeros(0))


def _module_for(name: str, modules: dict):
    """The submodule nirtorch built for NIR node ``name`` (module docstring)."""
    from nirtorch.nir_interpreter import _sanitize_name

    parts = name.split(".")
    candidates = [_sanitize_name(name),                                  # a top-level node, dots -> _
                  f"{_sanitize_name(parts[0])}.{_sanitize_name(name)}",  # inside snnTorch's RNN subgraph
                  ".".join(_sanitize_name(p) for p in parts)]            # a nested NIRGraph in the file
    for path in candidates:
        if path in modules:
            return path, modules[path]
    return None, None


def run(report, graph_path, x, dt):
    torch = torch_peer.float64_torch()
    import nir
    import nirtorch
    from snntorch import import_nir

    graph = nir.read(graph_path)
    spiking = protocol.spiking_nodes(graph)
    nir_to_torch = nirtorch.nir_to_torch

    def nir_to_torch_float64(*args, **kwargs):
        kwargs.setdefault("dtype", torch.float64)
        return nir_to_torch(*args, **kwargs)

    nirtorch.nir_to_torch = nir_to_torch_float64
    try:
        with contextlib.redirect_stdout(sys.stderr):    # the importer prints its warnings (whole arrays)
            module = import_nir.import_from_nir(nir.read(graph_path))
    finally:
        nirtorch.nir_to_torch = nir_to_torch
    report.loaded = True
    report.notes.append("imported with snntorch.import_nir.import_from_nir (snntorch.import_from_nir is not "
                        "exported by snnTorch 1.0.0); nirtorch.nir_to_torch given dtype=float64 (its default "
                        "casts every module to float32)")
    if dt is not None:
        report.notes.append(f"--dt {dt:g} not used: snnTorch's importer has no dt and fixes dt = 1e-4 for "
                            f"LIF/CubaLIF, whatever the file's metadata")
    report.dt = 1e-4
    n = _float64_spikes(module)
    if n:
        report.notes.append(f"spike_grad of {n} neurons set to (x > 0) in the membrane's dtype: snnTorch's "
                            f"ATan forward returns float32 spikes, which float64 layers refuse")
    modules = dict(module.named_modules())
    hooked = {}
    for name, node in spiking.items():
        path, mod = _module_for(name, modules)
        if mod is None:
            report.layers[name] = "(no module: the importer dropped it)"
            continue
        report.layers[name] = torch_peer.module_label(mod)
        if type(mod).__name__ == "Leaky" and not getattr(mod, "init_hidden", True):
            report.layers[name] += " (init_hidden=False: returns (spk, mem), which the next module cannot take)"
        hooked[name] = mod
    per_sample = torch_peer.batch_folds(report, modules)
    tuples = [n for n, m in hooked.items() if type(m).__name__ == "Leaky" and not m.init_hidden]

    def explain(exc):
        if not tuples:
            return None
        return RuntimeError(f"{type(exc).__name__}: {exc}: snnTorch's importer made {', '.join(tuples)} a "
                            f"Leaky with init_hidden=False (import_nir.py:234-239, its mapping of NIR's IF), "
                            f"which returns a tuple (spk, mem) that the next module cannot take")

    return torch_peer.run_steps(module, hooked, spiking, x, per_sample, reset=_reset_states, explain=explain)


# --- export ----------------------------------------------------------------

def _build(kind: str):
    """snnTorch's own network of ``kind`` (protocol.KINDS) -> (net, input
    shape, {attribute: the NIR node name its spikes will have}, the layers
    feeding those neurons, in order)."""
    torch = torch_peer.float64_torch()
    import snntorch as snn

    def betas(shape):
        return 0.8 + 0.15 * torch.rand(shape)             # seeded: a beta per neuron in [0.8, 0.95)

    def leaky(shape):
        # default reset_mechanism="subtract", reset_delay=True; beta/threshold per
        # neuron (a scalar is written as a 0-d tau that nir 1.0.8's infer_types refuses)
        return snn.Leaky(beta=betas(shape), threshold=torch.ones(shape), init_hidden=True)

    class Dense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = torch.nn.Linear(20, 32), leaky((32,))
            self.fc2, self.lif2 = torch.nn.Linear(32, 10), leaky((10,))

        def forward(self, x):
            return self.lif2(self.fc2(self.lif1(self.fc1(x))))

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.lif1 = torch.nn.Conv2d(2, 8, 3, padding=1), leaky((8, 12, 12))
            self.pool1, self.flat = torch.nn.AvgPool2d(2), torch.nn.Flatten()
            self.fc2, self.lif2 = torch.nn.Linear(8 * 6 * 6, 10), leaky((10,))

        def forward(self, x):
            return self.lif2(self.fc2(self.flat(self.pool1(self.lif1(self.conv1(x))))))

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(20, 32)
            self.lif1 = snn.RLeaky(beta=betas((32,)), linear_features=32, init_hidden=True)   # all-to-all Linear
            self.fc2, self.lif2 = torch.nn.Linear(32, 10), leaky((10,))

        def forward(self, x):
            return self.lif2(self.fc2(self.lif1(self.fc1(x))))

    if kind == "dense":
        return Dense(), (20,), {"lif1": "lif1", "lif2": "lif2"}, ["fc1", "fc2"]
    if kind == "conv":
        return Conv(), (2, 12, 12), {"lif1": "lif1", "lif2": "lif2"}, ["conv1", "fc2"]
    if kind == "recurrent":
        return Recurrent(), (20,), {"lif1": "lif1.lif", "lif2": "lif2"}, ["fc1", "fc2"]
    raise ValueError(f"unknown kind {kind!r}")


def _simulate(net, neurons, x: np.ndarray) -> dict:
    """snnTorch's own simulation: the network called once per step, every
    neuron's spikes read by a forward hook. -> {attribute: (B, T, ...)}"""
    _reset_states(net)
    return torch_peer.record_steps(net, neurons, x, net)


def export(report, kind, graph_path, seed, samples, timesteps):
    torch = torch_peer.float64_torch()
    from snntorch.export_nir import export_to_nir

    net, _, neurons, layers, x = torch_peer.seeded_network(_build, kind, seed, samples, timesteps)
    _float64_spikes(net)
    torch_peer.tune(net, _simulate, neurons, layers, x)
    _reset_states(net)
    with contextlib.redirect_stdout(sys.stderr):
        graph = export_to_nir(net, torch.from_numpy(x[:, 0]), ignore_dims=[0])
    torch_peer.write_export(report, graph, graph_path, neurons.values())
    recorded = _simulate(net, neurons, x)
    for attr, node in neurons.items():
        m = getattr(net, attr)
        report.layers[node] = (f"snntorch.{type(m).__name__} (reset_mechanism={m.reset_mechanism!r}, "
                               f"reset_delay={m.reset_delay})")
    report.notes.append("exported with export_to_nir(net, sample, ignore_dims=[0]); beta and threshold per neuron "
                        "(nir 1.0.8's infer_types refuses the 0-d tau of a scalar beta, and the batch "
                        "dimension in the Input node without ignore_dims)")
    report.notes.append("spike_grad set to (x > 0) in float64 (snnTorch's ATan forward returns float32 spikes)")
    report.dt = 1e-4
    return x, {neurons[attr]: spikes for attr, spikes in recorded.items()}


if __name__ == "__main__":
    sys.exit(protocol.main(PEER, version, run, export))
