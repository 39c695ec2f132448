"""ONNX export and the onnxruntime target: float64 spike for spike with the
snnTorch model, float32 reported, one-line errors."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import DataError, GraphError, TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.exporters.onnx_export import model_to_onnx
from fer2neuro.lowering.onnx_graph import onnx_metadata, read_onnx
from fer2neuro.targets import get_target
from fer2neuro.verification.run import VerificationOptions, verify
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(active_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = invoke("export", active_checkpoint, "--target", "onnx", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_export_is_a_checked_onnx_model_with_one_output_per_layer(exported):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    assert [o.name for o in proto.graph.output] == list(SPIKING_LAYERS)
    meta = onnx_metadata(proto)
    assert (meta["encoder"], meta["timesteps"], meta["precision"]) == ("direct", "4", "float64")
    assert json.loads(meta["class_names"])[3] == "happy"
    assert read_onnx(exported).graph.output[0].name == "if1"


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_float64_onnx_matches_snntorch_spike_for_spike(active_checkpoint, encoder):
    report = verify(active_checkpoint, VerificationOptions(backends=["onnx"], samples=16, encoder=encoder,
                                                           progress=False))
    onnx_cmp = report.comparisons["onnx"]
    assert onnx_cmp.precision == "float64" and onnx_cmp.exact_required
    for layer in SPIKING_LAYERS:
        stats = onnx_cmp.layers[layer]
        assert stats.reference_spikes > 0, f"{layer} silent"
        assert stats.match_fraction == 1.0 and stats.identical_trains == 1.0, layer
    assert report.equivalent


def test_float32_onnx_runs_and_is_reported_not_required(active_checkpoint, tmp_path):
    out = tmp_path / "m32.onnx"
    assert invoke("export", active_checkpoint, "--target", "onnx", "--out", out, "--precision", "float32").exit_code == 0
    report = verify(active_checkpoint, VerificationOptions(backends=["onnx"], samples=16, onnx=str(out),
                                                           progress=False))
    c = report.comparisons["onnx"]
    assert c.precision == "float32" and not c.exact_required and report.equivalent
    assert c.layers["if1"].match_fraction > 0.999          # float32 rounding flips only rare near-ties
    assert "float32" in report.table()


def test_simulate_onnx_file_and_checkpoint(active_checkpoint, exported, tmp_path):
    x = np.repeat(np.random.default_rng(0).uniform(0, 1, size=(2, 1, 1, 48, 48)), 4, axis=1)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for name, graph in (("file", exported), ("ckpt", active_checkpoint)):
        result = invoke("simulate", graph, "--target", "onnx", "--input", tmp_path / "x.npy",
                        "--out", tmp_path / f"{name}.npz", "--json")
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["predictions"]) == 2
        outs[name] = np.load(tmp_path / f"{name}.npz")
    nir_run = get_target("nir").run(model_to_nir(_model(active_checkpoint)), x)
    for layer in SPIKING_LAYERS:
        np.testing.assert_array_equal(outs["file"][layer], outs["ckpt"][layer])
        np.testing.assert_array_equal(outs["file"][layer], nir_run.outputs[layer])     # two backends agree


def _model(path):
    import torch

    from fer2neuro.model.checkpoint import load_model

    return load_model(path, "cpu", dtype=torch.float64)[0]


def test_a_nir_file_runs_on_the_onnx_target_as_on_nir(active_checkpoint, tmp_path):
    """The onnx target lowers a NIR graph itself: simulate m.nir --target onnx
    gives the nir target's spikes (float64)."""
    nir_file = tmp_path / "m.nir"
    assert invoke("export", active_checkpoint, "--out", nir_file).exit_code == 0
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 1, 1, 48, 48)).repeat(4, axis=1)
    np.save(tmp_path / "x.npy", x)
    for target in ("nir", "onnx"):
        result = invoke("simulate", nir_file, "--target", target, "--input", tmp_path / "x.npy", "--out",
                        tmp_path / f"{target}.npz", "--json")
        assert result.exit_code == 0, result.output
    nir_out, onnx_out = np.load(tmp_path / "nir.npz"), np.load(tmp_path / "onnx.npz")
    assert set(SPIKING_LAYERS) <= set(onnx_out.files) and onnx_out["if1"].sum() > 0
    for layer in SPIKING_LAYERS:
        np.testing.assert_array_equal(onnx_out[layer], nir_out[layer])


def test_onnx_errors(active_checkpoint, exported, tmp_path):
    target = get_target("onnx")
    varying = np.random.default_rng(0).uniform(0, 1, size=(1, 4, 1, 48, 48))
    with pytest.raises(DataError, match="exported for direct encoding: its input must be held constant"):
        target.run(str(exported), varying)
    with pytest.raises(DataError, match="unrolled over T=4"):
        target.run(str(exported), np.zeros((1, 8, 1, 48, 48)))
    with pytest.raises(TargetError, match="runs a NIR graph or an exported .onnx model, not a dict"):
        target.run({"not": "a graph"}, varying)
    (tmp_path / "bad.onnx").write_text("not protobuf")
    with pytest.raises(GraphError, match="not a valid ONNX model"):
        read_onnx(tmp_path / "bad.onnx")
    plain = onnx.load(str(exported))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "foreign.onnx"))
    with pytest.raises(GraphError, match="not one fer2neuro exported"):
        read_onnx(tmp_path / "foreign.onnx")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 48, 48)))
    nir_file = tmp_path / "m.nir"
    assert invoke("export", active_checkpoint, "--out", nir_file).exit_code == 0
    result = invoke("simulate", exported, "--target", "nir", "--input", tmp_path / "x.npy", "--out",
                    tmp_path / "y.npz")
    assert result.exit_code == 1 and f"{exported} is not a NIR graph: run it with --target onnx" in result.stderr
    result = invoke("export", active_checkpoint, "--target", "nir", "--out", tmp_path / "z.nir",
                    "--precision", "float32")
    assert result.exit_code == 1 and "--precision applies to --target onnx only" in result.stderr


def test_membrane_outputs_match_the_model(active_checkpoint):
    import torch

    model = _model(active_checkpoint)
    x = torch.rand(2, 1, 48, 48, dtype=torch.float64)
    trace = model.record(x, membranes=True)
    proto = model_to_onnx(model, membranes=True)
    assert [o.name for o in proto.graph.output][-1] == "lif_out.v"
    inputs = x[:, None].repeat(1, 4, 1, 1, 1).numpy()
    rec = get_target("onnx").run(proto, inputs, record_states=True)
    for layer in ("if1", "if2", "lif1", "lif_out"):
        np.testing.assert_allclose(rec.states[f"{layer}.v"], trace[f"{layer}.v"].transpose(0, 1).numpy(),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(DataError, match="no membrane outputs"):
        get_target("onnx").run(model_to_onnx(model), inputs, record_states=True)


def test_onnx_refuses_a_time_step_it_cannot_run(exported, tmp_path):
    """Regression: the onnx target ignored dt and reported dt = 1."""
    x = np.repeat(np.random.default_rng(0).uniform(0, 1, size=(1, 1, 1, 48, 48)), 4, axis=1)
    target = get_target("onnx")
    assert target.run(str(exported), x, dt=1.0).dt == 1.0
    with pytest.raises(TargetError, match="at dt = 1, not dt = 0.5"):
        target.run(str(exported), x, dt=0.5)
    np.save(tmp_path / "x.npy", x)
    result = invoke("simulate", exported, "--target", "onnx", "--input", tmp_path / "x.npy", "--dt", "0.5",
                    "--out", tmp_path / "y.npz")
    assert result.exit_code == 1 and "at dt = 1, not dt = 0.5" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "y.npz").exists()


def test_float32_onnx_is_not_paired_with_the_fixed_point_backends(active_checkpoint, tmp_path):
    """Regression: verify --backends onnx,loihi took a float32 ONNX model for
    a fixed-point backend and failed with 'fixed-point backends differ'."""
    out = tmp_path / "m32.onnx"
    assert invoke("export", active_checkpoint, "--target", "onnx", "--out", out, "--precision", "float32").exit_code == 0
    report = verify(active_checkpoint, VerificationOptions(backends=["onnx", "loihi"], samples=8, onnx=str(out),
                                                           progress=False))
    assert report.fixed_agreement == {} and report.equivalent
    assert report.comparisons["onnx"].precision == "float32" and report.comparisons["loihi"].precision == "fixed"
    both = verify(active_checkpoint, VerificationOptions(backends=["onnx", "lava-fixed", "loihi"], samples=8,
                                                         onnx=str(out), progress=False))
    assert list(both.fixed_agreement) == ["lava-fixed vs loihi"] and both.fixed_bit_exact
