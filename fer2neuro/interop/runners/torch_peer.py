"""What the snnTorch and Norse runners share: both import a NIR file into
torch modules through nirtorch 2.6, call the imported module once per step
and read each spiking node's spikes with a forward hook, in float64
(runners/protocol.py). A runner imports this sibling file as it imports
``protocol`` (which this one uses too); it imports nothing of fer2neuro, and
torch only inside its functions.
"""
from __future__ import annotations

import numpy as np
import protocol

TARGET_RATE = (0.1, 0.4)                             # export: every spiking layer's rate within this


def float64_torch():
    """torch, with float64 as its default dtype."""
    import torch

    torch.set_default_dtype(torch.float64)
    return torch


def node_shape(node):
    """A NIR node's shape without the batch: its one output (else input)
    port's, else its v_threshold's; None where none is known."""
    for types in (getattr(node, "output_type", None), getattr(node, "input_type", None)):
        shapes = [np.asarray(s).reshape(-1) for s in (types or {}).values() if s is not None]
        if len(shapes) == 1 and shapes[0].size and shapes[0].dtype.kind in "iu":
            return tuple(int(s) for s in shapes[0])
    v = getattr(node, "v_threshold", None)
    return None if v is None else tuple(np.shape(v))


def module_label(module) -> str:
    """"package.Class" of a torch module, as the report names a layer."""
    return f"{type(module).__module__.split('.')[0]}.{type(module).__name__}"


class Recorder:
    """Forward hooks that keep each recorded module's spikes of the current step."""

    def __init__(self, modules: dict):
        self.now: dict = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, out):
            spikes = out[0] if isinstance(out, tuple) else out
            self.now[name] = spikes.detach().cpu().numpy().astype(np.float64)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def batch_folds(report, modules: dict) -> bool:
    """Whether the imported module must run one sample at a time: a
    ``torch.nn.Flatten(start_dim=0)`` (NIR's start_dim, which counts no
    batch, handed to torch, which does) folds the batch into the features.
    Said in the report's notes."""
    torch = float64_torch()
    folds = [p for p, m in modules.items() if isinstance(m, torch.nn.Flatten) and m.start_dim == 0]
    if folds:
        report.notes.append(f"one sample at a time: torch.nn.Flatten(start_dim=0) ({', '.join(folds)}) folds "
                            f"the batch into the features")
    return bool(folds)


def run_steps(module, hooked: dict, spiking: dict, x: np.ndarray, per_sample: bool, reset=None,
              explain=None) -> dict:
    """The imported ``module`` called once per step, ``_, state =
    module(x[:, t], state)``, on the whole batch or (``per_sample``) one
    sample at a time, and each hooked module's spikes: -> {node: (B, T,
    *shape)}, shaped as the NIR node ``spiking[node]`` where its size fits.
    ``reset(module)`` before each group of samples; ``explain(exc)``: an
    exception to raise instead of a failed call's, or None."""
    torch = float64_torch()
    recorder = Recorder(hooked)
    batch, steps = x.shape[:2]
    groups = [slice(b, b + 1) for b in range(batch)] if per_sample else [slice(0, batch)]
    parts = {name: [] for name in hooked}                      # per group: (rows, T, neurons)
    try:
        with torch.no_grad():
            for rows in groups:
                if reset is not None:
                    reset(module)
                state = None
                trace = {name: [] for name in hooked}
                for t in range(steps):
                    recorder.now.clear()
                    try:
                        _, state = module(torch.from_numpy(np.ascontiguousarray(x[rows, t])), state)
                    except Exception as exc:
                        why = explain(exc) if explain is not None else None
                        if why is None:
                            raise
                        raise why from exc
                    for name in hooked:
                        if name not in recorder.now:
                            raise RuntimeError(f"the module of node {name!r} was not called at step {t}")
                        trace[name].append(recorder.now[name].reshape(rows.stop - rows.start, -1))
                for name in hooked:
                    parts[name].append(np.stack(trace[name], axis=1))
    finally:
        recorder.close()
    out = {}
    for name in hooked:
        a = np.concatenate(parts[name], axis=0)
        shape = node_shape(spiking[name])
        out[name] = a.reshape(batch, steps, *shape) if shape and int(np.prod(shape)) == a.shape[-1] else a
    return out


# --- export ----------------------------------------------------------------

def seeded_network(build, kind: str, seed: int, samples: int, timesteps: int):
    """The peer's own network of ``kind`` (``build(kind) -> (net, input
    shape, neurons, the layers feeding them)``) with its weights drawn from
    ``seed``, in eval mode, and seeded spike inputs for it. -> (net, input
    shape, neurons, layers, inputs (B, T, *shape))"""
    torch = float64_torch()
    torch.manual_seed(seed)
    net, shape, neurons, layers = build(kind)
    net.eval()
    return net, shape, neurons, layers, protocol.seeded_spikes(seed, samples, timesteps, shape)


def record_steps(net, neurons, x: np.ndarray, step) -> dict:
    """The peer's own simulation of ``net``: ``step(x[:, t])`` once per step,
    the spikes of each of the submodules ``neurons`` (names) read by a
    forward hook. -> {name: (B, T, ...)}"""
    torch = float64_torch()
    recorder = Recorder({name: net.get_submodule(name) for name in neurons})
    trace = {name: [] for name in neurons}
    try:
        with torch.no_grad():
            for t in range(x.shape[1]):
                recorder.now.clear()
                step(torch.from_numpy(np.ascontiguousarray(x[:, t])))
                for name in neurons:
                    trace[name].append(recorder.now[name])
    finally:
        recorder.close()
    return {name: np.stack(v, axis=1) for name, v in trace.items()}


def tune(net, simulate, neurons, layers, x: np.ndarray) -> None:
    """Scale each layer's weights (in order) until the neurons it feeds fire
    at a rate within TARGET_RATE on ``x`` (``simulate(net, [neuron], x)``:
    the peer's own simulation)."""
    torch = float64_torch()
    low, high = TARGET_RATE
    for layer, name in zip(layers, neurons):
        for _ in range(60):
            rate = float(simulate(net, [name], x)[name].mean())
            if low <= rate <= high:
                break
            with torch.no_grad():
                net.get_submodule(layer).weight.mul_(1.25 if rate < low else 0.85)


def write_export(report, graph, graph_path, nodes) -> None:
    """``graph`` written with the peer's nir, and read back: a RuntimeError
    where the file lacks one of ``nodes`` (the recorded neurons' names)."""
    import nir

    nir.write(graph_path, graph)
    report.loaded = True
    written = nir.read(graph_path)
    missing = [node for node in nodes if node not in written.nodes]
    if missing:
        raise RuntimeError(f"the exported file has no node {', '.join(missing)} (it has {', '.join(written.nodes)})")
