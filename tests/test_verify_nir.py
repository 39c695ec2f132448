"""``fer2neuro verify GRAPH.nir``: a NIR graph built here (as another tool
would write it, with no fer2neuro metadata), no checkpoint, no data set.
Every target is compared with the nir target: float64 ones exactly, fixed
point as agreement figures, the fixed-point pair bit for bit; a target that
cannot run the graph is reported; a difference is caught."""
import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.verification.backends import TargetBackend, parse_backends

TARGETS = "nir,onnx,lava,lava-fixed,loihi"


def lif(n, threshold=1.0):
    return nir.LIF(tau=np.full(n, 4.0), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, threshold),
                   v_reset=np.zeros(n))


def if_(shape, threshold=1.0):
    return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape))


def dense_graph(seed=0):
    """Input(12) -> Affine -> LIF(10) -> Affine -> IF(4) -> Output."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([12])}),
             "fc1": nir.Affine(weight=rng.uniform(0, 0.8, (10, 12)), bias=rng.uniform(0, 0.1, 10)),
             "lif1": lif(10),
             "fc2": nir.Affine(weight=rng.uniform(0, 1.0, (4, 10)), bias=np.zeros(4)),
             "if2": if_(4),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "if2"), ("if2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def conv_graph(seed=0):
    """Input(1, 8, 8) -> Conv2d -> IF -> SumPool2d -> IF -> Flatten -> Affine -> IF(3) -> Output."""
    rng = np.random.default_rng(seed)
    c, h = 4, 8
    nodes = {"input": nir.Input(input_type={"input": np.array([1, h, h])}),
             "conv": nir.Conv2d(input_shape=(h, h), weight=rng.uniform(0, 0.6, (c, 1, 3, 3)), stride=1,
                                padding=1, dilation=1, groups=1, bias=np.zeros(c)),
             "if1": if_((c, h, h)),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "if2": if_((c, h // 2, h // 2), threshold=1.5),
             "flat": nir.Flatten(input_type={"input": np.array([c, h // 2, h // 2])}, start_dim=0),
             "fc": nir.Affine(weight=rng.uniform(-0.1, 0.4, (3, c * h * h // 4)), bias=np.zeros(3)),
             "if3": if_(3),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "if2"), ("if2", "flat"),
             ("flat", "fc"), ("fc", "if3"), ("if3", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    uneven = dense_graph()
    uneven.nodes["if2"].v_threshold[:] = [1.0, 2.0, 1.0, 1.5]      # Lava's LIF has one threshold per layer
    for name, graph in (("dense", dense_graph()), ("conv", conv_graph()), ("uneven", uneven)):
        nir.write(folder / f"{name}.nir", graph)
    return folder


def invoke(*args):
    return CliRunner().invoke(main, ["verify", *map(str, args)], catch_exceptions=False)


def assert_exact(backend: dict):
    assert backend["exact_required"] and backend["counts_equal"] and backend["first_divergence"] is None
    for layer in backend["layers"].values():
        assert layer["match_fraction"] == layer["identical_trains"] == layer["spike_agreement"] == 1.0
        assert layer["count_ratio"] == 1.0 and layer["count_difference"] == 0


def assert_plausible_agreement(backend: dict):
    assert backend["precision"] == "fixed" and not backend["exact_required"]
    for layer in backend["layers"].values():
        for figure in ("match_fraction", "identical_trains", "spike_agreement"):
            assert 0.5 < layer[figure] <= 1.0, (figure, layer[figure])
        assert 0.5 < layer["count_ratio"] < 2.0
    assert 0.0 <= backend["prediction_agreement"] <= 1.0


def test_dense_graph_every_target_against_nir(graphs, tmp_path):
    result = invoke(graphs / "dense.nir", "--targets", TARGETS, "--samples", 3, "--seed", 1, "-T", 16,
                    "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reference"] == "nir" and data["equivalent"] is True and data["unavailable"] == {}
    assert data["samples"] == 3 and data["timesteps"] == 16 and data["output_layer"] == "if2"
    assert data["inputs"] == {"source": "generated", "encoder": "poisson", "seed": 1, "rate": 0.2}
    assert set(data["backends"]) == {"onnx", "lava", "lava-fixed", "loihi"}
    for name in ("onnx", "lava"):
        assert_exact(data["backends"][name])
        assert data["backends"][name]["prediction_agreement"] == 1.0
    for layer in data["backends"]["onnx"]["layers"].values():
        assert layer["reference_spikes"] > 0                  # not silent: the check proves something
    for name in ("lava-fixed", "loihi"):
        assert_plausible_agreement(data["backends"][name])
    assert data["fixed_point_agreement"]["lava-fixed vs loihi"]["bit_exact"] is True
    assert json.loads((tmp_path / "out" / "verify.json").read_text()) == data
    md = (tmp_path / "out" / "verify.md").read_text()
    assert "**EQUIVALENT**" in md and "## Fixed point: lava-fixed vs loihi" in md and "count ratio" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_conv_graph_table(graphs, tmp_path):
    result = invoke(graphs / "conv.nir", "--targets", "all", "--samples", 2, "-T", 12,
                    "--markdown", tmp_path / "v.md", "--plot", tmp_path / "v.png")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "reference nir (float64)" in out and "2 Bernoulli spike trains at rate 0.2" in out
    assert "lava (float64" in out and "onnx (float64" in out and out.count("EQUIVALENT;") == 2
    assert "lava-fixed (fixed" in out and "reported" not in out.split("lava-fixed (fixed")[0]
    assert "fixed point, lava-fixed vs loihi: BIT-EXACT" in out
    assert "equivalent: every float64 backend matches nir spike for spike" in out
    for layer in ("if1", "if2", "if3"):
        assert f"  {layer} " in out
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    assert "# fer2neuro verification:" in (tmp_path / "v.md").read_text()


def test_a_target_that_cannot_run_the_graph_is_reported(graphs):
    result = invoke(graphs / "uneven.nir", "--targets", "onnx,lava,loihi", "--samples", 2, "-T", 8, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["unavailable"]) == {"lava", "loihi"}
    assert all("threshold" in why for why in data["unavailable"].values())
    assert list(data["backends"]) == ["onnx"] and data["equivalent"] is True
    table = invoke(graphs / "uneven.nir", "--targets", "onnx,lava", "--samples", 2, "-T", 8)
    assert table.exit_code == 0 and "lava: cannot run: node 'if2' (IF)" in table.stdout
    nothing = invoke(graphs / "uneven.nir", "--targets", "lava,lava-fixed", "--samples", 2, "-T", 8)
    assert nothing.exit_code == 1
    assert "Error: no target could run" in nothing.stderr and "lava-fixed:" in nothing.stderr


def flip_one_spike(monkeypatch, backend, layer, sample, step, neuron):
    """``backend``'s recording gets one spike flipped, as a wrong target would."""
    run = TargetBackend.run

    def broken(self, images, encoded):
        out = run(self, images, encoded)
        if self.name == backend:
            out[layer] = out[layer].copy()
            out[layer][sample, step, neuron] ^= 1
        return out

    monkeypatch.setattr(TargetBackend, "run", broken)


def test_a_float_target_that_differs_fails_and_is_located(graphs, monkeypatch, tmp_path):
    flip_one_spike(monkeypatch, "onnx", "if2", sample=1, step=3, neuron=2)
    result = invoke(graphs / "dense.nir", "--targets", "onnx,loihi", "--samples", 3, "-T", 10, "--json",
                    "--out", tmp_path)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["equivalent"] is False and data["backends"]["loihi"]["equivalent"] is True
    onnx = data["backends"]["onnx"]
    assert onnx["layers"]["lif1"]["identical_trains"] == 1.0 and onnx["layers"]["if2"]["identical_trains"] < 1
    assert abs(onnx["layers"]["if2"]["count_difference"]) == 1
    assert onnx["first_divergence"] == {"layer": "if2", "sample": 1, "neuron": [2], "neuron_flat": 2,
                                        "time_step": 3, "reference_spike": onnx["first_divergence"]["reference_spike"],
                                        "backend_spike": 1 - onnx["first_divergence"]["reference_spike"]}
    assert "Error: onnx differs from nir: first divergence at layer if2, sample 1, neuron (2,)" in result.stderr
    md = (tmp_path / "verify.md").read_text()
    assert "**NOT EQUIVALENT**" in md and "onnx membrane:" in md and "Reference membrane after step 2" in md
    assert (tmp_path / "verify-onnx-divergence.png").read_bytes()[:4] == b"\x89PNG"


def test_fixed_point_targets_that_disagree_fail(graphs, monkeypatch):
    flip_one_spike(monkeypatch, "loihi", "lif1", sample=0, step=5, neuron=7)
    result = invoke(graphs / "dense.nir", "--targets", "lava-fixed,loihi", "--samples", 2, "-T", 10)
    assert result.exit_code == 1
    assert "fixed point, lava-fixed vs loihi: DIFFER; first divergence at layer lif1, sample 0" in result.stdout
    assert "Error: fixed-point backends lava-fixed vs loihi differ" in result.stderr


def test_given_inputs_and_seeded_generated_ones(graphs, tmp_path):
    x = (np.random.default_rng(3).random((2, 9, 12)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    given = json.loads(invoke(graphs / "dense.nir", "--targets", "onnx,loihi", "--input", tmp_path / "x.npy",
                              "--json").stdout)
    assert (given["samples"], given["timesteps"]) == (2, 9)
    assert given["inputs"]["source"] == str(tmp_path / "x.npy") and given["equivalent"]
    np.save(tmp_path / "one.npy", x[0])                          # one sample (T, 12)
    assert json.loads(invoke(graphs / "dense.nir", "--targets", "onnx", "--input", tmp_path / "one.npy",
                             "--json").stdout)["samples"] == 1

    def spikes(*args):
        data = json.loads(invoke(graphs / "dense.nir", "--targets", "onnx", "--samples", 2, "-T", 8, "--json",
                                 *args).stdout)
        return [layer["reference_spikes"] for layer in data["backends"]["onnx"]["layers"].values()]

    assert spikes("--seed", 5) == spikes("--seed", 5) != spikes("--seed", 6)
    assert sum(spikes("--rate", 0.05)) < sum(spikes("--rate", 0.5))
    direct = json.loads(invoke(graphs / "dense.nir", "--targets", "onnx,lava", "--encoder", "direct",
                               "--samples", 2, "-T", 8, "--json").stdout)
    assert direct["inputs"]["encoder"] == "direct" and direct["equivalent"]
    assert_exact(direct["backends"]["lava"])


@pytest.mark.parametrize("args,message", [
    (["missing.nir"], "missing.nir: no such NIR graph file"),
    (["text.nir"], "text.nir: not a NIR graph (not an HDF5 file)"),
    (["@dense", "--input", "wrong.npy"], "wrong.npy: input 'input' has shape (2, 5, 7); the graph takes (T, 12)"),
    (["@dense", "--input", "nan.npy"], "nan.npy: input 'input' contains NaN or infinite values"),
    (["@dense", "--input", "missing.npy"], "missing.npy: no such input file"),
    (["@dense", "--input", "text.nir"], "text.nir: not a readable .npy array"),
    (["model.pt", "--input", "wrong.npy"], "--input applies to a NIR graph only"),
    (["@dense", "--data", "synthetic"], "--data applies to a checkpoint only"),
    (["@dense", "--targets", "snntorch,onnx"], "snntorch is the trained model: a NIR graph has none to run"),
    (["@dense", "--targets", "nir"], "nothing to compare"),
    (["@dense", "--targets", "onnx,tpu"], "unknown backend tpu"),
])
def test_errors_are_one_line(graphs, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.nir").write_text("not a graph")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 7)))
    nan = np.zeros((2, 5, 12))
    nan[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    subst = {"@dense": str(graphs / "dense.nir")}
    result = CliRunner().invoke(main, ["verify", *(subst.get(a, a) for a in args), "--out", "out"])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_target_list_for_a_graph():
    assert parse_backends("all", reference="nir") == ["lava", "lava-fixed", "loihi", "onnx"]
    assert parse_backends("nir,onnx,onnx", reference="nir") == ["onnx"]
