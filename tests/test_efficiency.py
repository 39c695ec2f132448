"""``fer2neuro report``: the paper's figures for the paper preset, and
synaptic operations equal to a count made by hand."""
import json

import torch
from click.testing import CliRunner

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.cli import main
from fer2neuro.efficiency import E_AC_PJ, E_MAC_PJ, efficiency_report, synaptic_operations
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model


def test_paper_preset_params_and_mult_adds_are_spec_section_1():
    config = preset_config("paper", class_names=tuple("abcdefg"))
    model = build_model(config).eval()
    report = efficiency_report(model, config, torch.rand(2, 1, 48, 48), torch.zeros(2, dtype=torch.long))
    assert report["params"] == 21_531_136
    assert report["mult_adds"] == 427_920_896
    assert round(report["size_mb"], 2) == 86.12                      # the paper's 86.12 MB
    assert report["energy_constants"] == {"E_AC_pJ": E_AC_PJ, "E_MAC_pJ": E_MAC_PJ,
                                          "source": report["energy_constants"]["source"]}
    assert report["throughput"]["inference_samples_per_s"] > 0


def hand_count(model, images) -> dict:
    """SynOps by explicit loops over every input spike and its connections."""
    trace = model.record(images)
    batch = images.shape[0]
    pool1 = trace["pool1"]
    _, _, _, height, width = pool1.shape
    conv2 = 0
    for t, b, c, h, w in pool1.nonzero().tolist():
        rows = sum(1 for i in range(h - 1, h + 2) if 0 <= i < height)     # 3x3, stride 1, padding 1
        cols = sum(1 for j in range(w - 1, w + 2) if 0 <= j < width)
        conv2 += model.conv2.out_channels * rows * cols
    counts = {"conv2": conv2 / batch}
    for fc, source in (("fc1", "pool2"), ("fc2", "lif1"), ("fc3", "lif2")):
        n = 0
        for _ in trace[source].nonzero().tolist():
            n += getattr(model, fc).out_features
        counts[fc] = n / batch
    return counts


def test_synops_equal_a_hand_count_on_a_tiny_net(make_active_model):
    model = make_active_model("small", blocks=two_conv_template(2, (6, 4)))
    images = torch.rand(3, 1, 48, 48, dtype=torch.float64)
    measured = synaptic_operations(model, images)
    expected = hand_count(model, images)
    assert set(measured) == set(expected)
    for layer in expected:
        assert measured[layer] == expected[layer], layer
    assert expected["conv2"] > 0 and expected["fc1"] > 0


def test_report_cli_side_by_side_with_a_baseline(active_checkpoint, tmp_path):
    cnn = tmp_path / "cnn"
    run = CliRunner().invoke(main, ["train", "--data", "synthetic", "--model", "cnn", "--preset", "small",
                                    "--epochs", "1", "--limit", "32", "--val-limit", "16", "--out", str(cnn),
                                    "--no-progress"])
    assert run.exit_code == 0, run.output
    result = CliRunner().invoke(main, ["report", str(active_checkpoint), "--baseline", str(cnn / "best.pt"),
                                       "--samples", "8", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["model"] == "snn" and data["baseline"]["model"] == "cnn"
    assert data["model"]["synops"] > 0 and data["model"]["snn_energy_uj"] > 0
    assert "synops" not in data["baseline"] and data["baseline"]["ann_macs"] > 0
    table = CliRunner().invoke(main, ["report", str(active_checkpoint), "--samples", "4"])
    assert "SynOps per layer" in table.stdout and "energy ratio ANN / SNN" in table.stdout
