"""Sinabs as an interop peer, with its own importer, exporter and simulator
(fer2neuro/interop/runners/sinabs.py run with the Sinabs peer's Python):
the runner on graphs, Sinabs's own exports read back with the Sinabs
dialect, ``--for sinabs`` files run by Sinabs, and samna kept out. Real
peers, real spikes: every expectation is a spike train one side computed.

Skipped where the peer environment is missing (``make peer-sinabs``, or
FER2NEURO_PEERS=<folder holding sinabs/bin/python>): the ``peer`` fixture
(conftest.py, tests/interop_support.py).
"""
from __future__ import annotations

import subprocess

import nir
import numpy as np
import pytest

from fer2neuro.errors import GraphError
from fer2neuro.interop.for_peer import sinabs as for_sinabs
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import read_graph, write_graph

PEER = "sinabs"                 # the peer the ``peer`` fixture finds
STEPS = 6                       # the steps of fer2neuro's graph and its inputs
EXPORT = {"seed": 3, "samples": 4, "timesteps": 25}     # the runner's exports (peer_export)


def dense_graph() -> nir.NIRGraph:
    """Input -> Affine -> IF -> Affine -> LIF -> Output, the node types
    Sinabs's importer maps, in nir 1.0.8 terms."""
    rng = np.random.default_rng(4)
    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "fc1": nir.Affine(weight=rng.normal(0.3, 0.5, (12, 10)), bias=rng.normal(0, 0.1, 12)),
             "if1": nir.IF(r=np.ones(12), v_threshold=np.ones(12), v_reset=np.zeros(12)),
             "fc2": nir.Affine(weight=rng.normal(0.4, 0.5, (6, 12)), bias=np.zeros(6)),
             "lif2": nir.LIF(tau=np.full(6, 4.0), r=np.ones(6), v_leak=np.zeros(6), v_threshold=np.ones(6),
                             v_reset=np.zeros(6)),
             "output": nir.Output(output_type={"output": np.array([6])})}
    edges = [("input", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0})


# -- (a) the runner ------------------------------------------------------------------

def test_runner_runs_a_graph_with_sinabs_importer(peer, interop, tmp_path):
    """A graph written for nir 1.0.4 is loaded by sinabs.from_nir and run:
    every spiking node recorded by its name, spike counts per step."""
    for_sinabs.write(dense_graph(), tmp_path / "g.nir")
    x = (np.random.default_rng(0).random((3, 15, 10)) < 0.4).astype(np.float64)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path)
    assert report["version"] == "3.1.3" and report["nir_version"] == "1.0.4"
    assert report["loaded"] and report["ran"], report["error"]
    assert report["layers"]["if1"] == "IAFSqueeze" and report["layers"]["lif2"] == "LIFSqueeze"
    assert report["layers"]["fc1"] == "Linear"
    assert set(theirs) == {"if1", "lif2"}
    assert theirs["if1"].shape == (3, 15, 12) and theirs["lif2"].shape == (3, 15, 6)
    assert theirs["if1"].sum() > 0 and theirs["lif2"].sum() > 0


def test_runner_cannot_read_a_nir_108_file_and_says_which_fields(peer, interop, tmp_path):
    """fer2neuro's files are written by nir 1.0.8 (per-node metadata,
    v_reset): Sinabs's nir 1.0.4 cannot read them, and the report says why."""
    graph = interop.small_model_graph(STEPS)
    write_graph(graph, tmp_path / "g.nir")
    report, _ = peer.run_graph(tmp_path / "g.nir", interop.images(2, STEPS), tmp_path)
    assert not report["loaded"] and not report["ran"] and report["stage"] == "load"
    assert "nir 1.0.4" in report["error"] and "cannot read" in report["error"]
    assert "v_reset (IF if1" in report["error"] and "metadata (Conv2d conv1" in report["error"]


# -- (b) Sinabs's own exports, read with the Sinabs dialect ------------------------

@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_sinabs_export_read_with_the_dialect_gives_sinabs_spikes(peer_export, interop, kind):
    export = peer_export(kind, **EXPORT)
    assert export.report["ran"], export.report["error"]
    x, theirs = export.x, export.spikes
    graph = read_graph(export.graph)               # nir 1.0.8 reads Sinabs's nir 1.0.4 file
    assert dialects.detect(graph) == "sinabs"
    assert max(a.max() for a in theirs.values()) > 1          # several spikes per step: MultiSpike at work
    assert all(a.mean() > 0.05 for a in theirs.values())      # every layer fires
    ours = interop.nir_spikes(dialects.apply(graph, "sinabs"), x, dt=1.0)
    assert set(ours) == set(theirs)
    shares = interop.equal_shares(ours, theirs)
    assert shares == {k: 1.0 for k in theirs}, shares
    plain = interop.equal_shares(interop.nir_spikes(graph, x, dt=1.0), theirs)   # NIR's own semantics: not Sinabs's
    assert min(plain.values()) < 1.0, plain


def test_sinabs_conv_export_leaves_shapes_out_and_the_dialect_fills_them(peer_export):
    """Sinabs writes Conv2d(input_shape=None) and Flatten(input_type=None),
    which nir.write cannot store: the runner writes them empty, says so, and
    the dialect infers them as nir's type inference does."""
    export = peer_export("conv", **EXPORT)
    assert any("nir.write cannot write" in note and "input_shape as []" in note for note in export.report["notes"])
    graph = read_graph(export.graph)
    conv, flatten = graph.nodes["0"], graph.nodes["3"]
    assert np.asarray(conv.input_shape).size == 0 and flatten.input_type["input"] is None
    read = dialects.apply(graph, "sinabs")
    assert tuple(read.nodes["0"].input_shape) == (8, 8)
    assert list(read.nodes["3"].input_type["input"]) == [4, 4, 4]
    assert list(read.nodes["5"].input_type["input"]) == [10]      # a LIF with 0-d parameters
    read.check_types()                                             # nir 1.0.8's own check passes


def test_sinabs_cannot_export_a_recurrent_layer(peer_export):
    report = peer_export("recurrent", **EXPORT).report
    assert not report["ran"] and report["stage"] == "export"
    assert "LIFRecurrent" in report["error"] and "\n" not in report["error"]


def test_sinabs_cannot_import_its_own_lif_exports(peer, peer_export, tmp_path):
    """A round trip through a file fails: nir 1.0.4 reads the LIF's 0-d
    fields as numpy scalars, and sinabs.from_nir calls .unsqueeze on them
    (sinabs/nir.py:95-96)."""
    export = peer_export("dense", **EXPORT)
    report = peer.run("run", export.graph, export.inputs, tmp_path / "y.npz")
    assert not report["loaded"] and "unsqueeze" in report["error"]


# -- (c) --for sinabs -----------------------------------------------------------------

def test_for_sinabs_refuses_fer2neuro_neurons_in_one_line(interop):
    graph = interop.small_model_graph(STEPS)
    with pytest.raises(GraphError) as info:
        for_sinabs.adapt(graph)
    message = str(info.value)
    assert "\n" not in message and "'if1' (IF)" in message and "reset" in message


def test_for_sinabs_closest_file_reads_in_sinabs_but_is_not_exact(peer, interop, tmp_path):
    """The closest graph Sinabs reads (Affine for Linear, thresholds nudged
    so that its >= fires where > does, LIF decay and gain mapped) loads in
    Sinabs's nir 1.0.4 and runs; the first step of the first IF layer
    matches fer2neuro (a threshold crossing from rest), and the run as a
    whole does not (subtractive reset, several spikes per step): the reason
    ``adapt`` refuses by default."""
    graph = interop.small_model_graph(STEPS)
    adapted = for_sinabs.adapt(graph, exact=False)
    assert not any(isinstance(n, nir.Linear) for n in adapted.nodes.values())
    for_sinabs.write(adapted, tmp_path / "g.nir")
    x = interop.images(2, STEPS)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path)
    assert report["loaded"] and report["ran"], report["error"]
    ours = interop.nir_spikes(graph, x, dt=1.0)
    assert set(theirs) == set(ours)
    assert np.array_equal(theirs["if1"][:, 0] > 0, ours["if1"][:, 0] > 0)
    shares = interop.equal_shares(ours, theirs)
    print("--for sinabs (closest file), equal neuron-steps per layer:", shares)
    assert min(shares.values()) < 1.0


def test_for_sinabs_write_is_read_by_nir_104(peer, interop, tmp_path):
    """write() leaves out what nir 1.0.4 lacks (per-node metadata, v_reset)
    and keeps the graph's metadata (dt)."""
    adapted = for_sinabs.adapt(interop.small_model_graph(STEPS), exact=False)
    for_sinabs.write(adapted, tmp_path / "g.nir")
    code = ("import sys, nir; g = nir.read(sys.argv[1]); "
            "print(nir.version, sorted(g.nodes), float(g.metadata['dt']))")
    proc = subprocess.run([str(peer.python), "-c", code, str(tmp_path / "g.nir")], capture_output=True, text=True,
                          env=peer.env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("1.0.4 ") and "'lif_out'" in proc.stdout and proc.stdout.strip().endswith("1.0")
    assert read_graph(tmp_path / "g.nir").nodes.keys() == adapted.nodes.keys()    # and fer2neuro reads it too


# -- (d) samna ----------------------------------------------------------------------------

def test_runner_blocks_samna(peer, tmp_path):
    """samna's PyPI stub pip-installs from the network when imported. A
    stand-in that only records its import is put first on the path: a plain
    ``import samna`` runs it; under the runner's guard it never runs."""
    stub = tmp_path / "stub" / "samna"
    stub.mkdir(parents=True)
    marker = tmp_path / "samna-imported"
    stub.joinpath("__init__.py").write_text(f"open({str(marker)!r}, 'a').write('imported')\n__version__ = '0'\n")
    env = peer.env(PYTHONPATH=str(tmp_path / "stub"))
    control = subprocess.run([str(peer.python), "-c", "import samna"], env=env, capture_output=True, timeout=60)
    assert control.returncode == 0 and marker.exists()          # the stand-in runs on a plain import
    marker.unlink()
    report = peer.run("version", env=env)
    assert report["version"] == "3.1.3" and not marker.exists()
    guarded = subprocess.run([str(peer.python), "-c",
                              f"import runpy; runpy.run_path({str(peer.runner)!r}, run_name='guard'); import samna"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert guarded.returncode != 0 and "blocked by the fer2neuro runner" in guarded.stderr
    assert not marker.exists()
