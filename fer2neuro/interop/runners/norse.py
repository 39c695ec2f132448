"""The Norse runner (runners/protocol.py): run with the Norse peer's own Python
(``.peers/norse/bin/python``: Norse 1.1.0, nir 1.0.8, nirtorch 2.6, torch).
It imports nothing of fer2neuro.

``run``: ``norse.torch.from_nir(graph, dt=DT)`` (Norse's documented
importer, norse/torch/utils/import_nir.py:150; ``dt`` only when ``--dt`` is
given, else Norse's default 0.001), which builds a nirtorch
``GraphExecutor`` (nirtorch.load, the deprecated API). It is called once per
step, ``out, state = module(x[:, t], state)``; each spiking node's spikes are
read by a forward hook on the submodule it became (named after the NIR node,
``.`` -> ``_``, nirtorch/utils.py). Nodes the importer has no mapping for
(AvgPool2d, LI, Threshold, Scale, ...) become no module at all and are
skipped by the executor without a word (nirtorch/from_nir.py:33-37,
graph_executor.py:153-154): such a node is reported, and an output that
depends on it is not what the file says.

Float64: Norse's importer converts every array with ``_to_tensor``, which
ends in ``.float()`` (import_nir.py:31-36): it is replaced, for the import
only, by the same conversion to float64 (noted in the report).

Batching: a Flatten becomes ``torch.nn.Flatten(start_dim, end_dim)`` with
the file's dims (import_nir.py:85-86), which count the batch; NIR's
``start_dim=0`` then folds the batch into the features, and such a graph is
run one sample at a time.

``export KIND``: Norse's own network of KIND, a ``norse.torch.SequentialState``
as in Norse's NIR documentation, with the default neuron parameters
(LIFBoxParameters / LIFParameters / IAFParameters defaults: tau_mem_inv 100,
tau_syn_inv 200, v_th 1, v_leak 0, v_reset 0; reset to value; dt 0.001),
given per neuron (Norse writes its parameters as they are, and nir 1.0.8's
writer cannot store a 0-d array: "Scalar datasets don't support chunk/filter
options"), exported with ``norse.torch.to_nir(net, sample)`` with an
unbatched sample (``to_nir`` has no ``ignore_dims``: a batched sample's
batch dimension lands in the Input node, and nir.read's type check then
refuses the file) and simulated by Norse in float64. Norse 1.1.0's exporter
maps Conv2d, Linear, LIFBoxCell, LIFCell, LIBoxCell and IAFCell only
(norse/torch/utils/export_nir.py:14-60): "conv" (Flatten, pooling) and
"recurrent" (LIFRecurrentCell) cannot be exported.
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

PEER = "norse"
NORSE_DT = 0.001                                     # from_nir's and to_nir's default dt


def version():
    from importlib.metadata import version as installed

    import nir
    import norse  # noqa: F401

    return installed("norse"), nir.version


@contextlib.contextmanager
def _float64_import():
    """Norse's importer with its array conversion to float64 instead of float32."""
    torch = torch_peer.float64_torch()
    from norse.torch.utils import import_nir

    original = import_nir._to_tensor

    def to_tensor64(tensor):
        if isinstance(tensor, torch.Tensor):
            return tensor.to(torch.float64)
        return torch.as_tensor(np.asarray(tensor, dtype=np.float64))

    import_nir._to_tensor = to_tensor64
    try:
        yield
    finally:
        import_nir._to_tensor = original


def run(report, graph_path, x, dt):
    torch = torch_peer.float64_torch()
    import nir
    import norse.torch as norse_torch

    graph = nir.read(graph_path)
    spiking = protocol.spiking_nodes(graph)
    kwargs = {} if dt is None else {"dt": float(dt)}
    with _float64_import(), contextlib.redirect_stdout(sys.stderr):
        module = norse_torch.from_nir(nir.read(graph_path), **kwargs)
    module = module.to(torch.float64)
    report.loaded = True
    report.dt = float(dt) if dt is not None else NORSE_DT
    report.notes.append("imported with norse.torch.from_nir" + (f"(graph, dt={dt!r})" if dt is not None else
                        "(graph) at Norse's default dt = 0.001 (the file's metadata is not read)")
                        + "; its float32 array conversion (_to_tensor) replaced by float64")
    modules = dict(module.named_modules())
    from nirtorch.utils import sanitize_name

    hooked = {}
    for name in spiking:
        mod = modules.get(sanitize_name(name))
        if mod is None:
            report.layers[name] = "(no module: the importer has no mapping and the executor skips it)"
            continue
        report.layers[name] = torch_peer.module_label(mod)
        hooked[name] = mod
    dropped = [n for n, node in graph.nodes.items() if not isinstance(node, (nir.Input, nir.Output))
               and modules.get(sanitize_name(n)) is None]
    if dropped:
        report.notes.append(f"no module for {', '.join(dropped)}: Norse's importer has no mapping for "
                            f"{', '.join(sorted({type(graph.nodes[n]).__name__ for n in dropped}))}, and "
                            f"nirtorch's executor skips such a node")
    per_sample = torch_peer.batch_folds(report, modules)
    return torch_peer.run_steps(module, hooked, spiking, x, per_sample)


# --- export ----------------------------------------------------------------

def _build(kind: str):
    """Norse's own network of ``kind`` -> (net, input shape, {module index: NIR
    node name}, the linear layers feeding them, in order)."""
    torch = torch_peer.float64_torch()
    import norse.torch as nt

    def full(shape, value):
        return torch.full(shape, float(value))

    def lif_box(shape):
        d = nt.LIFBoxParameters()
        return nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=full(shape, d.tau_mem_inv), v_leak=full(shape, d.v_leak),
                                                 v_th=full(shape, d.v_th), v_reset=full(shape, d.v_reset)))

    def lif_cell(shape):
        d = nt.LIFParameters()
        return nt.LIFCell(nt.LIFParameters(tau_syn_inv=full(shape, d.tau_syn_inv),
                                           tau_mem_inv=full(shape, d.tau_mem_inv), v_leak=full(shape, d.v_leak),
                                           v_th=full(shape, d.v_th), v_reset=full(shape, d.v_reset)))

    def iaf(shape):
        d = nt.IAFParameters()
        return nt.IAFCell(nt.IAFParameters(v_th=full(shape, d.v_th), v_reset=full(shape, d.v_reset)))

    if kind == "dense":      # Linear -> LIFBoxCell (NIR LIF) -> Linear -> LIFCell (NIR CubaLIF)
        net = nt.SequentialState(torch.nn.Linear(20, 32), lif_box((32,)), torch.nn.Linear(32, 10), lif_cell((10,)))
        return net, (20,), {"1": "1", "3": "3"}, ["0", "2"]
    if kind == "conv":
        net = nt.SequentialState(torch.nn.Conv2d(2, 8, 3, padding=1), iaf((8, 12, 12)), torch.nn.LPPool2d(1, 2),
                                 torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10), lif_box((10,)))
        return net, (2, 12, 12), {"1": "1", "5": "5"}, ["0", "4"]
    if kind == "recurrent":
        net = nt.SequentialState(torch.nn.Linear(20, 32), nt.LIFRecurrentCell(32, 32), torch.nn.Linear(32, 10),
                                 lif_box((10,)))
        return net, (20,), {"1": "1", "3": "3"}, ["0", "2"]
    raise ValueError(f"unknown kind {kind!r}")


def _simulate(net, neurons, x: np.ndarray) -> dict:
    """Norse's own simulation: the SequentialState called once per step with
    its state, every neuron's spikes read by a forward hook."""
    state = None

    def step(x_t):
        nonlocal state
        _, state = net(x_t, state)

    return torch_peer.record_steps(net, neurons, x, step)


def export(report, kind, graph_path, seed, samples, timesteps):
    torch = torch_peer.float64_torch()
    import norse.torch as nt

    net, shape, neurons, layers, x = torch_peer.seeded_network(_build, kind, seed, samples, timesteps)
    # an unbatched sample where the network takes one (a torch.nn.Flatten() needs the batch)
    sample = torch.from_numpy(x[0, 0] if len(shape) == 1 else x[:1, 0])
    with contextlib.redirect_stdout(sys.stderr):
        graph = nt.to_nir(net, sample)
    unmapped = {name: type(net.get_submodule(name)).__name__ for name, node in graph.nodes.items() if node is None}
    if unmapped:
        raise RuntimeError(f"Norse {version()[0]}'s to_nir has no mapping for "
                           f"{', '.join(sorted(set(unmapped.values())))} (norse/torch/utils/export_nir.py maps "
                           f"Conv2d, Linear, LIFBoxCell, LIFCell, LIBoxCell, IAFCell), so the graph holds None "
                           f"nodes ({', '.join(unmapped)}) that nir.write cannot write")
    torch_peer.tune(net, _simulate, list(neurons), layers, x)
    with contextlib.redirect_stdout(sys.stderr):
        graph = nt.to_nir(net, sample)                           # the tuned weights
    torch_peer.write_export(report, graph, graph_path, neurons.values())
    recorded = _simulate(net, list(neurons), x)
    for name, node in neurons.items():
        m = net.get_submodule(name)
        report.layers[node] = f"norse.{type(m).__name__} (dt={m.dt})"
    report.notes.append("exported with norse.torch.to_nir(net, sample) with an unbatched sample; neuron "
                        "parameters given per neuron at their default values (nir 1.0.8 cannot write 0-d arrays)")
    report.dt = NORSE_DT
    return x, {neurons[name]: spikes for name, spikes in recorded.items()}


if __name__ == "__main__":
    sys.exit(protocol.main(PEER, version, run, export))
