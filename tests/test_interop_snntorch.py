"""snnTorch as an interop peer, with its own importer, exporter and simulator
(fer2neuro/interop/runners/snntorch.py run with the snnTorch peer's Python):
the runner on fer2neuro's graphs, snnTorch's own exports read back with the
snnTorch dialect, and ``--for snntorch`` files run by snnTorch. Real peers,
real spikes: every expectation is a spike train one side computed.

Skipped where the peer environment is missing (``make peer-snntorch``, or
FER2NEURO_PEERS=<folder holding snntorch/bin/python>): the ``peer``
fixture (conftest.py, tests/interop_support.py).
"""
from __future__ import annotations

import copy

import nir
import numpy as np
import pytest

from fer2neuro.errors import GraphError
from fer2neuro.interop import for_peer
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import read_graph, write_graph

PEER = "snntorch"               # the peer the ``peer`` fixture finds
STEPS = 12                      # the steps of fer2neuro's graph and its inputs


# -- (a) the runner on fer2neuro's graphs -------------------------------------------

def test_runner_loads_a_fer2neuro_graph_but_snntorch_cannot_run_its_if_nodes(peer, interop, tmp_path):
    """snnTorch's importer turns NIR's IF into a Leaky(beta=0.9, init_hidden=
    False), whose (spk, mem) output the next module cannot take."""
    graph = interop.small_model_graph(STEPS)
    write_graph(graph, tmp_path / "g.nir")
    report, _ = peer.run_graph(tmp_path / "g.nir", interop.images(3, STEPS), tmp_path, "--dt", "1.0")
    assert report["loaded"] and not report["ran"] and report["stage"] == "run"
    assert "tuple" in report["error"]
    assert report["layers"]["if1"].startswith("snntorch.Leaky (init_hidden=False")
    assert report["layers"]["lif1"] == "snntorch.Leaky"
    assert any("--dt 1 not used" in note for note in report["notes"])
    assert any("one sample at a time" in note for note in report["notes"])   # Flatten(start_dim=0)


def test_runner_runs_a_lif_graph_as_nir_at_dt_1e4(peer, interop, tmp_path):
    """A LIF-only graph in fer2neuro's semantics (dt = 1 in its metadata):
    snnTorch runs it, batched, as NIR's equations at its own dt = 1e-4."""
    rng = np.random.default_rng(3)
    n_in, n = 12, 10
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc": nir.Affine(weight=rng.normal(0.1, 0.3, (n, n_in)), bias=rng.normal(0.0, 0.1, n)),
             "lif": nir.LIF(tau=np.full(n, 3e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                            v_reset=np.zeros(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                         metadata={"dt": 1.0})
    write_graph(graph, tmp_path / "g.nir")
    x = (rng.random((3, 20, n_in)) < 0.5).astype(np.float64)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path)
    assert report["ran"], report["error"]
    assert report["dt"] == 1e-4 and not any("one sample" in note for note in report["notes"])
    assert theirs["lif"].shape == (3, 20, n) and 0 < theirs["lif"].mean() < 0.9
    assert interop.equal_shares(interop.nir_spikes(graph, x, 1e-4), theirs, ["lif"]) == {"lif": 1.0}
    at_file_dt = interop.equal_shares(interop.nir_spikes(graph, x, 1.0), theirs, ["lif"])
    assert at_file_dt["lif"] < 1.0                                               # the file's dt is not read


# -- (b) snnTorch's own exports, read with the snnTorch dialect --------------------

@pytest.mark.parametrize("kind", ["dense", "conv", "recurrent"])
def test_snntorch_export_read_with_its_dialect_gives_its_spikes(kind, peer_export, interop):
    as_nir = interop.check_dialect_reads_export(peer_export(kind), PEER, dt=1e-4)
    # NIR's own equations at snnTorch's dt: the subtract reset one step late is lost
    assert min(as_nir.values()) < 1.0, as_nir


def test_snntorch_importer_reads_back_its_dense_export_with_other_semantics(peer, peer_export, interop,
                                                                           tmp_path):
    """Its importer reads its own LIF as a Leaky with a zero reset applied at
    once (import_nir.py:270-276), not the subtract reset one step late that
    the exporting Leaky had: the round trip changes the spikes."""
    export = peer_export("dense")
    report = peer.run("run", export.graph, export.inputs, tmp_path / "z.npz")
    assert report["ran"], report["error"]
    theirs, back = export.spikes, interop.load(tmp_path / "z.npz")
    shares = interop.equal_shares(theirs, back, theirs)
    assert min(shares.values()) < 1.0, shares
    # and what it reads is NIR's equations at dt = 1e-4, the fer2neuro nir target's
    as_nir = interop.equal_shares(interop.nir_spikes(dialects.apply(read_graph(export.graph), "nir"), export.x, 1e-4),
                                  back)
    assert as_nir == {layer: 1.0 for layer in back}, as_nir


def test_snntorch_importer_cannot_read_back_its_own_conv_and_recurrent_exports(peer, peer_export, tmp_path):
    """Its AvgPool2d (an int kernel_size, import_nir.py:220 calls tuple() on
    it) and its RLeaky (a subgraph nirtorch 2.6's nir_to_torch fails on)."""
    for kind, error in (("conv", "not iterable"), ("recurrent", "has no attribute 'items'")):
        export = peer_export(kind)
        assert export.report["ran"], export.report["error"]
        report = peer.run("run", export.graph, export.inputs, tmp_path / f"{kind}.npz")
        assert report["stage"] == "load" and error in report["error"], report


# -- (c) --for snntorch -------------------------------------------------------------

def test_for_snntorch_file_run_by_snntorch_equals_fer2neuro_on_the_original(peer, interop, tmp_path):
    """Exact, and the adapted file still means the original in NIR at its
    own dt = 1e-4 (snnTorch's)."""
    report = interop.check_for_peer_file(peer, interop.small_model_graph(STEPS), interop.images(3, STEPS), tmp_path,
                                         peer_dt=1e-4)
    assert report["dt"] == 1e-4


def test_for_snntorch_refuses_what_its_importer_cannot_represent(interop):
    graph = interop.small_model_graph(STEPS)
    recurrent = copy.deepcopy(graph)
    recurrent.nodes["w_rec"] = nir.Linear(weight=np.eye(16))
    recurrent.edges = [*recurrent.edges, ("lif2", "w_rec"), ("w_rec", "lif2")]
    changes = ((lambda g: setattr(g.nodes["lif1"], "v_reset", np.full(32, 0.2)), "resets to 0"),
               (lambda g: setattr(g.nodes["if1"], "v_threshold", np.linspace(0.5, 1.5, 4 * 16 * 16).reshape(4, 16, 16)),
                "one v_threshold"),
               (lambda g: setattr(g.nodes["lif2"], "v_leak", np.full(16, 0.1)), "v_leak"),
               (lambda g: g.nodes.__setitem__("fc2", nir.Scale(scale=np.ones(16))), "no mapping"))
    interop.check_refusals(PEER, graph, changes)
    with pytest.raises(GraphError, match="recurrent edge"):
        for_peer.adapt(PEER, recurrent)
