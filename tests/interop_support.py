"""What the interop peer tests (tests/test_interop_<peer>.py) share: a peer's
environment and runner, fer2neuro's side of a comparison (its graph, its
inputs, its nir target's spikes) and the comparison itself. Loaded by
conftest.py, whose fixtures hand it out (``peer``, ``peer_export``,
``interop``): the suite runs with --import-mode=importlib, so a test module
cannot import it.

A peer lives where ``interop.peers.python_of`` finds it:
``$FER2NEURO_PEERS/<peer>/bin/python``, else ``.peers/<peer>/bin/python``
(``make peer-<peer>``), and for snnTorch, whose pinned release is also a
core dependency, fer2neuro's own interpreter (so CI runs a real peer); the
tests that need a peer are skipped where it is missing.

The checks here are plain asserts (the module is not rewritten by pytest):
each says what it compared.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.errors import GraphError
from fer2neuro.interop import for_peer
from fer2neuro.interop.peers import python_of
from fer2neuro.interop.runners.protocol import REPORT_PREFIX
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import GraphInfo, read_graph
from fer2neuro.targets import get_target

ROOT = Path(__file__).resolve().parents[1]


class Peer:
    """One peer's environment: its Python (None where it is not installed)
    and its runner (fer2neuro/interop/runners/<peer>.py) called there."""

    def __init__(self, name: str):
        self.name = name
        self.python = python_of(name)
        self.runner = ROOT / "fer2neuro" / "interop" / "runners" / f"{name}.py"

    @property
    def missing(self) -> str:
        """Why a test that needs the peer is skipped."""
        return (f"the {self.name} peer is not installed (make peer-{self.name}, or set FER2NEURO_PEERS to a folder "
                f"holding {self.name}/bin/python)")

    @staticmethod
    def env(**extra) -> dict:
        """This process's environment without PYTHONPATH (the peer's Python
        must not see fer2neuro's packages), plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(extra)
        return env

    def run(self, *args, env=None) -> dict:
        """``<peer>.py ARGS`` with the peer's Python -> its JSON report."""
        proc = subprocess.run([str(self.python), str(self.runner), *map(str, args)], capture_output=True, text=True,
                              env=env or self.env(), timeout=300)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
        assert proc.returncode == 0 and lines, proc.stderr[-2000:]
        return json.loads(lines[-1][len(REPORT_PREFIX):])

    def run_graph(self, graph_path, x: np.ndarray, folder: Path, *args) -> tuple[dict, dict | None]:
        """The runner's ``run`` of ``graph_path`` on inputs ``x`` (saved in
        ``folder``, with the record) -> (its report, the peer's spikes where
        it ran)."""
        np.save(folder / "x.npy", x)
        report = self.run("run", graph_path, folder / "x.npy", folder / "y.npz", *args)
        return report, (load(folder / "y.npz") if report["ran"] else None)


@dataclass
class PeerExport:
    """The peer's own network of one KIND, exported by the runner: its report
    and the files it wrote (the graph, the inputs, the peer's spikes)."""

    report: dict
    graph: Path
    inputs: Path
    record: Path

    @property
    def x(self) -> np.ndarray | None:
        return np.load(self.inputs) if self.report["ran"] else None

    @property
    def spikes(self) -> dict[str, np.ndarray] | None:
        return load(self.record) if self.report["ran"] else None


def load(path) -> dict[str, np.ndarray]:
    """A runner's record (.npz): spikes by node name."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def equal_shares(ours: dict, theirs: dict, layers=None) -> dict[str, float | None]:
    """Per layer (``layers``, else those of ``theirs``), the share of equal
    neuron-steps (None where a side lacks it or the shapes differ)."""
    out = {}
    for layer in theirs if layers is None else layers:
        a, b = ours.get(layer), theirs.get(layer)
        same = a is not None and b is not None and np.shape(a) == np.shape(b)
        out[layer] = float(np.mean(np.asarray(a, dtype=np.float64) == b)) if same else None
    return out


def nir_spikes(graph: nir.NIRGraph, x: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """fer2neuro's nir target on ``graph``: every spiking node's spikes."""
    rec = get_target("nir").open(graph).run(x, dt=dt)
    return {name: rec.outputs[name].astype(np.float64) for name in rec.spiking}


@functools.lru_cache(maxsize=None)
def _small_model_graph(steps: int, active: bool) -> nir.NIRGraph:
    from fer2neuro.data import FER2013_CLASSES
    from fer2neuro.exporters.nir_export import model_to_nir
    from fer2neuro.model.config import preset_config
    from fer2neuro.model.network import build_model

    torch.manual_seed(0)
    config = preset_config("small", class_names=tuple(FER2013_CLASSES), image_size=16, blocks=two_conv_template(4, (32, 16)))
    model = build_model(config).double().eval()
    if active:
        probe = torch.rand((8, 1, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            for layer, neuron in (("conv1", "if1"), ("conv2", "if2"), ("fc1", "lif1"), ("fc2", "lif2"),
                                  ("fc3", "lif_out")):
                for _ in range(40):
                    if model.record(probe, until=neuron)[neuron].mean() >= 0.1:
                        break
                    getattr(model, layer).weight.mul_(1.4)
    return model_to_nir(model, encoder="direct", timesteps=steps)


def small_model_graph(steps: int, active: bool = True) -> nir.NIRGraph:
    """fer2neuro's network at 16x16 (4 channels, hidden 32 and 16), exported
    to NIR as ``fer2neuro export`` does, direct encoding over ``steps``;
    ``active``: every spiking layer firing (its layers scaled up until they
    do). Made once; each call gets its own copy."""
    return copy.deepcopy(_small_model_graph(steps, active))


def images(samples: int, steps: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Images in [0, 1] held over the steps (direct encoding), (B, T, 1, size, size)."""
    return np.repeat(np.random.default_rng(seed).random((samples, 1, 1, size, size)), steps, axis=1)


def check_for_peer_file(peer: Peer, graph: nir.NIRGraph, x: np.ndarray, folder: Path, peer_dt: float) -> dict:
    """``export --for PEER`` is exact: ``graph`` adapted for the peer and run
    by the peer's importer and simulator, batched, gives fer2neuro's nir
    target's spikes on the original in every spiking layer, and the adapted
    file still means the original in NIR at the peer's dt. -> the runner's
    report."""
    ours = nir_spikes(graph, x, 1.0)
    assert all(s.mean() > 0.005 for s in ours.values()), {k: s.mean() for k, s in ours.items()}
    adapted = for_peer.adapt(peer.name, graph)
    for_peer.write(peer.name, adapted, folder / "g.nir")
    report, theirs = peer.run_graph(folder / "g.nir", x, folder)
    assert report["ran"], report["error"]
    assert not any("one sample" in note for note in report["notes"]), report["notes"]   # the batch runs as one
    exact = equal_shares(ours, theirs, ours)
    assert exact == {layer: 1.0 for layer in ours}, exact
    assert GraphInfo.of(adapted).dt == peer_dt, GraphInfo.of(adapted).dt
    again = equal_shares(ours, nir_spikes(adapted, x, peer_dt), ours)
    assert again == {layer: 1.0 for layer in ours}, again
    return report


def check_dialect_reads_export(export: PeerExport, dialect: str, dt: float) -> dict[str, float | None]:
    """The peer's own export, every layer spiking, is taken for the peer's
    (``dialects.detect``), and read with its dialect it carries the peer's
    ``dt`` and gives the peer's spikes in every layer on the nir target. ->
    the equal shares when it is read with NIR's own equations instead, at
    the same dt."""
    assert export.report["ran"], export.report["error"]
    theirs, x = export.spikes, export.x
    assert all(0.05 < s.mean() < 0.5 for s in theirs.values()), {k: s.mean() for k, s in theirs.items()}
    graph = read_graph(export.graph)
    assert dialects.detect(graph) == dialect, dialects.detect(graph)
    read = dialects.apply(graph, dialect)
    assert GraphInfo.of(read).dt == dt, GraphInfo.of(read).dt
    exact = equal_shares(nir_spikes(read, x, dt), theirs)
    assert exact == {layer: 1.0 for layer in theirs}, exact
    return equal_shares(nir_spikes(dialects.apply(graph, "nir"), x, dt), theirs)


def check_refusals(peer: str, graph: nir.NIRGraph, changes) -> None:
    """``export --for PEER`` adapts ``graph``, and refuses it after each
    ``change(graph)`` of ``changes`` ((change, match) pairs) with a GraphError
    matching ``match``."""
    assert for_peer.adapt(peer, graph).metadata["fer2neuro_for"] == peer, "no fer2neuro_for in the metadata"
    for change, match in changes:
        g = copy.deepcopy(graph)
        change(g)
        with pytest.raises(GraphError, match=match):
            for_peer.adapt(peer, g)
