"""The shallow CNN baseline (issue 7, first part): structure, a training
step, and the same command line as the SNN."""
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model, predict
from fer2neuro.training.losses import output_loss


def test_layer_pattern_and_parameter_count():
    model = build_model(preset_config("paper", model="cnn"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (len(convs), len(pools), len(fcs)) == (3, 3, 2)                # CPCPCPFF
    c, h = 128, 1152
    expected = 9 * c + 2 * 9 * c * c + 3 * 2 * c + (c * 6 * 6) * h + h + h * 7 + 7
    assert sum(p.numel() for p in model.parameters()) == expected
    logits = model.eval()(torch.rand(3, 1, 48, 48))
    assert logits.shape == (3, 7)
    assert predict(logits).tolist() == logits.argmax(-1).tolist()


def test_a_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model(preset_config("small", model="cnn", dropout=0.0))
    x, y = torch.rand(16, 1, 48, 48), torch.randint(0, 7, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(5):
        loss = output_loss(model(x), y, 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    expected = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    assert torch.isclose(output_loss(model(x), y, 0.1), expected)


def test_train_evaluate_and_refuse_to_export(tmp_path):
    run = CliRunner().invoke(main, ["train", "--data", "synthetic", "--model", "cnn", "--preset", "small",
                                    "--epochs", "1", "--limit", "64", "--val-limit", "32", "--batch-size", "32",
                                    "--out", str(tmp_path / "run"), "--no-progress"])
    assert run.exit_code == 0, run.output
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run" / "best.pt"), "--limit", "32", "--json"])
    assert result.exit_code == 0 and '"accuracy"' in result.stdout
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "m.nir")])
    assert result.exit_code == 1 and "cannot export a ShallowCNN to NIR: only the spiking ConvSNN" in result.stderr
