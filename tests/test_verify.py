"""snnTorch model vs exported NIR graph, spike for spike (SPEC §4), through
the verification API and the command line; and that a difference is caught
and located."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.nirgraph.file import read_graph, write_graph
from fer2neuro.model.checkpoint import save_checkpoint
from fer2neuro.verification.backends import parse_backends
from fer2neuro.verification.run import VerificationOptions, verify
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_exact_and_active(report, min_spikes=1):
    assert report.samples >= 16
    nir_cmp = report.comparisons["nir"]
    for layer in SPIKING_LAYERS:
        stats = nir_cmp.layers[layer]
        assert stats.reference_spikes >= min_spikes, f"{layer} is silent: the check would prove nothing"
        assert stats.match_fraction == 1.0 and stats.identical_trains == 1.0, layer
        assert stats.backend_spikes == stats.reference_spikes
    assert nir_cmp.first_divergence is None
    assert nir_cmp.prediction_agreement == 1.0
    assert report.equivalent


@pytest.mark.parametrize("encoder,timesteps", [("direct", 4), ("poisson", 8)])
def test_small_width_graph_matches_snntorch_spike_for_spike(checkpoint, encoder, timesteps):
    report = verify(checkpoint, VerificationOptions(backends=["nir"], samples=16, encoder=encoder,
                                                    timesteps=timesteps, batch_size=6, progress=False))
    assert (report.encoder, report.timesteps) == (encoder, timesteps)
    assert_exact_and_active(report, min_spikes=5)


@pytest.mark.slow
def test_paper_preset_graph_matches_snntorch(make_active_model, tmp_path):
    model = make_active_model("paper")
    path = tmp_path / "paper.pt"
    save_checkpoint(path, model.float(), model.config)
    report = verify(path, VerificationOptions(backends=["nir"], samples=16, progress=False))
    assert_exact_and_active(report)
    assert report.comparisons["nir"].layers["if1"].neurons == 128 * 48 * 48


def test_poisson_spikes_are_the_same_for_every_backend_and_seeded(checkpoint):
    opts = dict(backends=["nir"], samples=4, encoder="poisson", progress=False)
    a = verify(checkpoint, VerificationOptions(**opts, poisson_seed=1)).to_dict()
    b = verify(checkpoint, VerificationOptions(**opts, poisson_seed=1)).to_dict()
    c = verify(checkpoint, VerificationOptions(**opts, poisson_seed=2)).to_dict()
    spikes = lambda r: r["backends"]["nir"]["layers"]["if1"]["reference_spikes"]  # noqa: E731
    assert spikes(a) == spikes(b) != spikes(c)


def test_a_changed_weight_is_caught_and_located(checkpoint, tmp_path):
    graph = read_graph_of(checkpoint, tmp_path)
    graph.nodes["conv2"].bias[3] += 0.4                    # channel 3 of conv2 gets more current
    write_graph(graph, tmp_path / "tampered.nir")
    report = verify(checkpoint, VerificationOptions(backends=["nir"], samples=16, progress=False,
                                                    graph=str(tmp_path / "tampered.nir")))
    c = report.comparisons["nir"]
    assert not report.equivalent and not c.equivalent
    for upstream in ("if1", "pool1"):
        assert c.layers[upstream].match_fraction == 1.0
    assert c.layers["if2"].match_fraction < 1.0
    assert c.layers["if2"].count_difference > 0            # more current, more spikes
    d = c.first_divergence
    assert d.layer == "if2" and d.neuron[0] == 3
    assert (d.reference, d.backend) == (0, 1)
    assert "nir differs from snntorch: first divergence at layer if2" in report.failures()[0]


def read_graph_of(checkpoint, tmp_path):
    result = invoke("export", checkpoint, "--target", "nir", "--out", tmp_path / "model.nir")
    assert result.exit_code == 0, result.output
    return read_graph(tmp_path / "model.nir")


def test_cli_verify_json_and_exit_status(checkpoint, tmp_path):
    read_graph_of(checkpoint, tmp_path)
    result = invoke("verify", checkpoint, "--backends", "snntorch,nir", "--samples", 16,
                    "--nir", tmp_path / "model.nir", "--json", "--report", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["equivalent"] is True
    assert data["backends"]["nir"]["layers"]["if1"]["match_fraction"] == 1.0
    assert set(data["backends"]["nir"]["layers"]) == set(SPIKING_LAYERS)
    assert json.loads((tmp_path / "report.json").read_text()) == data

    graph = read_graph(tmp_path / "model.nir")
    graph.nodes["lif1"].v_threshold[:] = 0.5
    write_graph(graph, tmp_path / "bad.nir")
    result = invoke("verify", checkpoint, "--nir", tmp_path / "bad.nir", "--json",
                    "--markdown", tmp_path / "md" / "report.md")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["equivalent"] is False
    assert "Error: nir differs from snntorch: first divergence at layer lif1" in result.stderr
    md = (tmp_path / "md" / "report.md").read_text()
    assert "**NOT EQUIVALENT**" in md and "**First divergence:** layer lif1" in md
    assert "Reference membrane after step" in md and "nir membrane:" in md      # both membrane values
    assert (tmp_path / "md" / "report-nir-divergence.png").read_bytes()[:4] == b"\x89PNG"

    table = invoke("verify", checkpoint, "--samples", 16, "--plot", tmp_path / "agreement.png")
    assert table.exit_code == 0
    assert "EQUIVALENT" in table.stdout and "if1" in table.stdout
    assert (tmp_path / "agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_export_and_simulate(checkpoint, tmp_path):
    result = invoke("export", checkpoint, "--out", tmp_path / "m.nir", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["nodes"]["pool1"] == "IF" and info["dt"] == 1.0 and info["timesteps"] == 4

    x = np.random.default_rng(0).uniform(0, 1, size=(3, 4, 1, 48, 48))
    np.save(tmp_path / "x.npy", x)
    result = invoke("simulate", tmp_path / "m.nir", "--target", "nir", "--input", tmp_path / "x.npy",
                    "--out", tmp_path / "y.npz", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["predictions"]) == 3
    y = np.load(tmp_path / "y.npz")
    assert set(y.files) == set(SPIKING_LAYERS) | {"output"}
    assert y["if1"].shape == (3, 4, 16, 48, 48) and y["if1"].dtype == np.uint8
    np.testing.assert_array_equal(y["output"], y["lif_out"])

    np.save(tmp_path / "one.npy", x[0])                    # one sample, (T, 1, 48, 48)
    result = invoke("simulate", checkpoint, "--input", tmp_path / "one.npy", "--out", tmp_path / "one.npz",
                    "--record", "all", "--membranes")
    assert result.exit_code == 0, result.output
    one = np.load(tmp_path / "one.npz")
    assert one["conv1"].shape == (1, 4, 16, 48, 48) and "lif1.v" in one.files
    np.testing.assert_array_equal(one["lif_out"][0], y["lif_out"][0])


@pytest.mark.parametrize("args,message", [
    (["simulate", "missing.nir", "--input", "x.npy", "--out", "y.npz"], "missing.nir: no such file (expected a .nir graph or a fer2neuro checkpoint)"),
    (["simulate", "@ckpt", "--input", "missing.npy", "--out", "y.npz"], "missing.npy: no such input file"),
    (["simulate", "@ckpt", "--input", "@text", "--out", "y.npz"], "not a readable .npy array"),
    (["simulate", "@ckpt", "--input", "@wrong", "--out", "y.npz"],
     "has shape (2, 4, 1, 32, 32); the graph takes (T, 1, 48, 48)"),
    (["verify", "@ckpt", "--backends", "snntorch"], "nothing to compare"),
    (["verify", "@ckpt", "--backends", "nir,tpu"], "unknown backend tpu"),
    (["verify", "@ckpt", "--nir", "@text"], "not a NIR graph (not an HDF5 file)"),
    (["export", "@text", "--out", "m.nir"], "not a readable fer2neuro checkpoint"),
])
def test_cli_errors_are_one_line(checkpoint, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text").write_text("not an array")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 4, 1, 32, 32)))
    subst = {"@ckpt": str(checkpoint), "@text": "text", "@wrong": "wrong.npy"}
    result = CliRunner().invoke(main, [subst.get(a, a) for a in args])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "y.npz").exists() and not (tmp_path / "m.nir").exists()


def test_backend_list_parsing():
    assert parse_backends("snntorch,nir") == ["nir"]
    assert parse_backends("all") == ["nir", "lava", "lava-fixed", "loihi", "onnx"]
    assert parse_backends(" nir , nir ") == ["nir"]


@pytest.mark.data
def test_real_fer2013_faces_poisson(checkpoint):
    """Real faces from the shared FER2013 file, Poisson-encoded, T = 8."""
    import os
    from pathlib import Path

    data = os.environ.get("FER2NEURO_DATA")
    if not data:
        pytest.skip("FER2NEURO_DATA is not set")
    csv = Path(data) / "fer2013.csv.gz"
    assert csv.is_file(), f"FER2NEURO_DATA={data} lacks fer2013.csv.gz"
    report = verify(checkpoint, VerificationOptions(backends=["nir", "onnx", "loihi"], samples=16, data=str(csv),
                                                    encoder="poisson", timesteps=8, progress=False))
    assert_exact_and_active(report)
    onnx_cmp = report.comparisons["onnx"]
    assert all(layer.identical_trains == 1.0 for layer in onnx_cmp.layers.values())
    loihi = report.comparisons["loihi"]
    assert not loihi.exact_required and loihi.layers["if1"].match_fraction > 0.98
