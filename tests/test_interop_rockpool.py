"""Rockpool as an interop peer, with its own importer, exporter and simulator
(fer2neuro/interop/runners/rockpool.py run with the Rockpool peer's Python):
the runner on graphs, Rockpool's own exports read back with the Rockpool
dialect, ``--for rockpool`` refusals, and samna kept out of ``import
rockpool``. Real peers, real spikes: every expectation is a spike train one
side computed.

Skipped where the peer environment is missing (``make peer-rockpool``, or
FER2NEURO_PEERS=<folder holding rockpool/bin/python>: the ``peer`` fixture,
conftest.py and tests/interop_support.py); the tests that need
Rockpool's NIR import/export are skipped, with the reason, where that
environment lacks nirtorch.
"""
from __future__ import annotations

import subprocess

import nir
import numpy as np
import pytest

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer import rockpool as for_rockpool
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import read_graph, write_graph

PEER = "rockpool"               # the peer the ``peer`` fixture finds
EXPORT = {"seed": 2, "samples": 4, "timesteps": 40}     # the runner's exports (peer_export)


@pytest.fixture(scope="module")
def nir_io(peer):
    """Rockpool's NIR import/export work in this environment (they need nirtorch)."""
    report = peer.run("version")
    if report.get("error"):
        pytest.skip(f"the {PEER} peer cannot import or export NIR here: {report['error']}")


def cuba_graph() -> nir.NIRGraph:
    """Input -> Affine -> CubaLIF -> Linear -> CubaLIF -> Output (nir 1.0.8 terms):
    node types Rockpool's importer maps, weights float32 as Rockpool holds them."""
    rng = np.random.default_rng(5)
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)   # noqa: E731

    def cuba(n):
        tau = np.full(n, 0.02)
        return nir.CubaLIF(tau_syn=np.full(n, 0.01), tau_mem=tau, r=f32(tau * np.exp(-1e-3 / tau) / 1e-3),
                           v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.ones(n), v_reset=np.zeros(n))

    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "fc1": nir.Affine(weight=f32(rng.normal(0.15, 0.2, (12, 10))), bias=f32(rng.normal(0, 0.02, 12))),
             "lif1": cuba(12),
             "fc2": nir.Linear(weight=f32(rng.normal(0.2, 0.2, (6, 12)))),
             "lif2": cuba(6),
             "output": nir.Output(output_type={"output": np.array([6])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


# -- (a) the runner ------------------------------------------------------------------

def test_runner_runs_a_graph_as_the_dialect_does_at_the_importers_dt(peer, interop, tmp_path, nir_io):
    """Rockpool's from_nir loads a CubaLIF graph (written for nir 1.0.4) and
    runs it; its dt comes from r (tau_mem / (1 + r)), and at that dt the
    Rockpool dialect gives exactly its spikes."""
    graph = cuba_graph()
    for_rockpool.write(graph, tmp_path / "g.nir")
    x = (np.random.default_rng(0).random((3, 30, 10)) < 0.4).astype(np.float64)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path, "--dt", "0.001")
    assert report["version"] == "3.1.0" and report["nir_version"] == "1.0.4"
    assert report["loaded"] and report["ran"], report["error"]
    assert report["layers"]["lif1"] == "LIFTorch" and report["layers"]["fc2"] == "LinearTorch"
    assert any("blocked import of samna" in note for note in report["notes"])
    assert any("--dt is not used" in note for note in report["notes"])
    assert set(theirs) == {"lif1", "lif2"} and theirs["lif1"].shape == (3, 30, 12)
    assert all(a.sum() > 0 for a in theirs.values())
    importer_dt = report["dt"]
    assert importer_dt != 1e-3 and abs(importer_dt - 1e-3) < 1e-5          # r does not give dt back exactly
    ours = interop.nir_spikes(dialects.apply(read_graph(tmp_path / "g.nir"), "rockpool"), x, dt=importer_dt)
    assert interop.equal_shares(ours, theirs) == {"lif1": 1.0, "lif2": 1.0}


def test_runner_runs_a_recurrent_subgraph_as_the_dialect_does(peer, interop, tmp_path, nir_io):
    """Rockpool's importer reads a 4-node subgraph (CubaLIF + its recurrent
    Linear) as one recurrent LIFTorch (nir.py:72-106); the runner records it
    as "<subgraph>.<CubaLIF>", and the Rockpool dialect on the flattened
    cycle (a back edge: the previous step's spikes) gives exactly its
    spikes."""
    rng = np.random.default_rng(6)
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)   # noqa: E731
    base = cuba_graph()
    rnn = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([12])}),
                              "lif": base.nodes["lif1"],
                              "w_rec": nir.Linear(weight=f32(rng.normal(0.0, 0.05, (12, 12)))),
                              "output": nir.Output(output_type={"output": np.array([12])})},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                       type_check=False)
    nodes = dict(base.nodes)
    nodes["rnn"] = rnn
    del nodes["lif1"]
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "rnn"), ("rnn", "fc2"), ("fc2", "lif2"),
                                             ("lif2", "output")], type_check=False)
    for_rockpool.write(graph, tmp_path / "g.nir")
    x = (np.random.default_rng(1).random((2, 30, 10)) < 0.4).astype(np.float64)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path)
    assert report["ran"], report["error"]
    assert report["layers"]["rnn"] == "LIFTorch"
    assert set(theirs) == {"rnn.lif", "lif2"} and all(a.sum() > 0 for a in theirs.values())
    ours = interop.nir_spikes(dialects.apply(read_graph(tmp_path / "g.nir"), "rockpool"), x, dt=report["dt"])
    assert interop.equal_shares(ours, theirs) == {"rnn.lif": 1.0, "lif2": 1.0}


def test_runner_cannot_read_a_nir_108_file_and_says_which_fields(peer, tmp_path, nir_io):
    write_graph(cuba_graph(), tmp_path / "g.nir")                  # nir 1.0.8: v_reset
    report, _ = peer.run_graph(tmp_path / "g.nir", np.zeros((1, 2, 10)), tmp_path)
    assert not report["loaded"] and report["stage"] == "load"
    assert "nir 1.0.4" in report["error"] and "v_reset (CubaLIF lif1" in report["error"]


# -- (b) Rockpool's own exports, read with the Rockpool dialect --------------------

def test_rockpool_dense_export_read_with_the_dialect_gives_rockpool_spikes(peer_export, interop, nir_io):
    export = peer_export("dense", **EXPORT)
    assert export.report["ran"], export.report["error"]
    assert any("blocked import of samna" in note for note in export.report["notes"])
    x, theirs = export.x, export.spikes
    graph = read_graph(export.graph)
    assert dialects.detect(graph) == "rockpool"
    assert list(graph.nodes["input"].input_type["input"]) == [1, 12]      # the exporter's batch dimension
    read = dialects.apply(graph, "rockpool")
    assert read.metadata["dt"] == 1e-3                                     # recovered from r
    assert list(read.nodes["input"].input_type["input"]) == [12]
    assert max(a.max() for a in theirs.values()) > 1 and all(a.mean() > 0.05 for a in theirs.values())
    shares = interop.equal_shares(interop.nir_spikes(read, x, dt=read.metadata["dt"]), theirs)
    assert shares == {k: 1.0 for k in theirs}, shares
    plain = interop.nir_spikes(graph, x[..., None, :], dt=1e-3)             # Input type [1, 12] as written
    plain = interop.equal_shares({k: v.reshape(theirs[k].shape) for k, v in plain.items()}, theirs)
    assert min(plain.values()) < 1.0, plain                                # NIR's own semantics: not Rockpool's


def test_rockpool_recurrent_export_loses_its_recurrent_weights(peer_export, interop, nir_io):
    """to_nir writes a has_rec LIFTorch as a plain CubaLIF: the file has no
    cycle, so nothing read from it gives Rockpool's recurrent layer."""
    export = peer_export("recurrent", **EXPORT)
    assert export.report["ran"], export.report["error"]
    assert any("without its recurrent weights" in note for note in export.report["notes"])
    graph = read_graph(export.graph)
    assert [e for e in graph.edges if e[1] == "1_LIFTorch"] == [("0_LinearTorch", "1_LIFTorch")]
    read = dialects.apply(graph, "rockpool")
    shares = interop.equal_shares(interop.nir_spikes(read, export.x, dt=read.metadata["dt"]), export.spikes)
    print("rockpool recurrent export read with the dialect, equal neuron-steps:", shares)
    assert shares["1_LIFTorch"] < 1.0


def test_rockpool_cannot_export_conv(peer_export, nir_io):
    report = peer_export("conv", **EXPORT).report
    assert not report["ran"] and "no convolutional module" in report["error"] and "\n" not in report["error"]


def test_rockpool_importer_does_not_reproduce_its_own_export(peer, peer_export, interop, nir_io, tmp_path):
    """Round trip through Rockpool: its importer takes dt = tau / (1 + r),
    about 0.99877 ms for the 1 ms its exporter encoded in r, so its own
    export runs differently."""
    export = peer_export("dense", **EXPORT)
    report = peer.run("run", export.graph, export.inputs, tmp_path / "y.npz")
    assert report["ran"], report["error"]
    assert abs(report["dt"] - 0.000998772) < 1e-9
    shares = interop.equal_shares(interop.load(tmp_path / "y.npz"), export.spikes)
    print("rockpool export -> rockpool from_nir, equal neuron-steps:", shares)
    assert min(shares.values()) < 1.0


# -- (c) --for rockpool ----------------------------------------------------------------

def test_for_rockpool_refuses_fer2neuro_graphs_in_one_line(interop):
    with pytest.raises(GraphError) as info:
        for_rockpool.adapt(interop.small_model_graph(6, active=False))
    message = str(info.value)
    assert "\n" not in message and "'conv1' (Conv2d)" in message
    dense = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([4])}),
                                "fc": nir.Linear(weight=np.ones((3, 4))),
                                "lif": nir.LIF(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.zeros(3),
                                               v_threshold=np.ones(3), v_reset=np.zeros(3)),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    with pytest.raises(GraphError) as info:
        for_rockpool.adapt(dense)
    assert "\n" not in str(info.value) and "'lif' (LIF)" in str(info.value) and "tau_mem" in str(info.value)


# -- (d) samna ----------------------------------------------------------------------------

def test_import_rockpool_imports_samna_and_the_runner_blocks_it(peer, tmp_path):
    """samna's PyPI stub pip-installs from the network when imported, and
    ``import rockpool`` imports samna (utilities/backend_management.py). A
    stand-in that records who imported it is put first on the path: a plain
    ``import rockpool`` runs it; under the runner it never runs."""
    stub = tmp_path / "stub" / "samna"
    stub.mkdir(parents=True)
    marker = tmp_path / "samna-imported"
    stub.joinpath("__init__.py").write_text(
        f"import traceback\nopen({str(marker)!r}, 'a').write(''.join(traceback.format_stack()))\n"
        f"__version__ = '0'\n")
    env = peer.env(PYTHONPATH=str(tmp_path / "stub"))
    control = subprocess.run([str(peer.python), "-c", "import rockpool"], env=env, capture_output=True, timeout=120)
    assert control.returncode == 0 and marker.exists()
    assert "backend_management.py" in marker.read_text()                # the trigger
    marker.unlink()
    report = peer.run("version", env=env)
    assert report["stage"] in (None, "import") and not marker.exists()
    if not report.get("error"):
        assert report["version"] == "3.1.0"
