"""The batched ``loihi`` target against Lava's bit-accurate fixed point:
every spike of every step on the exported model, and on random integer
networks that saturate and wrap; plus its arithmetic and its overflow errors."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import TargetError
from fer2neuro.lowering.lava_folder import write_artifact
from fer2neuro.lowering.netx_file import NetxNetwork, write_netx
from fer2neuro.lowering.quantise import QuantisedNetwork, QuantizedLayer
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.targets import get_target
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan
from fer2neuro.targets.loihi import arithmetic as ar
from fer2neuro.targets.loihi.network import load_netx
from fer2neuro.targets.loihi.simulator import simulate
from fer2neuro.verification.run import VerificationOptions, verify
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)

pytestmark = pytest.mark.lava


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_loihi_is_bit_exact_with_lava_fixed_on_the_exported_model(checkpoint, encoder):
    report = verify(checkpoint, VerificationOptions(backends=["lava-fixed", "loihi"], samples=4,
                                                    encoder=encoder, progress=False))
    pair = report.fixed_agreement["lava-fixed vs loihi"]
    for layer in SPIKING_LAYERS:
        assert pair.layers[layer].identical_trains == 1.0, layer
        assert pair.layers[layer].reference_spikes > 0, f"{layer} silent: the check would prove nothing"
    assert report.fixed_bit_exact and report.equivalent
    assert report.comparisons["loihi"].precision == "fixed"


# --- random integer networks, run by Lava and by loihi ------------------------

def random_network(rng, kind: str, saturate: bool = False):
    """(plan, quantised layers, input shape) of a random spike-input network."""
    def neuron(name, layer_kind, shape, depth, weight, bias, conv=None, flatten=False):
        layer = LavaLayer(name=name, kind=layer_kind, shape=shape, du=1.0, dv=0.0, vth=1.0, conv=conv or {},
                          flatten_input=flatten, depth=depth, weight=weight.astype(float))
        # Saturating: 700 inputs of weight 254 put a_in << 6 around the 24-bit
        # wrap of u, so whether d0 fires depends on the wrap being emulated.
        vth = 50000 if saturate else int(rng.integers(1, 3000))
        q = QuantizedLayer(name=name, scale=1.0, vth=vth, v_decay=int(rng.integers(0, 4097)),
                           i_decay=int(rng.integers(0, 4097)), weight=weight.astype(np.int32), bias=bias)
        return layer, q

    layers = []
    if kind == "dense":
        n_in = 700 if saturate else int(rng.integers(20, 60))
        input_shape = (n_in,)
        sizes = [int(rng.integers(5, 30)), int(rng.integers(3, 10))]
        prev = n_in
        for i, n in enumerate(sizes):
            w = np.full((n, prev), 254) if saturate and i == 0 else rng.integers(-256, 255, size=(n, prev))
            bias = rng.integers(-4095, 4096, size=n).astype(np.int32)
            layers.append(neuron(f"d{i}", "dense", (n,), i + 1, w, bias))
            prev = n
    else:
        c_in, side = int(rng.integers(1, 4)), int(rng.integers(6, 10))
        input_shape = (c_in, side, side)
        c_out = int(rng.integers(2, 6))
        stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        out_side = (side + 2 * pad - 3) // stride + 1
        w = rng.integers(-256, 256, size=(c_out, c_in, 3, 3))
        bias = np.repeat(rng.integers(-4095, 4096, size=c_out), out_side * out_side).reshape(c_out, out_side,
                                                                                             out_side)
        conv = dict(stride=(stride, stride), padding=(pad, pad), dilation=(1, 1), groups=1)
        layers.append(neuron("c0", "conv", (c_out, out_side, out_side), 1, w, bias.astype(np.int32), conv))
        n = int(rng.integers(3, 9))
        w2 = rng.integers(-256, 255, size=(n, c_out * out_side * out_side))
        layers.append(neuron("d1", "dense", (n,), 2, w2, rng.integers(-4095, 4096, size=n).astype(np.int32),
                             flatten=True))
    plan = LavaPlan(layers=[lay for lay, _ in layers], input_shape=input_shape, direct=False)
    return plan, [q for _, q in layers], input_shape


def run_lava_netx(path: Path, plan: LavaPlan, spikes: np.ndarray) -> dict:
    from fer2neuro.targets.lava.netx_run import run_netx_sample

    return run_netx_sample(NetxNetwork(plan=plan, scales={}, netx=path), spikes)   # a bare netx file: spike input


@pytest.mark.parametrize("case", [("dense", 0, False), ("dense", 1, False), ("conv", 2, False),
                                  ("conv", 3, False), ("dense", 4, True)],
                         ids=["dense-a", "dense-b", "conv-a", "conv-b", "dense-saturating"])
def test_random_integer_networks_match_lava_bit_for_bit(case, tmp_path):
    kind, seed, saturate = case
    rng = np.random.default_rng(seed)
    plan, quantized, input_shape = random_network(rng, kind, saturate)
    path = tmp_path / "network.net"
    write_netx(QuantisedNetwork(plan=plan, layers=tuple(quantized)), path)
    timesteps = 6
    rate = 0.9 if saturate else 0.4
    spikes = (rng.random((2, timesteps, *input_shape)) < rate).astype(np.uint8)
    layers, _ = load_netx(path)
    names = [layer.name for layer in plan.layers]
    ours = simulate(layers, names, input_bias=None, input_spikes=spikes, timesteps=timesteps,
                    emulate_overflow=True)
    total = 0
    for b in range(2):
        theirs = run_lava_netx(path, plan, spikes[b])
        for name in names:
            np.testing.assert_array_equal(ours[name][b], theirs[name], err_msg=f"sample {b}, layer {name}")
            total += int(theirs[name].sum())
    assert total > 0
    if saturate:    # without emulation the same run stops at the first value that leaves its bit width
        with pytest.raises(TargetError, match=r"layer d0: current u exceeds 24 bits \(value \d+\) at sample "
                                              r"\d+, neuron \(\d+,\), step \d+"):
            simulate(layers, names, input_bias=None, input_spikes=spikes, timesteps=timesteps)


# --- arithmetic ----------------------------------------------------------------

def test_decay_is_sign_magnitude_and_wraps_like_lava():
    assert ar.decay(np.array([7, -7]), 2048).tolist() == [3, -3]          # toward zero, both signs
    assert ar.decay(np.array([100]), 0).tolist() == [100]
    u0, v0 = np.zeros(3, np.int64), np.zeros(3, np.int64)
    # Lava wraps u into (-2^23, 2^23]: 2^23 itself stays, one step beyond wraps.
    s, u, v = ar.lif_step(u0, v0, np.array([131072, 131073, -131073]), du=4095, dv=0, bias=0, vth=1 << 16,
                          emulate=True)
    assert u.tolist() == [1 << 23, 131073 * 64 - (1 << 24), -131073 * 64 + (1 << 24)]
    ar.lif_step(u0[:1], v0[:1], np.array([131071]), du=4095, dv=0, bias=0, vth=1)        # fits: no error
    with pytest.raises(ar.Overflow, match="current u exceeds 24 bits"):
        ar.lif_step(u0[:1], v0[:1], np.array([131073]), du=4095, dv=0, bias=0, vth=1)
    # v clips at 2^23 - 1, above the largest threshold (131071 << 6): a clipped neuron fires.
    s, u, v = ar.lif_step(u0[:1], np.array([(1 << 23) - 10]), np.array([0]), du=4095, dv=0, bias=100,
                          vth=131071, emulate=True)
    assert s.tolist() == [True] and v.tolist() == [0]
    with pytest.raises(ar.Overflow, match="voltage v exceeds 24 bits: 8388698"):
        ar.lif_step(u0[:1], np.array([(1 << 23) - 10]), np.array([0]), du=4095, dv=0, bias=100, vth=131071)


def test_weight_bits_match_netx_and_lava():
    import fer2neuro.lava_compat as compat

    compat.require_lava()
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    rng = np.random.default_rng(0)
    for trial in range(30):
        high = int(rng.integers(1, 300))
        w = rng.integers(-high, high + 1, size=(5, 7))
        if trial % 5 == 0:
            w = np.abs(w)
        if trial % 7 == 0:
            w = w * 2
        theirs, bits, exp, _ = optimize_weight_bits(w.copy())
        ours, our_bits, our_exp = ar.netx_weight_bits(w)
        np.testing.assert_array_equal(ours, theirs)
        assert (our_bits, our_exp) == (bits, exp)
        mode = determine_sign_mode(theirs)
        lava = truncate_weights(clip_weights(theirs, mode, num_bits=8), mode, bits)
        np.testing.assert_array_equal(ar.lava_dense_weights(ours, our_bits), lava)


def test_a_clamped_input_layer_is_exact_for_any_brightness(model, tmp_path):
    """The bias-driven if1 clamps its drive just above the threshold: far
    brighter inputs than [0, 1] run, and if1 spikes as in float (a drive above
    the threshold fires on every step whatever its size)."""
    graph = model_to_nir(model)
    write_artifact(graph, tmp_path / "lava", direct=True)
    manifest = json.loads((tmp_path / "lava" / "manifest.json").read_text())
    assert manifest["layers"][0]["name"] == "if1"
    too_bright = np.full((1, 4, 1, 48, 48), 50.0)
    fixed = get_target("loihi").run(str(tmp_path / "lava"), too_bright).outputs["if1"]
    exact = get_target("nir").run(graph, too_bright, record=["if1"]).outputs["if1"]
    assert fixed.sum() > 0
    np.testing.assert_array_equal(fixed, exact)


def test_state_overflow_is_reported_with_layer_and_place(model, tmp_path):
    """A wide layer of large positive weights drives lif1's membrane beyond
    24 bits: the loihi target names the layer instead of wrapping."""
    import copy

    import torch

    loud = copy.deepcopy(model)
    with torch.no_grad():
        loud.fc1.weight.fill_(1.0)
    x = np.repeat(np.random.default_rng(0).uniform(0, 1, size=(2, 1, 1, 48, 48)), 4, axis=1)
    with pytest.raises(TargetError, match=r"layer lif1: (current u|voltage v) exceeds 24 bits .* at sample"):
        get_target("loihi").run(model_to_nir(loud), x)


def test_batches_equal_single_samples_and_cli(model, tmp_path):
    write_artifact(model_to_nir(model), tmp_path / "lava", direct=True)
    x = np.repeat(np.random.default_rng(0).uniform(0, 1, size=(5, 1, 1, 48, 48)), 4, axis=1)
    whole = get_target("loihi").run(str(tmp_path / "lava"), x, batch_size=2)
    for b in range(5):
        one = get_target("loihi").run(str(tmp_path / "lava"), x[b])
        for layer in SPIKING_LAYERS:
            np.testing.assert_array_equal(one.outputs[layer][0], whole.outputs[layer][b])
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "lava"), "--target", "loihi", "--input",
                                       str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"), "--json"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["lif_out"], whole.outputs["lif_out"])
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "lava"), "--target", "nir", "--input",
                                       str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npz"),
                                       "--emulate-overflow"])
    assert result.exit_code == 1 and "the nir target has no option emulate_overflow" in result.stderr


def test_resource_report(checkpoint):
    result = CliRunner().invoke(main, ["report", str(checkpoint), "--target", "loihi", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    layers = {entry["name"]: entry for entry in data["layers"]}
    assert list(layers) == list(SPIKING_LAYERS)
    assert data["neurons"] == 16 * 48 * 48 + 16 * 24 * 24 + 16 * 24 * 24 + 16 * 12 * 12 + 256 + 128 + 7
    assert layers["if1"]["synapses"] == 0                       # driven by its bias (direct encoding)
    assert layers["pool1"]["fan_in"] == 4 and layers["pool1"]["synapses"] == 16 * 24 * 24 * 4
    assert layers["lif1"]["fan_in"] == 16 * 12 * 12
    assert layers["if1"]["cores"] == 5                          # 36,864 neurons / 8,192 per core
    assert data["fits"] and data["chips"] == 1 and data["limits"]["cores_per_chip"] == 128
    tight = CliRunner().invoke(main, ["report", str(checkpoint), "--target", "loihi", "--synapses-per-core", "1000", "--json"])
    tight_data = json.loads(tight.stdout)
    assert not tight_data["fits"] and "lif1" in tight_data["layers_that_do_not_fit"]
    assert tight_data["cores"] > data["cores"]
    table = CliRunner().invoke(main, ["report", str(checkpoint), "--target", "loihi", "--synapses-per-core", "1000"])
    assert "DOES NOT FIT: lif1" in table.stdout


def test_membranes_come_back_in_float_units(model, tmp_path):
    write_artifact(model_to_nir(model), tmp_path / "lava", direct=True)
    x = np.repeat(np.random.default_rng(2).uniform(0, 1, size=(1, 1, 1, 48, 48)), 4, axis=1)
    rec = get_target("loihi").run(str(tmp_path / "lava"), x, record_states=True)
    scale = json.loads((tmp_path / "lava" / "manifest.json").read_text())["layers"][0]["scale"]
    v = rec.states["if1.v"]
    assert v.shape == rec.outputs["if1"].shape
    units = v * scale * 64
    np.testing.assert_allclose(units, np.round(units), rtol=0, atol=1e-6)   # integer state, rescaled
    assert (v[rec.outputs["if1"] == 1] == 0).all()                  # reset where it fired
    assert 0 < v.max() <= 1.0 + 1e-9                                 # below threshold where it did not
