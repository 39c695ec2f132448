"""Issue 27: every number read from a file is checked before use, one place
per format: a checkpoint's model config (covered by its own SHA-256 and
checked field by field, ModelConfig), a NIR graph's nodes and metadata
(nirgraph/validate.py, file.GraphInfo), an exported ONNX model's metadata
and weights (lowering/onnx_file.py). And the nir target refuses to
return NaN membranes from finite inputs that overflow float64.

Each bad value is met through the command line, as a user would: exit 1,
one ``Error:`` line naming the file and the field, no traceback or warning,
nothing written.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import nir
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from fer2neuro.cli import main
from fer2neuro.errors import ConfigError, TargetError
from fer2neuro.lowering.onnx_graph import nir_to_onnx
from fer2neuro.model.architecture import two_conv_template
from fer2neuro.model.checkpoint import CONFIG_DIGEST_KEY, header_digest, load_checkpoint, save_checkpoint
from fer2neuro.model.config import MAX_TIMESTEPS, ModelConfig
from fer2neuro.model.network import build_model
from fer2neuro.nirgraph.file import read_graph
from fer2neuro.targets import get_target

from test_hardening_fuzz import T, small_graph  # the fuzz test's tiny graph, shared
from cli_errors import one_line_error

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


# -- checkpoints --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(preset="test", blocks=two_conv_template(4, (16, 8)), class_names=CLASSES)
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    return path


def edited(ckpt, path, *, rehash=True, deployment=None, **config):
    """``ckpt`` with config fields replaced, its config SHA-256 recomputed as
    a hand-edited or crafted file would have it (``rehash``)."""
    payload = torch.load(ckpt, weights_only=True)
    payload["config"].update(config)
    if deployment is not None:
        payload["deployment"] = deployment
    if rehash:
        payload[CONFIG_DIGEST_KEY] = header_digest(payload["config"], payload["deployment"])
    torch.save(payload, path)
    return path


def test_the_config_has_its_own_hash(ckpt, tmp_path):
    """Before issue 27 a config edit behind a valid zip loaded silently."""
    bad = edited(ckpt, tmp_path / "edited.pt", rehash=False, timesteps=8)
    one_line_error(invoke("export", bad, "--target", "nir", "--out", tmp_path / "g.nir"), "edited.pt",
                   "corrupt", "model config")
    assert not (tmp_path / "g.nir").exists()
    payload = torch.load(ckpt, weights_only=True)
    del payload[CONFIG_DIGEST_KEY]                      # a checkpoint from before the config hash
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").config == load_checkpoint(ckpt).config


# (config field, bad value): each refused on loading, the field named
BAD_CONFIG = [
    ("tau", math.nan), ("tau", math.inf), ("tau", 0.0), ("tau", -2.0), ("tau", "2"),
    ("v_threshold", math.nan), ("v_threshold", -1.0), ("v_threshold", 0.0), ("v_threshold", math.inf),
    ("timesteps", 2.5), ("timesteps", 10**7), ("timesteps", 0), ("timesteps", True), ("timesteps", "4"),
    ("class_names", list(range(7))), ("class_names", "abcdefg"), ("class_names", ["a", "b"]),
    ("dropout", math.nan), ("dropout", 1.0), ("num_classes", 7.5), ("image_size", -48),
    ("encoder", 5), ("model", None), ("blocks", [{"conv": 0, "pool": 2}]), ("blocks", "c4"),
]


@pytest.mark.parametrize("field,value", BAD_CONFIG, ids=[f"{f}={v!r}" for f, v in BAD_CONFIG])
def test_every_config_field_is_checked(ckpt, tmp_path, field, value):
    bad = edited(ckpt, tmp_path / "bad.pt", **{field: value})
    line = one_line_error(invoke("export", bad, "--target", "nir", "--out", tmp_path / "g.nir"), "bad.pt",
                          "invalid model config", field if field != "blocks" else "block")
    assert not (tmp_path / "g.nir").exists(), line          # no NaN or inf ever reaches a graph


def test_a_bad_config_is_refused_by_every_command(ckpt, tmp_path):
    bad = edited(ckpt, tmp_path / "nan.pt", tau=math.nan)
    for args in (["export", bad, "--target", "onnx", "--out", tmp_path / "m.onnx"], ["evaluate", bad, "--limit", 4],
                 ["verify", bad, "--samples", 2], ["report", bad], ["predict", tmp_path, "--model", bad]):
        one_line_error(invoke(*args), "nan.pt", "tau")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


@pytest.mark.parametrize("deployment,fragment", [
    ({"qat": "loihi", "scales": {"lif1": math.nan}}, "scales"),
    ({"qat": "loihi", "state_bounds": {"lif1": -1.0}}, "state_bounds"),
    ({"qat": "loihi", "scales": {"nowhere": 2.0}}, "nowhere"),
    ({"qat": 3}, "qat"),
])
def test_the_deployment_record_is_checked(ckpt, tmp_path, deployment, fragment):
    bad = edited(ckpt, tmp_path / "qat.pt", deployment=deployment)
    one_line_error(invoke("export", bad, "--target", "nir", "--out", tmp_path / "g.nir"), "qat.pt", fragment)


def test_config_checks_hold_for_configs_built_in_python():
    with pytest.raises(ConfigError, match=f"timesteps must be an integer from 1 to {MAX_TIMESTEPS}"):
        ModelConfig(timesteps=MAX_TIMESTEPS + 1)
    assert ModelConfig(timesteps=np.int64(8), tau=np.float32(4.0)).timesteps == 8      # numpy numbers are fine


# -- NIR graphs ---------------------------------------------------------------------------------------

def conv_graph() -> nir.NIRGraph:
    """Input(1, 6, 6) -> Conv2d -> IF -> SumPool2d -> IF -> Output."""
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([1, 6, 6])),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=np.full((2, 1, 3, 3), 0.2), stride=1, padding=1, dilation=1,
                           groups=1, bias=np.zeros(2)),
        "if1": nir.IF(r=np.ones((2, 6, 6)), v_threshold=np.ones((2, 6, 6)), v_reset=np.zeros((2, 6, 6))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "if2": nir.IF(r=np.ones((2, 3, 3)), v_threshold=np.ones((2, 3, 3)), v_reset=np.zeros((2, 3, 3))),
        "output": nir.Output(output_type=np.array([2, 3, 3]))},
        edges=[("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "if2"), ("if2", "output")])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    nir.write(d / "dense.nir", small_graph())
    nir.write(d / "conv.nir", conv_graph())
    rng = np.random.default_rng(0)
    np.save(d / "dense.npy", (rng.random((T, 4)) < 0.5).astype(np.float64))
    np.save(d / "conv.npy", (rng.random((T, 1, 6, 6)) < 0.5).astype(np.float64))
    return d


def edited_graph(graphs, out: Path, source: str, node: str, field: str, value) -> Path:
    """A copy of ``source``.nir with one dataset of one node replaced, as a
    hand-edited or hostile file would have it."""
    shutil.copy(graphs / f"{source}.nir", out)
    with h5py.File(out, "r+") as f:
        group = f["node"]["nodes"][node]
        if field in group:
            del group[field]
        group.create_dataset(field, data=value)
    return out


# (graph, node, field, bad value, words the message must hold)
BAD_NODES = [
    ("dense", "input", "shape", np.array([-10]), "dimension < 1"),
    ("dense", "input", "shape", np.array([0]), "dimension < 1"),
    ("dense", "output", "shape", np.array([2**20, 2**20]), "values per frame"),
    ("dense", "lif1", "tau", np.zeros(3), "tau must be > 0"),
    ("dense", "lif1", "tau", -np.ones(3), "tau must be > 0"),
    ("dense", "lif1", "v_threshold", np.full(3, np.nan), "not finite"),
    ("dense", "lif1", "r", np.full(3, np.inf), "not finite"),
    ("dense", "fc1", "weight", np.full((3, 4), b"1"), "not numbers"),
    ("dense", "fc1", "bias", np.full(3, 1 + 2j), "complex"),
    ("dense", "lif2", "type", b"Foo", "unknown node type 'Foo'"),
    ("conv", "conv", "stride", np.array([0, 0]), "stride"),
    ("conv", "conv", "stride", np.array([-1, 1]), "stride"),
    ("conv", "conv", "dilation", np.array([0, 0]), "dilation"),
    ("conv", "conv", "padding", np.array([-1, -1]), "padding"),
    ("conv", "conv", "padding", b"full", "padding"),
    ("conv", "conv", "groups", np.array(0), "groups"),
    ("conv", "pool", "kernel_size", np.array([0, 0]), "kernel_size"),
    ("conv", "pool", "stride", np.array([0, 0]), "stride"),
]


@pytest.mark.parametrize("source,node,field,value,words", BAD_NODES,
                         ids=[f"{n}.{f}={w.split()[0]}" for _, n, f, _, w in BAD_NODES])
def test_every_node_field_is_checked_on_reading(graphs, tmp_path, out_dir, source, node, field, value, words):
    bad = edited_graph(graphs, tmp_path / "bad.nir", source, node, field, value)
    named = (f"'{node}'", field if field != "type" else "type", words)
    one_line_error(invoke("inspect", bad), "bad.nir", *named)
    one_line_error(invoke("simulate", bad, "--target", "loihi", "--input", graphs / f"{source}.npy",
                          "--out", out_dir / "y.npz", "--json"), "bad.nir", *named)
    assert not any(out_dir.iterdir())


def test_a_bad_graph_is_refused_by_every_command(graphs, tmp_path, out_dir):
    """tau 0 was a ZeroDivisionError in inspect and the Lava-style targets."""
    bad = edited_graph(graphs, tmp_path / "tau0.nir", "dense", "lif1", "tau", np.zeros(3))
    x = graphs / "dense.npy"
    for args in (["simulate", bad, "--input", x, "--out", out_dir / "y.npz", "--json"],
                 ["simulate", bad, "--target", "lava-fixed", "--input", x, "--out", out_dir / "y.npz", "--json"],
                 ["verify", bad, "--samples", 2, "--out", out_dir / "v", "--json"],
                 ["report", bad, "--target", "loihi"],
                 ["predict", tmp_path, "--model", bad],
                 ["interop", bad, "--peers", "snntorch", "--out", out_dir / "i"]):
        one_line_error(invoke(*args), "tau0.nir", "'lif1'", "tau must be > 0")
    assert not any(out_dir.iterdir())


@pytest.mark.parametrize("target", ["nir", "onnx", "lava", "lava-fixed", "loihi"])
def test_every_target_refuses_a_zero_tau_given_in_python(target):
    graph = small_graph()
    graph.nodes["lif1"].tau = np.zeros(3)
    with pytest.raises(TargetError, match=r"node 'lif1' \(LIF\): tau must be > 0"):
        get_target(target).open(graph)


@pytest.mark.parametrize("value", ["abc", math.nan, -1.0])
def test_a_fine_tuned_nodes_state_bound_is_checked(value):
    """The quantiser reads a neuron node's metadata (lowering/lava_plan.py);
    text there was a ValueError traceback."""
    graph = small_graph()
    graph.nodes["lif1"].metadata = {"state_bound": value}
    with pytest.raises(TargetError, match=r"'lif1' \(LIF\): metadata state_bound = .* must be a positive number"):
        get_target("loihi").check(graph)


@pytest.mark.parametrize("key,value,words", [
    ("timesteps", "abc", "timesteps must be an integer"), ("timesteps", 2.5, "timesteps"),
    ("dt", "abc", "dt must be a finite number"), ("dt", np.nan, "dt"), ("dt", -1.0, "dt"),
    ("class_names", "[1,", "class_names is not valid JSON"), ("class_names", "[1, 2]", "class_names"),
])
def test_graph_metadata_is_checked_on_reading(graphs, tmp_path, key, value, words):
    shutil.copy(graphs / "dense.nir", tmp_path / "meta.nir")
    with h5py.File(tmp_path / "meta.nir", "r+") as f:
        meta = f["node"]["metadata"]
        del meta[key]
        meta.create_dataset(key, data=value)
    one_line_error(invoke("inspect", tmp_path / "meta.nir"), "meta.nir", words)


def test_legal_values_peers_write_are_not_refused(tmp_path):
    """NIR allows what fer2neuro's own graphs never hold: a threshold of 0
    or below, r = 0, a Delay node, 'same' padding, a batch axis in an Input,
    dt as a one-element array; the check must not refuse them."""
    ones = np.ones
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([1, 3])),
        "fc": nir.Linear(weight=np.full((3, 3), 0.5)),
        "lif": nir.LIF(tau=ones(3), r=np.array([0.0, 1.0, 2.0]), v_leak=-ones(3), v_threshold=np.array([0.0, -1, 1]),
                       v_reset=np.zeros(3)),
        "delay": nir.Delay(delay=np.zeros(3)),
        "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "delay"), ("delay", "output")],
        metadata={"dt": np.array([1e-3])}, type_check=False)
    nir.write(tmp_path / "peer.nir", graph)
    assert set(read_graph(tmp_path / "peer.nir").nodes) == set(graph.nodes)
    conv = conv_graph()
    conv.nodes["conv"].padding = "same"
    nir.write(tmp_path / "same.nir", conv)
    assert read_graph(tmp_path / "same.nir").nodes["conv"].padding == "same"


# -- ONNX models --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    proto = nir_to_onnx(small_graph(), timesteps=T, direct=False, dt=1.0, precision="float64", membranes=False)
    onnx.save(proto, d / "m.onnx")
    np.save(d / "x.npy", (np.random.default_rng(0).random((T, 4)) < 0.5).astype(np.float64))
    return d


def edited_onnx(model_onnx, out: Path, key=None, value=None, nan_weight=False) -> Path:
    proto = onnx.load(str(model_onnx / "m.onnx"))
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
    if nan_weight:          # the first weight matrix: a Constant (the TorchScript exporter folds weights in)
        node = next(n for n in proto.graph.node if n.op_type == "Constant"
                    and numpy_helper.to_array(n.attribute[0].t).ndim == 2)
        weight = numpy_helper.to_array(node.attribute[0].t).copy()
        weight[0, 0] = np.nan
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(weight, node.attribute[0].t.name))
    onnx.save(proto, out)
    return out


@pytest.mark.parametrize("key,value,words", [
    ("timesteps", "abc", "metadata timesteps"), ("timesteps", "0", "metadata timesteps"),
    ("class_names", "[1,", "metadata class_names is not valid JSON"), ("class_names", "[1, 2]", "class_names"),
    ("dt", "nan", "metadata dt"), ("encoder", "rate", "metadata encoder"), ("precision", "int8", "precision"),
    ("layers", '["nowhere"]', "nowhere"), ("layers", "{", "metadata layers"), ("output_nodes", "[]", "output_nodes"),
    ("readout", '{"tau": 0}', "metadata readout"),
])
def test_onnx_metadata_is_checked_on_loading(model_onnx, tmp_path, out_dir, key, value, words):
    bad = edited_onnx(model_onnx, tmp_path / "bad.onnx", key, value)
    one_line_error(invoke("simulate", bad, "--target", "onnx", "--input", model_onnx / "x.npy",
                          "--out", out_dir / "y.npz"), "bad.onnx", words)
    one_line_error(invoke("inspect", bad), "bad.onnx", words)
    assert not any(out_dir.iterdir())


def test_a_nan_weight_in_an_onnx_model_is_refused(model_onnx, tmp_path, out_dir):
    """It ran with exit 0 before (NaN membranes, no spikes)."""
    bad = edited_onnx(model_onnx, tmp_path / "nan.onnx", nan_weight=True)
    one_line_error(invoke("simulate", bad, "--target", "onnx", "--input", model_onnx / "x.npy",
                          "--out", out_dir / "y.npz"), "nan.onnx", "non-finite", "1 NaN")
    one_line_error(invoke("predict", tmp_path, "--model", bad, "--target", "onnx"), "nan.onnx", "non-finite")
    ok = invoke("simulate", model_onnx / "m.onnx", "--target", "onnx", "--input", model_onnx / "x.npy",
                "--out", out_dir / "y.npz")
    assert ok.exit_code == 0, ok.output                 # the same model, finite, runs


# -- overflow in the nir target -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def peer_graph(tmp_path_factory):
    """A graph without fer2neuro metadata (any real inputs go), whose
    Affine sums two inputs: 1e308 + 1e308 overflows float64."""
    d = tmp_path_factory.mktemp("overflow")
    ones = np.ones
    nir.write(d / "peer.nir", nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])),
        "fc1": nir.Affine(weight=np.array([[1.0, 1, 0, 0], [0, 0, 1, -1], [1, 0, 0, 0]]), bias=np.zeros(3)),
        "lif1": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3), v_threshold=ones(3)),
        "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "output")]))
    np.save(d / "huge.npy", np.full((2, 5, 4), 1e308))
    np.save(d / "fine.npy", np.full((2, 5, 4), 0.75))
    return d


def test_overflow_in_the_nir_target_is_an_error_not_nan_membranes(peer_graph, out_dir):
    for extra in ([], ["--membranes", "--record", "all"]):
        result = invoke("simulate", peer_graph / "peer.nir", "--input", peer_graph / "huge.npy",
                        "--out", out_dir / "y.npz", "--json", *extra)
        one_line_error(result, "'fc1'", "overflowed float64")
    assert not any(out_dir.iterdir())
    ok = invoke("simulate", peer_graph / "peer.nir", "--input", peer_graph / "fine.npy", "--out", out_dir / "y.npz")
    assert ok.exit_code == 0, ok.output


def test_verify_never_calls_an_overflow_equivalent(peer_graph):
    result = invoke("verify", peer_graph / "peer.nir", "--input", peer_graph / "huge.npy", "--targets", "nir,onnx",
                    "--json")
    one_line_error(result, "'fc1'", "overflowed float64")
    assert "EQUIVALENT" not in result.output


def test_a_neuron_state_that_overflows_is_caught_too():
    """An integrator (nir.I) summing 1e308 each step reaches infinity in its
    state, not in any stateless node's output."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1])),
                                "acc": nir.I(r=np.ones(1)),
                                "output": nir.Output(output_type=np.array([1]))},
                         edges=[("input", "acc"), ("acc", "output")])
    with pytest.raises(TargetError, match=r"node 'acc': its v overflowed float64 .* at step 1"):
        get_target("nir").run(graph, np.full((1, 3, 1), 1e308))
