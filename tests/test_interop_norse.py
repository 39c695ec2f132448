"""Norse as an interop peer, with its own importer, exporter and simulator
(fer2neuro/interop/runners/norse.py run with the Norse peer's Python): the
runner on fer2neuro's graphs, Norse's own exports read back with the Norse
dialect, and ``--for norse`` files run by Norse. Real peers, real spikes:
every expectation is a spike train one side computed.

Skipped where the peer environment is missing (``make peer-norse``, or
FER2NEURO_PEERS=<folder holding norse/bin/python>): the ``peer`` fixture
(conftest.py, tests/interop_support.py).
"""
from __future__ import annotations

import nir
import numpy as np
import pytest

from fer2neuro.nirgraph.file import read_graph, write_graph

PEER = "norse"                  # the peer the ``peer`` fixture finds
STEPS = 12                      # the steps of fer2neuro's graph and its inputs


# -- (a) the runner on fer2neuro's graphs -------------------------------------------

def test_runner_runs_a_fer2neuro_graph_exactly_at_its_dt(peer, interop, tmp_path):
    """Norse's importer reads fer2neuro's IF and LIF as NIR means them when it
    is given the graph's dt (its from_nir(dt=...)); the Flatten (start_dim=0,
    torch.nn.Flatten counts the batch) makes it run one sample at a time."""
    graph = interop.small_model_graph(STEPS)
    write_graph(graph, tmp_path / "g.nir")
    x = interop.images(3, STEPS)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path, "--dt", "1.0")
    assert report["ran"], report["error"]
    assert report["layers"]["if1"] == "norse.IAFCell" and report["layers"]["lif1"] == "norse.LIFBoxCell"
    assert report["dt"] == 1.0 and any("one sample at a time" in note for note in report["notes"])
    ours = interop.nir_spikes(graph, x, 1.0)
    exact = interop.equal_shares(ours, theirs, ours)
    assert exact == {layer: 1.0 for layer in ours}, exact


def test_runner_without_dt_runs_norse_default_dt(peer, interop, tmp_path):
    """Without --dt, from_nir steps at 0.001 whatever the file says: the IF
    layers (v += I, no dt) still agree, the LIF layers do not."""
    graph = interop.small_model_graph(STEPS)
    write_graph(graph, tmp_path / "g.nir")
    x = interop.images(3, STEPS)
    report, theirs = peer.run_graph(tmp_path / "g.nir", x, tmp_path)
    assert report["ran"] and report["dt"] == 1e-3
    ours = interop.nir_spikes(graph, x, 1.0)
    shares = interop.equal_shares(ours, theirs, ours)
    assert all(shares[layer] == 1.0 for layer in ("if1", "pool1", "if2", "pool2")), shares
    assert shares["lif1"] < 1.0, shares


# -- (b) Norse's own exports, read with the Norse dialect ---------------------------

def test_norse_dense_export_read_with_its_dialect_gives_its_spikes(peer_export, interop):
    """Linear -> LIFBoxCell (NIR LIF) -> Linear -> LIFCell (NIR CubaLIF),
    Norse's defaults, tau written as tau * dt."""
    export = peer_export("dense")
    as_nir = interop.check_dialect_reads_export(export, PEER, dt=1e-3)
    # NIR's equations at Norse's dt, the fields as written: far off (tau read as tau * dt)
    assert max(as_nir.values()) < 1.0, as_nir
    graph = read_graph(export.graph)
    assert {type(graph.nodes[n]).__name__ for n in export.spikes} == {"LIF", "CubaLIF"}


def test_norse_importer_reads_its_own_tau_as_a_time_constant(peer, peer_export, interop, tmp_path):
    """from_nir takes tau_mem_inv = 1 / tau (import_nir.py:120-130) where
    to_nir wrote dt / tau_mem_inv: the round trip is not the network."""
    export = peer_export("dense")
    report = peer.run("run", export.graph, export.inputs, tmp_path / "z.npz")
    assert report["ran"], report["error"]
    theirs = export.spikes
    shares = interop.equal_shares(theirs, interop.load(tmp_path / "z.npz"), theirs)
    assert max(shares.values()) < 1.0, shares


@pytest.mark.parametrize("kind, module", [("conv", "Flatten, LPPool2d"), ("recurrent", "LIFRecurrentCell")])
def test_norse_cannot_export_conv_or_recurrent(kind, module, peer_export):
    report = peer_export(kind).report
    assert not report["ran"] and report["stage"] == "export"
    assert f"no mapping for {module}" in report["error"], report["error"]


# -- (c) --for norse ----------------------------------------------------------------

def test_for_norse_file_run_by_norse_equals_fer2neuro_on_the_original(peer, interop, tmp_path):
    """Exact when run at Norse's own dt (no --dt), and the adapted file still
    means the original in NIR at that dt = 0.001."""
    report = interop.check_for_peer_file(peer, interop.small_model_graph(STEPS), interop.images(3, STEPS), tmp_path,
                                         peer_dt=1e-3)
    assert report["dt"] == 1e-3


def test_for_norse_refuses_what_its_importer_cannot_represent(interop):
    changes = ((lambda g: setattr(g.nodes["lif1"], "r", np.full(32, 2.0)), "ignores r"),
               (lambda g: setattr(g.nodes["if1"], "r", np.full((4, 16, 16), 0.5)), "unscaled"),
               (lambda g: setattr(g.nodes["pool1"], "v_reset", np.full((4, 8, 8), -1.0)), "resets to 0"),
               (lambda g: g.nodes.__setitem__("fc2", nir.Scale(scale=np.ones(16))), "no mapping"))
    interop.check_refusals(PEER, interop.small_model_graph(STEPS), changes)
