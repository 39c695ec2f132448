"""Pair-based STDP on hand-made spike trains, by the exact amounts; the
STDP phase's guarantees; and the training option."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.errors import ConfigError
from fer2neuro.training.stdp import STDPOptions, stdp_phase, stdp_update

A_PLUS, A_MINUS, TAU_PLUS, TAU_MINUS = 0.01, 0.02, 3.0, 5.0


def trains(pre_times, post_times, steps=10):
    pre, post = torch.zeros(steps, 1, 1), torch.zeros(steps, 1, 1)
    for t in pre_times:
        pre[t, 0, 0] = 1
    for t in post_times:
        post[t, 0, 0] = 1
    return pre, post


def dw(pre, post):
    return stdp_update(pre, post, a_plus=A_PLUS, a_minus=A_MINUS, tau_plus=TAU_PLUS, tau_minus=TAU_MINUS).item()


def test_pre_before_post_potentiates_by_a_plus_exp():
    assert dw(*trains([2], [5])) == pytest.approx(A_PLUS * math.exp(-3 / TAU_PLUS), rel=1e-6)


def test_post_before_pre_depresses_by_a_minus_exp():
    assert dw(*trains([5], [2])) == pytest.approx(-A_MINUS * math.exp(-3 / TAU_MINUS), rel=1e-6)


def test_coincident_spikes_potentiate_once_and_all_pairs_add_up():
    assert dw(*trains([4], [4])) == pytest.approx(A_PLUS, rel=1e-6)
    # pre at 3 and 6, post at 1 and 4: potentiation (3 -> 4); depression (1 -> 3), (1 -> 6), (4 -> 6)
    expected = A_PLUS * math.exp(-1 / TAU_PLUS) - A_MINUS * (
        math.exp(-2 / TAU_MINUS) + math.exp(-5 / TAU_MINUS) + math.exp(-2 / TAU_MINUS))
    assert dw(*trains([3, 6], [1, 4])) == pytest.approx(expected, rel=1e-6)


def test_update_is_averaged_over_the_batch_and_shaped_out_by_in():
    pre = torch.zeros(6, 2, 3)
    post = torch.zeros(6, 2, 2)
    pre[1, 0, 2] = 1
    post[3, 0, 1] = 1                          # only sample 0, synapse (post 1, pre 2)
    out = stdp_update(pre, post, a_plus=A_PLUS, a_minus=A_MINUS, tau_plus=TAU_PLUS, tau_minus=TAU_MINUS)
    assert out.shape == (2, 3)
    assert out[1, 2].item() == pytest.approx(A_PLUS * math.exp(-2 / TAU_PLUS) / 2, rel=1e-6)
    assert torch.count_nonzero(out) == 1


def test_phase_freezes_convs_bounds_the_head_and_restores_the_model(make_active_model):
    model = make_active_model("small").float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bound = {fc: getattr(model, fc).weight.abs().max().item() for fc in ("fc1", "fc2", "fc3")}
    batches = [(torch.rand(4, 1, 48, 48), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    opts = STDPOptions(every=1, a_plus=0.05, a_minus=0.01, neuron_threshold=0.5, neuron_tau=2.0, batches=2,
                       steps=6)
    model.train()
    stats = stdp_phase(model, batches, opts)
    state = model.state_dict()
    for key in before:
        if key.startswith(("conv", "bn")):
            assert torch.equal(state[key], before[key]), key          # frozen
    assert not torch.equal(state["fc1.weight"], before["fc1.weight"])
    for fc in ("fc1", "fc2", "fc3"):
        assert getattr(model, fc).weight.abs().max().item() <= bound[fc] + 1e-7
        assert stats[fc]["post_rate"] >= 0
    assert stats["fc1"]["mean_abs_dw"] > 0
    assert model.config.timesteps == 4 and model.training          # restored


def test_training_records_accuracy_around_each_phase(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", "synthetic", "--preset", "small", "--epochs", "2",
                                       "--limit", "32", "--val-limit", "16", "--batch-size", "16", "--timesteps", "2",
                                       "--stdp-every", "1", "--stdp-batches", "1", "--stdp-steps", "5",
                                       "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    for row in epochs:
        assert 0 <= row["stdp"]["accuracy_before"] <= 1 and 0 <= row["stdp"]["accuracy_after"] <= 1
        assert row["stdp"]["accuracy_before"] == row["val_accuracy"]
        assert set(row["stdp"]["layers"]) == {"fc1", "fc2", "fc3"}
    bad = CliRunner().invoke(main, ["train", "--model", "cnn", "--stdp-every", "10", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "does not apply to --model cnn" in bad.stderr
    with pytest.raises(ConfigError):
        STDPOptions(tau_plus=0)
