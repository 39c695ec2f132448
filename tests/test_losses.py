"""The training losses: their values by hand, the currents they read, and
that the current-ce loss reaches a silent output layer."""
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.model.neuron_step import NeuronParams, run_steps
from fer2neuro.training.init import rate_initialise
from fer2neuro.training.losses import LOSSES, RATE_CE_SCALE, output_loss
from fer2neuro.training.loop import forward_loss
from fer2neuro.training.recipe import RECIPES


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_model(preset_config("small", timesteps=3, class_names=tuple("abcdefg")))


def test_each_loss_by_hand():
    torch.manual_seed(0)
    spikes = (torch.rand(4, 5, 7) < 0.3).float()
    currents = torch.randn(4, 5, 7)
    y = torch.tensor([0, 3, 6, 2, 2])
    target = F.one_hot(y, 7).float() * 0.9 + 0.1 / 7
    mse = ((spikes.mean(0) - target) ** 2).mean()
    assert torch.isclose(output_loss(spikes, y, 0.1, "rate-mse"), mse)
    ce = -torch.log_softmax(spikes.mean(0) * RATE_CE_SCALE, -1)
    assert torch.isclose(output_loss(spikes, y, 0.0, "rate-ce"), ce[torch.arange(5), y].mean())
    ce_current = -torch.log_softmax(currents.mean(0), -1)
    by_hand = (ce_current * target).sum(-1).mean() + mse     # label-smoothed CE, then the rate MSE
    assert torch.isclose(output_loss(spikes, y, 0.1, "current-ce", currents), by_hand)
    with pytest.raises(ValueError, match="currents"):
        output_loss(spikes, y, 0.1, "current-ce")


def test_the_currents_are_what_drives_the_output_neurons():
    model = small_model()
    x = torch.rand(6, 1, 48, 48)
    rate_initialise(model, x)                    # a fresh output layer is silent; make it fire
    model.eval()
    with torch.no_grad():
        spikes, currents = model(x, with_currents=True)
        assert torch.equal(spikes, model(x))
    assert currents.shape == spikes.shape == (3, 6, 7)
    # the output LIF layer run on those currents by the pure neuron definition
    replayed = run_steps(currents, NeuronParams.leaky(model.config.tau, model.config.v_threshold))
    assert torch.equal(replayed, spikes) and spikes.sum() > 0


def test_current_ce_reaches_an_output_layer_that_never_fires():
    """With the output layer silent the rate MSE's only path is the surrogate
    far below threshold; the current term still gives every class a push."""
    model = small_model()
    x, y = torch.rand(8, 1, 48, 48), torch.arange(8) % 7
    rate_initialise(model, x)                                 # lif2 fires, so fc3 has inputs
    with torch.no_grad():
        model.fc3.weight.abs_().neg_().mul_(5)                # strongly negative: no output spike
    model.train()
    grads = {}
    for loss in ("rate-mse", "current-ce"):
        model.zero_grad()
        out, value = forward_loss(model, x, y, 0.1, loss)
        assert out.sum() == 0
        value.backward()
        grads[loss] = model.fc3.weight.grad.norm().item()
    assert grads["current-ce"] > 100 * grads["rate-mse"]


def test_recipes_choose_their_loss_and_the_option_overrides_it(tmp_path):
    assert RECIPES["paper"].loss == "rate-mse"                 # SPEC §3
    assert RECIPES["fer2neuro"].loss in LOSSES
    args = ["train", "--data", "synthetic", "--limit", "64", "--val-limit", "16", "--timesteps", "2",
            "--epochs", "1", "--no-progress"]
    for loss in LOSSES:
        out = tmp_path / loss
        result = CliRunner().invoke(main, [*args, "--loss", loss, "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["recipe"]["loss"] == loss
        assert metrics["epochs"][0]["train_loss"] > 0
    bad = CliRunner().invoke(main, [*args, "--loss", "hinge", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--loss" in bad.output and "Traceback" not in bad.output
