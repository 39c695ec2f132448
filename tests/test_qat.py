"""Quantisation-aware fine-tuning (fer2neuro.qat): the QAT forward pass is
the loihi target's arithmetic on the model's export, spike for spike; the
gradient reaches every parameter; a fine-tuned checkpoint exports to the
network it was trained as; verify holds every fixed-point backend to it."""
import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import TargetError
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.lava_folder import write_artifact
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.lowering.quantise import STATE_MAX, quantise, quantize_layer
from fer2neuro.model.checkpoint import load_checkpoint, save_checkpoint
from fer2neuro.qat.finetune import measure_state_bounds, snap_to_integers
from fer2neuro.qat.loihi import LoihiQAT
from fer2neuro.targets import get_target


def _inputs(model, x, seed=3):
    """(encoded (T, B, ...) for the model, the same as a (B, T, ...) array for a target)."""
    encoded = model.encode(x, torch.Generator().manual_seed(seed))
    return encoded, encoded.transpose(0, 1).double().numpy()


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_the_qat_forward_is_loihi_on_the_exported_folder(encoder, tmp_path, make_active_model,
                                                         make_probe_images):
    model = make_active_model("small", encoder=encoder).float().eval()
    x = make_probe_images(6).float()
    encoded, inputs = _inputs(model, x)
    qat = LoihiQAT(model)
    quantised = qat(x, encoded)
    # what QAT trains through: the model's export (with direct encoding, its
    # first convolution on the input grid, where fine-tuning leaves it), on disk
    write_artifact(qat.program().graph, tmp_path / "lava")
    chip = get_target("loihi").run(str(tmp_path / "lava"), inputs)
    ours = quantised.spikes()
    assert list(ours) == list(chip.spiking)
    for name in chip.spiking:
        assert chip.outputs[name].sum() > 0, f"{name} is silent: the comparison would prove nothing"
        np.testing.assert_array_equal(ours[name], chip.outputs[name], err_msg=name)
    # and the gradient reaches every trainable parameter through the exact spikes
    loss = quantised.output.mean() + quantised.output_currents.pow(2).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_a_snapped_model_exports_to_the_same_integers_and_spikes_like_them(encoder, make_active_model,
                                                                           make_probe_images):
    """After fine-tuning the float weights are set to the integer ones / scale
    (and, with direct encoding, the first convolution to the input grid):
    exporting again at the kept scales gives the same integers, and on 8-bit
    images the float64 model spikes exactly as the chip, in every layer: the
    leaky layers' power-of-two scales make float and integer arithmetic
    coincide, ties on the threshold included."""
    model = make_active_model("small", encoder=encoder).float().eval()
    direct = encoder == "direct"
    model.deployment = {"qat": "loihi", "scale_rule": "power_of_two"}
    network = quantise(model_to_nir(model), direct=direct, target="loihi")
    model.deployment["scales"] = snap_to_integers(model, network)
    for q, layer in zip(network.layers, network.plan.layers):     # the leaky layers at powers of two
        assert np.log2(q.scale).is_integer() == (layer.dv > 0), layer.name
    again = quantise(model_to_nir(model), direct=direct, target="loihi")
    for first, second in zip(network.layers, again.layers):
        assert (first.scale, first.vth) == (second.scale, second.vth)
        for a, b in ((first.weight, second.weight), (first.bias, second.bias)):
            assert (a is None and b is None) or np.array_equal(a, b)
    x = (make_probe_images(8) * 255).round().float() / 255                # 8-bit images
    encoded, inputs = _inputs(model, x)
    float_trace = copy.deepcopy(model).double().record(x.double() if direct else encoded.double())
    chip = get_target("loihi").run(model_to_nir(model), inputs)
    for name in chip.spiking:
        assert chip.outputs[name].sum() > 0, name
        np.testing.assert_array_equal(float_trace[name].transpose(0, 1).numpy().astype(np.uint8),
                                      chip.outputs[name], err_msg=name)


def test_measured_state_bounds_set_the_scale_and_prevent_an_overflow(make_active_model, make_probe_images):
    """A layer whose sums outgrow 24 bits at the weight-set scale overflows;
    with its measured state bound in the export the quantiser lowers the
    scale so that twice the bound fits, and the same inputs run."""
    model = make_active_model("small").float().eval()
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
    x = make_probe_images(4).float()
    inputs = _inputs(model, x)[1]
    with pytest.raises(TargetError, match="layer lif1: .* exceeds 24 bits"):
        get_target("loihi").run(model_to_nir(model), inputs)
    bounds = measure_state_bounds(LoihiQAT(model), [(x, None)])
    model.deployment = {"state_bounds": bounds}
    graph = model_to_nir(model)
    plan = build_plan(graph, direct=True)
    lif1 = next(layer for layer in plan.layers if layer.name == "lif1")
    assert lif1.state_bound == pytest.approx(bounds["lif1"])
    assert quantize_layer(lif1, plan).scale * 64 * 2 * bounds["lif1"] <= STATE_MAX
    assert get_target("loihi").run(graph, inputs).outputs["lif1"].sum() > 0


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_finetune_writes_a_checkpoint_that_verify_holds_to_its_integer_network(tmp_path, make_active_model):
    model = make_active_model("small").float()
    save_checkpoint(tmp_path / "float.pt", model, model.config)
    out = tmp_path / "qat"
    result = invoke("finetune", tmp_path / "float.pt", "--qat", "loihi", "--epochs", "1", "--limit", "24",
                    "--batch-size", "8", "--eval-limit", "16", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for when in ("before", "after"):
        entry = metrics[when]
        assert entry["samples"] == 16 and entry["overflow"] is None
        assert 0 <= entry["fixed_accuracy"] <= 1 and 0 <= entry["agreement"] <= 1
    deployment = load_checkpoint(out / "best.pt").deployment
    assert deployment["qat"] == "loihi" and set(deployment["scales"]) >= {"if1", "lif1", "lif_out"}
    assert set(deployment["state_bounds"]) >= {"if1", "lif1", "lif_out"}
    verified = invoke("verify", out / "best.pt", "--backends", "loihi", "--samples", "8", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    assert report["qat"] == "loihi" and report["qat_model_agreement"]["loihi"]["bit_exact"]
    again = invoke("finetune", tmp_path / "float.pt", "--epochs", "1", "--out", out)
    assert again.exit_code == 1 and "already holds a fine-tuned model" in again.stderr


def test_verify_fails_when_an_export_departs_from_the_qat_model(tmp_path, make_active_model):
    """The QAT check can fail: a Lava folder exported before the weights moved
    is not the integer network the checkpoint was fine-tuned as."""
    model = make_active_model("small").float().eval()
    network = quantise(model_to_nir(model), direct=True, target="loihi")
    model.deployment = {"qat": "loihi", "scales": snap_to_integers(model, network)}
    write_artifact(model_to_nir(model), tmp_path / "lava")
    with torch.no_grad():
        model.fc2.weight.mul_(-1.0)                       # the checkpoint moves on; the folder does not
    save_checkpoint(tmp_path / "qat.pt", model, model.config)
    result = invoke("verify", tmp_path / "qat.pt", "--backends", "loihi", "--lava", tmp_path / "lava",
                    "--samples", "4")
    assert result.exit_code == 1 and "loihi differs from the loihi QAT model" in result.stderr


def test_a_silent_layer_gives_no_state_bound():
    """A layer whose state never left 0 (a barely trained model's output
    layer) has no bound to keep; a bound of 0 would make no scale fit."""
    from fer2neuro.qat.finetune import measured

    assert measured({"if1": 3.5, "lif_out": 0.0}) == {"if1": 3.5}
