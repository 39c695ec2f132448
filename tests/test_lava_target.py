"""The Lava targets: float Lava against snnTorch spike for spike, the netx
export loading and running in fixed point, the per-layer delay alignment,
and clear errors."""
import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import DataError, GraphError, TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.lava_folder import GRAPH_FILE, MANIFEST_FILE, NETWORK_FILE, LavaArtifact, write_artifact
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.lowering.quantise import quantize_layer
from fer2neuro.targets import get_target
from fer2neuro.targets.lava.alignment import align, run_steps
from fer2neuro.verification.run import VerificationOptions, verify
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)

pytestmark = pytest.mark.lava


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("lava-export") / "lava"
    result = invoke("export", checkpoint, "--target", "lava", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_float_lava_matches_snntorch_spike_for_spike(checkpoint, encoder):
    report = verify(checkpoint, VerificationOptions(backends=["lava"], samples=4, encoder=encoder,
                                                    progress=False))
    lava = report.comparisons["lava"]
    for layer in SPIKING_LAYERS:
        stats = lava.layers[layer]
        assert stats.reference_spikes > 0, f"{layer} is silent: the check would prove nothing"
        assert stats.match_fraction == 1.0 and stats.identical_trains == 1.0, layer
    assert lava.precision == "float64" and lava.exact_required
    assert report.equivalent and lava.prediction_agreement == 1.0


def test_export_folder_and_netx_network_loads(artifact):
    assert sorted(p.name for p in artifact.iterdir()) == sorted([NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE])
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    assert manifest["encoder"] == "direct" and manifest["input"] == "bias" and manifest["timesteps"] == 4
    assert [entry["name"] for entry in manifest["layers"]] == list(SPIKING_LAYERS)
    assert [entry["depth"] for entry in manifest["layers"]] == [0, 1, 2, 3, 4, 5, 6]
    for entry in manifest["layers"]:
        assert entry["vth"] % 2 == 1 and 0 < entry["vth"] <= 131071
        assert entry["vDecay"] == (0 if entry["name"] in ("if1", "pool1", "if2", "pool2") else 2048)
        if entry["weight_max"] is not None:
            assert -256 <= entry["weight_min"] and entry["weight_max"] <= 254

    import fer2neuro.lava_compat as compat

    compat.require_lava()
    from lava.lib.dl import netx

    net = netx.hdf5.Network(net_config=str(artifact / NETWORK_FILE))
    kinds = [type(block).__name__ for block in net.layers]
    assert kinds == ["Input", "Conv", "Conv", "Conv", "Dense", "Dense", "Dense"]
    assert tuple(net.layers[0].shape) == (48, 48, 16)             # Lava's (W, H, C)
    assert tuple(net.layers[-1].shape) == (7,)


def test_fixed_point_lava_runs_the_export_and_its_first_layer_is_integer_exact(artifact, model):
    """lava-fixed runs network.net in Lava's bit-accurate models. Its first
    layer (bias-driven IF) must equal integer IF arithmetic on the quantised
    bias exactly; the rest is compared with the float model by verify."""
    from fer2neuro.lowering.quantise import even

    x = np.random.default_rng(3).uniform(0, 1, size=(1, 48, 48))
    inputs = np.repeat(x[None, None], 4, axis=1)                      # (1, T, 1, 48, 48)
    rec = get_target("lava-fixed").run(str(artifact), inputs)
    loaded = LavaArtifact.load(artifact)
    plan = build_plan(loaded.graph, direct=True)
    scale = loaded.layer_scales()["if1"]
    bias = even(plan.input_bias(x) * scale).astype(np.int64)
    vth = loaded.manifest["layers"][0]["vth"]
    v, spikes = np.zeros_like(bias), []
    for _ in range(4):
        v = v + bias
        s = v > vth
        v[s] = 0
        spikes.append(s)
    np.testing.assert_array_equal(rec.outputs["if1"][0], np.array(spikes))
    assert set(rec.outputs) >= set(SPIKING_LAYERS)
    assert all(rec.outputs[layer].shape[:2] == (1, 4) for layer in SPIKING_LAYERS)
    assert rec.outputs["lif_out"].sum() > 0


def test_lava_fixed_is_reported_not_required_to_match(checkpoint, artifact):
    report = verify(checkpoint, VerificationOptions(backends=["lava-fixed"], samples=4, progress=False,
                                                    lava=str(artifact)))
    fixed = report.comparisons["lava-fixed"]
    assert fixed.precision == "fixed" and not fixed.exact_required and fixed.equivalent
    assert report.equivalent                       # fixed point alone never fails verify
    assert fixed.layers["if1"].match_fraction > 0.99   # 8-bit quantisation, measured ~99.9 %
    assert 0.0 <= fixed.prediction_agreement <= 1.0


def test_alignment_removes_the_per_layer_delay(model):
    assert run_steps(4, 6) == 10
    recorded = np.arange(10)[:, None] * np.ones((1, 3))
    np.testing.assert_array_equal(align(recorded, 2, 4)[:, 0], [2, 3, 4, 5])
    with pytest.raises(ValueError, match="too short"):
        align(recorded, 7, 4)
    # In a real run, each layer's raw recording is the aligned one shifted by its depth.
    from fer2neuro.targets.lava import processes

    plan = build_plan(model_to_nir(model), direct=True)
    assert [layer.depth for layer in plan.layers] == [0, 1, 2, 3, 4, 5, 6]
    assert [layer.depth for layer in build_plan(model_to_nir(model), direct=False).layers] == [1, 2, 3, 4, 5, 6, 7]
    seen = {}
    original = processes.aligned_spikes

    def spy(plan_, recorded_, timesteps):
        seen.update(recorded_)
        return original(plan_, recorded_, timesteps)

    processes.aligned_spikes = spy
    try:
        x = np.repeat(np.random.default_rng(0).uniform(0, 1, (1, 1, 48, 48)), 4, axis=0)
        out = processes.run_float_sample(plan, x)
    finally:
        processes.aligned_spikes = original
    for layer in plan.layers:
        raw = np.moveaxis(processes.from_lava_layout(seen[layer.name]), -1, 0)
        assert raw.shape[0] == 4 + 6
        assert not raw[:layer.depth].any(), f"{layer.name} spiked before its input could arrive"
        np.testing.assert_array_equal(raw[layer.depth:layer.depth + 4], out[layer.name])


def test_bias_schedule_waits_for_each_layers_first_input(model):
    from fer2neuro.targets.lava.processes import bias_schedule

    plan = build_plan(model_to_nir(model), direct=False)
    schedule = bias_schedule(plan)
    assert [wait for wait, _ in schedule] == [1, 1, 1, 1, 1, 1, 1]
    assert [writes for _, writes in schedule] == [[(n, 0)] for n in SPIKING_LAYERS]


def test_quantisation_keeps_thresholds_odd_and_weights_even(model):
    plan = build_plan(model_to_nir(model), direct=True)
    for layer in plan.layers[1:]:
        q = quantize_layer(layer, plan)
        assert q.vth % 2 == 1
        assert (q.weight % 2 == 0).all() and q.weight.max() <= 254 and q.weight.min() >= -256
        assert abs(q.vth / q.scale - layer.vth) < 1e-12                # the threshold is exact
        if q.bias is not None:
            assert (q.bias % 2 == 0).all() and np.abs(q.bias).max() <= 4095


def test_weight_rounding_balances_each_neurons_errors():
    from fer2neuro.lowering.quantise import even, even_sum_preserving

    w = np.random.default_rng(0).normal(0, 40, size=(64, 300)) + 0.6       # rows lean positive
    q = even_sum_preserving(w)
    assert (q % 2 == 0).all() and np.abs(q - w).max() < 2
    assert np.abs(q.sum(1) - w.sum(1)).max() <= 1.0 + 1e-9
    plain = np.abs(even(w).sum(1) - w.sum(1)).mean()
    assert np.abs(q.sum(1) - w.sum(1)).mean() < plain / 5


def test_graph_lava_cannot_run_is_a_clear_error():
    ones = np.ones(3)
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                                "fc": nir.Linear(weight=np.eye(3)),
                                "cuba": nir.Delay(delay=ones),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")])
    with pytest.raises(TargetError, match=r"node 'cuba' \(Delay\) cannot run on the lava target"):
        get_target("lava").run(graph, np.ones((1, 2, 3)))
    graph.nodes["cuba"] = nir.IF(r=ones, v_threshold=ones, v_reset=-ones)
    with pytest.raises(TargetError, match=r"Lava's LIF resets to 0"):
        get_target("lava").run(graph, np.ones((1, 2, 3)))
    graph.nodes["cuba"] = nir.IF(r=ones, v_threshold=np.array([1.0, 2.0, 1.0]))
    with pytest.raises(TargetError, match="one threshold per layer"):
        get_target("lava-fixed").run(graph, np.ones((1, 2, 3)))


def test_inputs_lava_cannot_take(model):
    graph = model_to_nir(model)
    varying_analog = np.random.default_rng(0).uniform(0, 1, size=(1, 4, 1, 48, 48))
    with pytest.raises(DataError, match="spike inputs .* or an input held constant"):
        get_target("lava").run(graph, varying_analog)


def test_a_too_bright_input_is_clamped_not_wrapped(artifact):
    """Pixels far outside [0, 1] give if1 drives far above its threshold; the
    clamp (quantise.input_clamp) keeps them in the 13-bit bias, and if1 fires
    wherever the float drive exceeds the threshold, on every step."""
    too_bright = np.full((1, 4, 1, 48, 48), 50.0)
    fixed = get_target("lava-fixed").run(str(artifact), too_bright).outputs["if1"]
    graph = LavaArtifact.load(artifact).graph
    np.testing.assert_array_equal(fixed, get_target("nir").run(graph, too_bright, record=["if1"]).outputs["if1"])


def test_missing_or_incomplete_export_folder(artifact, tmp_path):
    with pytest.raises(GraphError, match="no such Lava export folder"):
        LavaArtifact.load(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (GRAPH_FILE, MANIFEST_FILE):
        (broken / name).write_bytes((artifact / name).read_bytes())
    with pytest.raises(GraphError, match="incomplete Lava export, network.net is missing"):
        LavaArtifact.load(broken)
    result = CliRunner().invoke(main, ["simulate", str(broken), "--target", "lava-fixed",
                                       "--input", "x.npy", "--out", "y.npz"])
    assert result.exit_code == 1
    assert "network.net is missing" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_export_writes_the_folder_atomically(model, tmp_path, monkeypatch):
    import fer2neuro.lowering.lava_folder as lava_folder

    out = tmp_path / "lava"
    write_artifact(model_to_nir(model), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lava_folder, "write_netx", crash)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(model_to_nir(model), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["lava"]                # no staging folder left
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraphError, match="not a Lava export folder"):
        write_artifact(model_to_nir(model), tmp_path / "file")


def test_simulate_cli_on_the_lava_targets(artifact, tmp_path):
    x = (np.random.default_rng(1).uniform(0, 1, size=(1, 48, 48)))
    np.save(tmp_path / "x.npy", np.repeat(x[None], 4, axis=0))                # one sample, (T, 1, 48, 48)
    outs = {}
    for target in ("nir", "lava", "lava-fixed"):
        result = invoke("simulate", artifact, "--target", target, "--input", tmp_path / "x.npy",
                        "--out", tmp_path / f"{target}.npz", "--json")
        assert result.exit_code == 0, result.output
        outs[target] = np.load(tmp_path / f"{target}.npz")
    for layer in SPIKING_LAYERS:
        np.testing.assert_array_equal(outs["lava"][layer], outs["nir"][layer])
    assert outs["lava-fixed"]["output"].shape == (1, 4, 7)
