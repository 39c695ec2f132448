"""Any lava-dl netx network file as input: the ``loihi`` target against
lava-dl's own ``netx.hdf5.Network`` in Lava's ``fixed_pt`` models, every
layer's spikes, u and v at every step (real runs of both), on netx files
written in netx's format (h5py) and by lava-dl SLAYER's own exporter; plus
the CLI, its input rule and its one-line errors."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import DataError, GraphError
from fer2neuro.targets.lava.netx_run import run_netx_file
from fer2neuro.targets.loihi.netx_program import NetxProgram

pytestmark = pytest.mark.lava


def neuron(group, vth=40, i_decay=1024, v_decay=256, kind=b"CUBA"):
    n = group.create_group("neuron")
    n.create_dataset("type", data=kind)
    for key, value in (("iDecay", i_decay), ("vDecay", v_decay), ("vThMant", vth), ("refDelay", 1)):
        n.create_dataset(key, data=np.int64(value))
    n.create_dataset("gradedSpike", data=False)


def write_net(path, blocks):
    """blocks: [(type, {dataset: value, 'neuron': dict of neuron() kwargs or None})] in netx's format."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        for i, (kind, fields) in enumerate(blocks):
            g = layers.create_group(str(i))
            g.create_dataset("type", (1,), "S10", [kind.encode()])           # as slayer writes it
            for key, value in fields.items():
                if key == "neuron":
                    if value is not None:
                        neuron(g, **value)
                else:
                    g.create_dataset(key, data=value)
    return path


def compare(program, x, min_spikes=None):
    """Both targets on X with --record all: every array identical; returns the recordings."""
    ours = program.run(x, record_all=True)
    theirs = run_netx_file(program, x, record_all=True)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].shape == theirs[key].shape, key
        assert ours[key].dtype == theirs[key].dtype, key
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    for name, count in (min_spikes or {}).items():
        assert int(theirs[name].sum()) >= count, f"{name}: {int(theirs[name].sum())} spikes"
    return theirs


def spikes(rng, shape, rate=0.5):
    return (rng.random(shape) < rate).astype(np.uint8)


# --- networks -----------------------------------------------------------------

def test_dense_chain_and_netx_default_integrator(tmp_path):
    rng = np.random.default_rng(0)
    path = write_net(tmp_path / "dense.net", [
        ("input", {"shape": np.array([20])}),
        ("dense", {"shape": np.array([12]), "weight": rng.integers(-60, 140, (12, 20)).astype(np.float32) + 0.7,
                   "bias": rng.integers(-30, 30, 12), "neuron": dict(vth=60, i_decay=700, v_decay=300)}),
        ("dense", {"shape": np.array([6]), "weight": rng.integers(-100, 200, (6, 12)), "neuron": dict(vth=30)}),
        ("dense", {"shape": np.array([3]), "weight": rng.integers(-5, 9, (3, 6)) * 4}),   # netx's integrator
    ])
    program = NetxProgram(path)
    out = compare(program, spikes(rng, (2, 12, 20)), {"layer1": 10, "layer2": 5})
    assert out["layer3"].sum() == 0 and np.abs(out["layer3.v"]).max() > 0      # never fires: vth = 2^17
    assert out["layer1.u"].dtype == np.int64 and out["layer1"].shape == (2, 12, 12)


def test_conv_flatten_dense(tmp_path):
    rng = np.random.default_rng(1)
    path = write_net(tmp_path / "conv.net", [
        ("input", {"shape": np.array([2, 7, 6])}),
        ("conv", {"shape": np.array([4, 7, 6]), "weight": rng.integers(-40, 90, (4, 2, 3, 3, 1)),
                  "bias": rng.integers(-20, 40, 4), "stride": np.array([1, 1]), "padding": np.array([1, 1]),
                  "dilation": np.array([1, 1]), "groups": 1, "neuron": dict(vth=50)}),
        ("conv", {"shape": np.array([4, 3, 2]), "weight": rng.integers(-30, 80, (4, 2, 3, 2)),
                  "stride": np.array([2, 3]), "padding": np.array([0, 1]), "dilation": np.array([1, 2]),
                  "groups": 2, "neuron": dict(vth=20, v_decay=0)}),
        ("flatten", {"shape": np.array([24, 1, 1])}),
        ("dense", {"shape": np.array([5]), "weight": rng.integers(-90, 160, (5, 24)), "neuron": dict(vth=25)}),
    ])
    program = NetxProgram(path)
    assert program.input_shape == (2, 7, 6)
    out = compare(program, spikes(rng, (2, 10, 2, 7, 6)), {"layer1": 50, "layer2": 10, "layer4": 3})
    assert out["layer1"].shape == (2, 10, 4, 7, 6)                          # (C, H, W), the file's order


def rec_net(path, rng, weight_rec):
    return write_net(path, [
        ("input", {"shape": np.array([10])}),
        ("dense_rec", {"shape": np.array([8]), "weight": rng.integers(-50, 100, (8, 10)),
                       "weight_rec": weight_rec, "bias": rng.integers(-10, 10, 8),
                       "neuron": dict(vth=70, i_decay=1500, v_decay=500)}),
        ("dense", {"shape": np.array([4]), "weight": rng.integers(-60, 120, (4, 8)), "neuron": dict(vth=30)}),
    ])


def test_recurrent_dense_rec(tmp_path):
    """hstack(weight, weight_rec) optimised together, then each Lava Dense
    re-derives its own sign mode; the recurrent spikes of step n arrive at
    step n + 1."""
    rng = np.random.default_rng(2)
    program = NetxProgram(rec_net(tmp_path / "rec.net", rng, rng.integers(-20, 90, (8, 8))))
    assert program.layers[0].weight_rec is not None
    x = spikes(rng, (2, 14, 10), 0.3)
    out = compare(program, x, {"layer1": 20, "layer2": 5})
    # the recurrent synapse matters: without it the same input gives other spikes
    program.layers[0].weight_rec = np.zeros_like(program.layers[0].weight_rec)
    program.layers[0].__dict__.pop("torch_weight_rec", None)
    assert not np.array_equal(program.run(x)["layer1"], out["layer1"])


def test_recurrent_part_with_its_own_sign_mode_is_lost_as_in_lava(tmp_path):
    """Odd mixed weights get 9 weight bits from netx; the all-negative
    recurrent part is then an inhibitory Dense in Lava, which truncates by
    8 - 9 = -1 bits: numpy's shift by a negative count gives 0, so Lava runs
    the block without its recurrent weights. The loihi target does the same."""
    rng = np.random.default_rng(2)
    weight_rec = -rng.integers(1, 257, (8, 8))
    program = NetxProgram(rec_net(tmp_path / "inhibitory.net", rng, weight_rec))
    assert not program.layers[0].weight_rec.any()
    compare(program, spikes(rng, (1, 10, 10), 0.3), {"layer1": 10})


@pytest.mark.filterwarnings("ignore:Found max delay")
def test_dense_delays_and_recurrent_delays(tmp_path):
    """DelayDense: a per-output delay vector, a per-input one, a 2-D one
    with values above 62 (netx clamps them); and dense_rec with delays,
    whose synapses netx builds without the weight exponent."""
    rng = np.random.default_rng(3)
    small = rng.integers(-12, 20, (6, 6)) * 2           # small weights: netx scales them, exponent -3
    path = write_net(tmp_path / "delay.net", [
        ("input", {"shape": np.array([9])}),
        ("dense", {"shape": np.array([6]), "weight": rng.integers(-60, 120, (6, 9)),
                   "delay": np.array([0, 1, 2, 3, 5, 1], np.float32) + 0.5, "neuron": dict(vth=40)}),
        ("dense", {"shape": np.array([6]), "weight": rng.integers(-60, 120, (6, 6)),
                   "delay": np.array([3, 0, 2, 1, 0, 4]), "neuron": dict(vth=30)}),
        ("dense_rec", {"shape": np.array([6]), "weight": small, "weight_rec": rng.integers(-8, 8, (6, 6)),
                       "delay": np.where(rng.random((6, 6)) < 0.2, 70, rng.integers(0, 4, (6, 6))),
                       "neuron": dict(vth=3, v_decay=100)}),
    ])
    program = NetxProgram(path)
    rec = program.layers[2]
    assert rec.delays.max() == 62 and rec.weight_exp == 0 and rec.weight_exp_rec == 0
    compare(program, spikes(rng, (2, 16, 9), 0.6), {"layer1": 10, "layer2": 5, "layer3": 5})


def test_input_neuron_layer_driven_by_bias(tmp_path):
    rng = np.random.default_rng(4)
    path = write_net(tmp_path / "bias.net", [
        ("input", {"shape": np.array([2, 5, 5]), "neuron": dict(vth=30, i_decay=4096, v_decay=0),
                   "bias": np.int64(999), "weight": np.int64(7)}),            # netx ignores both
        ("conv", {"shape": np.array([3, 3, 3]), "weight": rng.integers(-30, 80, (3, 2, 3, 3)),
                  "stride": np.array([1, 1]), "padding": np.array([0, 0]), "dilation": np.array([1, 1]),
                  "groups": 1, "neuron": dict(vth=40)}),
        ("flatten", {"shape": np.array([27, 1, 1])}),
        ("dense", {"shape": np.array([4]), "weight": rng.integers(-60, 120, (4, 27)), "neuron": dict(vth=20)}),
    ])
    program = NetxProgram(path)
    assert program.input_kind == "bias"
    bias = rng.integers(0, 60, (2, 1, 2, 5, 5)).repeat(9, axis=1)              # constant over T = 9
    compare(program, bias, {"layer0": 20, "layer1": 10, "layer3": 3})


def test_reset_interval_and_offset(tmp_path):
    rng = np.random.default_rng(5)
    path = write_net(tmp_path / "reset.net", [
        ("input", {"shape": np.array([12])}),
        ("dense", {"shape": np.array([8]), "weight": rng.integers(-40, 120, (8, 12)), "neuron": dict(vth=80)}),
        ("dense", {"shape": np.array([4]), "weight": rng.integers(-40, 120, (4, 8)), "neuron": dict(vth=40)}),
    ])
    program = NetxProgram(path, reset_interval=4, reset_offset=2)
    assert [layer.reset_offset for layer in program.layers] == [3, 0]           # (2 + 1 + k) % 4
    x = spikes(rng, (1, 12, 12), 0.6)
    out = compare(program, x, {"layer1": 5})
    assert (out["layer1.v"][:, 2] == 0).all() or (out["layer1.u"][:, 2] != 0).any()
    assert not np.array_equal(NetxProgram(path).run(x, record_all=True)["layer1.u"], out["layer1.u"])


def test_slayer_exported_network(tmp_path):
    """A file from lava-dl SLAYER's own exporter: conv, flatten, dense with
    (axonal) delays, recurrent; float weights that netx truncates."""
    import torch

    import fer2neuro.lava_compat as compat

    compat.require_lava()
    from lava.lib.dl import slayer

    torch.manual_seed(0)
    params = {"threshold": 0.5, "current_decay": 0.25, "voltage_decay": 0.03, "requires_grad": False}

    def identity(x, descale=False):
        return x

    blocks = torch.nn.ModuleList([
        slayer.block.cuba.Conv(params, 2, 4, 3, padding=1, pre_hook_fx=identity),
        slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(params, 4 * 5 * 5, 10, pre_hook_fx=identity, delay=True),
        slayer.block.cuba.Recurrent(params, 10, 6, pre_hook_fx=identity),
    ])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = torch.rand(1, 2, 5, 5, 4)
        for block in blocks:                            # a forward pass sizes the delays
            x = block(x)
        for synapse, (low, high) in ((blocks[0].synapse, (-30, 70)), (blocks[2].synapse, (-40, 90)),
                                     (blocks[3].input_synapse, (-40, 90)), (blocks[3].recurrent_synapse, (-30, 60))):
            w = torch.randint(low, high, synapse.weight.shape, generator=g).float()
            synapse.weight.copy_(w + 0.6 * torch.sign(w))      # netx truncates toward zero
        blocks[2].delay.delay.copy_((torch.arange(10, dtype=torch.float32) % 4).reshape(blocks[2].delay.delay.shape))
    path = tmp_path / "slayer.net"
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        g = layers.create_group("0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array([2, 5, 5]))
        for i, block in enumerate(blocks):
            block.export_hdf5(layers.create_group(str(i + 1)))
    program = NetxProgram(path)
    assert [layer.block for layer in program.layers] == ["conv", "dense", "dense_rec"]
    assert program.layers[1].delays is not None
    rng = np.random.default_rng(6)
    compare(program, spikes(rng, (1, 12, 2, 5, 5), 0.5), {"layer1": 10, "layer3": 3, "layer4": 3})


# --- command line and errors ----------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def small_net(tmp_path):
    rng = np.random.default_rng(7)
    return write_net(tmp_path / "small.net", [
        ("input", {"shape": np.array([8])}),
        ("dense", {"shape": np.array([5]), "weight": rng.integers(-40, 120, (5, 8)), "neuron": dict(vth=30)}),
    ])


def test_cli_runs_a_netx_file_on_both_targets_identically(small_net, tmp_path):
    x = spikes(np.random.default_rng(8), (2, 7, 8))
    np.save(tmp_path / "x.npy", x)
    runs = {}
    for target in ("loihi", "lava-fixed"):
        out = tmp_path / f"{target}.npz"
        result = invoke("simulate", small_net, "--target", target, "--input", tmp_path / "x.npy", "--out", out,
                        "--record", "all", "--reset-interval", 5, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["input"] == "spikes" and summary["steps"] == 7 and summary["samples"] == 2
        with np.load(out) as data:
            runs[target] = {key: data[key] for key in data.files}
    assert sorted(runs["loihi"]) == ["layer1", "layer1.u", "layer1.v", "output"]
    assert runs["loihi"]["layer1"].shape == (2, 7, 5) and runs["loihi"]["layer1"].sum() > 3
    for key, value in runs["lava-fixed"].items():
        np.testing.assert_array_equal(runs["loihi"][key], value, err_msg=key)
    result = invoke("simulate", small_net, "--target", "loihi", "--input", tmp_path / "x.npy", "--out",
                    tmp_path / "y.npz")
    assert result.exit_code == 0 and "layer1" in result.output


@pytest.mark.parametrize("target", ["nir", "lava", "onnx"])
def test_cli_netx_file_on_other_targets_is_a_one_line_error(small_net, tmp_path, target):
    np.save(tmp_path / "x.npy", np.zeros((3, 8), np.uint8))
    result = CliRunner().invoke(main, ["simulate", str(small_net), "--target", target, "--input",
                                       str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz")])
    assert result.exit_code != 0
    assert "run it with --target lava-fixed or loihi" in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 7), np.uint8), r"input of shape \(3, 7\).*\(T, 8\)"),
    (np.full((3, 8), 0.5), "only 0 and 1"),
    (np.full((3, 8), np.nan), "NaN"),
    (np.full((3, 8), 2), "only 0 and 1"),
])
def test_bad_spike_inputs(small_net, x, message):
    with pytest.raises(DataError, match=message):
        NetxProgram(small_net).prepare(x)


def test_bad_bias_inputs(tmp_path):
    path = write_net(tmp_path / "bias.net", [
        ("input", {"shape": np.array([4]), "neuron": dict(vth=10)}),
        ("dense", {"shape": np.array([2]), "weight": np.arange(8).reshape(2, 4) - 3, "neuron": dict()}),
    ])
    program = NetxProgram(path)
    assert program.prepare(np.ones((5, 4))).shape == (1, 5, 4)
    with pytest.raises(DataError, match="constant over time"):
        program.prepare(np.arange(20).reshape(5, 4))
    with pytest.raises(DataError, match="non-integer"):
        program.prepare(np.full((5, 4), 0.5))
    with pytest.raises(DataError, match="outside int16"):
        program.prepare(np.full((5, 4), 40000))
    wrapped = NetxProgram(path, emulate_overflow=True).prepare(np.full((5, 4), 40000))
    assert (wrapped == 40000 - 65536).all()                            # as Lava's int16 bias_mant holds it


@pytest.mark.parametrize("block", ["pool", "convT", "unpool", "average", "concat"])
def test_blocks_netx_cannot_run_are_named_with_their_index(tmp_path, block):
    path = write_net(tmp_path / f"{block}.net", [
        ("input", {"shape": np.array([2, 4, 4])}),
        (block, {"shape": np.array([2, 2, 2])}),
    ])
    with pytest.raises(GraphError, match=rf"layer 1: block type '{block}' is not supported"):
        NetxProgram(path)
    np.save(tmp_path / "x.npy", np.zeros((3, 2, 4, 4), np.uint8))
    result = CliRunner().invoke(main, ["simulate", str(path), "--target", "loihi", "--input",
                                       str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz")])
    assert result.exit_code != 0 and f"layer 1: block type '{block}'" in result.output
    assert result.output.count("\n") == 1


def test_malformed_files_are_one_line_errors(tmp_path):
    cases = {
        "no_flatten": [("input", {"shape": np.array([1, 3, 3])}),
                       ("conv", {"shape": np.array([2, 3, 3]), "weight": np.ones((2, 1, 1, 1)), "stride": 1,
                                 "padding": 0, "dilation": 1, "groups": 1, "neuron": dict()}),
                       ("dense", {"shape": np.array([2]), "weight": np.ones((2, 18)), "neuron": dict()})],
        "zero_weights": [("input", {"shape": np.array([3])}),
                         ("dense", {"shape": np.array([2]), "weight": np.zeros((2, 3)), "neuron": dict()})],
        "sdnn": [("input", {"shape": np.array([3])}),
                 ("dense", {"shape": np.array([2]), "weight": np.ones((2, 3)), "neuron": dict(kind=b"SDNN")})],
        "conv_shape": [("input", {"shape": np.array([1, 3, 3])}),
                       ("conv", {"shape": np.array([2, 2, 2]), "weight": np.ones((2, 1, 1, 1)), "stride": 1,
                                 "padding": 0, "dilation": 1, "groups": 1, "neuron": dict()})],
    }
    messages = {"no_flatten": "without a flatten", "zero_weights": "all weights are zero",
                "sdnn": "'SDNN' is not supported", "conv_shape": r"gives \(2, 3, 3\)"}
    for name, blocks in cases.items():
        with pytest.raises(GraphError, match=messages[name]):
            NetxProgram(write_net(tmp_path / f"{name}.net", blocks))
    with pytest.raises(GraphError, match="no such netx network file"):
        NetxProgram(tmp_path / "missing.net")


def test_a_non_finite_value_in_a_netx_file_is_refused(tmp_path):
    import h5py

    from fer2neuro.errors import GraphError
    from fer2neuro.targets.loihi.network import load_netx

    path = tmp_path / "nan.net"
    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        g = layer.create_group("0")
        g.create_dataset("type", data=b"input")
        g.create_dataset("shape", data=np.array([4]))
        g = layer.create_group("1")
        g.create_dataset("type", data=b"dense")
        g.create_dataset("shape", data=np.array([2]))
        g.create_dataset("weight", data=np.array([[1.0, np.nan, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]))
        n = g.create_group("neuron")
        n.create_dataset("type", data=b"CUBA")
        for key, value in (("iDecay", 4096), ("vDecay", 0), ("vThMant", 10), ("refDelay", 1)):
            n.create_dataset(key, data=np.int64(value))
    with pytest.raises(GraphError, match="/layer/1/weight holds non-finite values"):
        load_netx(path)
