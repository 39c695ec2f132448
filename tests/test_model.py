"""The network of SPEC §1: size, structure, time folding, encoders, prediction."""
import pytest
import torch

from fer2neuro.errors import ConfigError
from fer2neuro.model.architecture import two_conv_template
from fer2neuro.model.config import ModelConfig, preset_config
from fer2neuro.model.encoding import poisson_encode
from fer2neuro.model.network import ConvSNN, TimeSharedDropout, build_model, predict
from fer2neuro.model.summary import summarize
from fer2neuro.model.layers import SPIKING_KINDS, layer_names
from fer2neuro.model.config import ModelConfig as TemplateConfig

# The spiking layers of the two-conv template, which every preset these tests use has.
SPIKING_LAYERS = layer_names(TemplateConfig(), *SPIKING_KINDS)


def tiny(**kw):
    kw.setdefault("blocks", two_conv_template(4, (16, 8)))
    kw.setdefault("dropout", 0.0)
    return ModelConfig(preset="test", **kw)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_paper_preset_has_the_papers_parameter_count():
    assert trainable(build_model(preset_config("paper"))) == 21_531_136


def test_paper_summary_matches_table_1_and_3():
    s = summarize(preset_config("paper", timesteps=4))
    assert s.total_params == 21_531_136
    assert s.mult_adds == 427_920_896          # 427.92 M (paper Table 3)
    rows = {r.name: r for r in s.layers}
    assert rows["conv1"].params == 1_152 + 256
    assert rows["conv2"].params == 147_456 + 256
    assert rows["fc1"].params == 21_233_664
    assert rows["fc2"].params == 147_456
    assert rows["fc3"].params == 896
    assert rows["pool2"].shape == (128, 12, 12)
    assert rows["conv1"].runs == 1 and rows["conv2"].runs == 4


def test_poisson_encoding_runs_conv1_every_step():
    direct = summarize(preset_config("paper", timesteps=8))
    poisson = summarize(preset_config("paper", timesteps=8, encoder="poisson"))
    conv1 = 48 * 48 * 128 * 9
    assert poisson.mult_adds - direct.mult_adds == 7 * conv1


def test_small_preset_same_structure():
    paper, small = build_model(preset_config("paper")), build_model(preset_config("small"))
    kinds = lambda m: [type(c).__name__ for c in m.children()]
    assert kinds(paper) == kinds(small)
    assert trainable(small) < trainable(paper) / 20


def test_output_shape_and_binary_spikes():
    model = build_model(tiny(timesteps=3)).eval()
    out = model(torch.rand(5, 1, 48, 48))
    assert out.shape == (3, 5, 7)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def naive_step_loop(model: ConvSNN, inputs: torch.Tensor) -> torch.Tensor:
    """Reference: every layer called once per time step, one snnTorch neuron
    step at a time (no time folding, conv1 recomputed every step)."""
    mems = {}
    outs = []
    for t in range(inputs.shape[0]):
        def neuron(name, current):
            mem = mems.get(name, torch.zeros_like(current))
            spikes, mems[name] = getattr(model, name).step(current, mem)
            return spikes
        s = neuron("if1", model.bn1(model.conv1(inputs[t])))
        s = model.pool1(s)
        s = neuron("if2", model.bn2(model.conv2(s)))
        s = model.pool2(s).flatten(1)
        s = neuron("lif1", model.fc1(s))
        s = neuron("lif2", model.fc2(s))
        outs.append(neuron("lif_out", model.fc3(s)))
    return torch.stack(outs)


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_time_folded_forward_equals_naive_step_loop(encoder):
    torch.manual_seed(0)
    model = build_model(tiny(timesteps=6, encoder=encoder)).double().eval()
    # scale weights up so every layer spikes and the comparison means something
    with torch.no_grad():
        for fc in (model.fc1, model.fc2, model.fc3):
            fc.weight.mul_(3.0)
    images = torch.rand(4, 1, 48, 48, dtype=torch.float64)
    inputs = model.encode(images, torch.Generator().manual_seed(1))
    trace = model.record(inputs)
    reference = naive_step_loop(model, inputs)
    assert torch.equal(trace["lif_out"], reference)
    for layer in SPIKING_LAYERS:
        assert trace[layer].sum() > 0, f"{layer} never spiked: the test would be vacuous"


def test_direct_encoding_computes_conv1_once_and_matches_constant_input():
    torch.manual_seed(0)
    model = build_model(tiny(timesteps=4)).double().eval()
    images = torch.rand(3, 1, 48, 48, dtype=torch.float64)
    calls = []
    handle = model.conv1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    once = model(images)
    handle.remove()
    assert calls == [3]                     # one batch of 3, not 4 x 3
    assert torch.equal(once, model(images.unsqueeze(0).expand(4, -1, -1, -1, -1)))


def test_record_returns_every_layer_and_membranes():
    model = build_model(tiny(timesteps=2)).eval()
    trace = model.record(torch.rand(2, 1, 48, 48), membranes=True)
    assert set(SPIKING_LAYERS) | {"input"} <= set(trace)
    assert trace["pool2"].shape == (2, 2, 4, 12, 12)
    assert trace["lif1.v"].shape == (2, 2, 16)


def test_poisson_encoding_rates_and_reproducibility():
    images = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    a = poisson_encode(images, 4000, torch.Generator().manual_seed(3))
    b = poisson_encode(images, 4000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    rates = a.mean(0).flatten().tolist()
    assert rates[0] == 0.0 and rates[3] == 1.0
    assert rates[1] == pytest.approx(0.25, abs=0.03) and rates[2] == pytest.approx(0.5, abs=0.03)


def test_dropout_mask_is_shared_over_time():
    drop = TimeSharedDropout(0.5).train()
    y = drop(torch.ones(6, 3, 100))
    assert torch.equal(y[0], y[5])
    assert 0.3 < (y[0] == 0).float().mean() < 0.7
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(drop.eval()(torch.ones(2, 2)), torch.ones(2, 2))


def test_prediction_ties_go_to_lowest_index():
    spikes = torch.zeros(4, 2, 3)
    spikes[:, 0, 1] = 1
    spikes[:, 0, 2] = 1          # classes 1 and 2 tie with 4 spikes
    assert predict(spikes).tolist() == [1, 0]    # sample 1: all zero -> class 0


def test_gradients_reach_every_layer():
    torch.manual_seed(0)
    model = build_model(tiny(timesteps=3)).train()
    with torch.no_grad():  # make the head spike: a silent layer passes no weight gradient on
        for fc in (model.fc1, model.fc2, model.fc3):
            fc.weight.mul_(3.0)
    out = model(torch.rand(4, 1, 48, 48))
    # rates start near 0; (rate - 1)^2 has a non-zero slope there
    (out.mean(0) - 1.0).pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bad", [dict(timesteps=0), dict(encoder="rate"), dict(dropout=1.0),
                                 dict(tau=0.5), dict(num_classes=1), dict(model="rnn")])
def test_invalid_config(bad):
    with pytest.raises(ConfigError):
        tiny(**bad)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("huge")


def test_config_round_trip():
    cfg = preset_config("small", timesteps=8, encoder="poisson", class_names=tuple("abcdefg"))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
