"""Issue 26: progress in a log is lines, not redrawn frames; ``--recipe
auto`` picks the recipe for the run and says why."""
import io
import json
import os
import subprocess
import sys

from click.testing import CliRunner

import fer2neuro.training.recipe as recipes
from fer2neuro.cli import main
from fer2neuro.progress import progress_bar

TINY = ["--data", "synthetic", "--preset", "small", "--limit", "96", "--val-limit", "20", "--timesteps", "2",
        "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_in_a_log_writes_lines_and_on_a_terminal_redraws():
    log = io.StringIO()
    bar = progress_bar(range(300), desc="epoch 1/3", file=log, leave=False, unit="batch")
    for i in bar:
        bar.set_postfix(loss=f"{i / 300:.3f}")          # a redraw per batch, as training does
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 3                             # the start, (at most one ~10 s later), the end
    assert lines[0].startswith("epoch 1/3:") and "300/300" in lines[-1]
    terminal = Terminal()
    for _ in progress_bar(range(5), desc="x", file=terminal, mininterval=0):
        pass
    assert "\r" in terminal.getvalue()                      # tqdm's bar, redrawn in place
    quiet = io.StringIO()
    for _ in progress_bar(range(5), desc="x", file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_a_command_logged_to_a_file_has_no_carriage_returns(active_checkpoint, tmp_path):
    log = tmp_path / "evaluate.log"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "fer2neuro", "evaluate", str(active_checkpoint), "--data",
                               "synthetic", "--limit", "300", "--batch-size", "16"],
                              stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "evaluate:" in text and "19/19" in text


def test_auto_picks_by_samples_seen_or_time_budget():
    assert recipes.auto_recipe(2, 1799, None)[0] == "fast"                       # the fast start
    assert recipes.auto_recipe(10, 2520, None)[0] == "fast"                      # the demo
    assert recipes.auto_recipe(8, 25_837, None)[0] == "fer2neuro"                # 8 epochs of FER2013
    assert recipes.auto_recipe(10_000, 25_837, 60)[0] == "fer2neuro"             # the hour
    assert recipes.auto_recipe(10_000, 25_837, 5)[0] == "fast"
    name, why = recipes.auto_recipe(100, 300, None)                              # a few hundred images
    assert name == "fast" and "30,000" in why


def test_train_says_which_recipe_auto_picked_and_records_it(tmp_path, monkeypatch):
    result = invoke("train", *TINY, "--epochs", "1", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert "recipe auto: fast (1 epochs x 89 training images" in result.stderr
    choice = json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]["recipe_choice"]
    assert choice["recipe"] == "fast" and choice["auto"] is True
    result = invoke("train", *TINY, "--epochs", "1", "--recipe", "paper", "--out", tmp_path / "b")
    assert "recipe auto" not in result.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["recipe_choice"]["auto"] is False
    # a resume keeps the decision the run started with, even past the threshold
    monkeypatch.setattr(recipes, "AUTO_LONG_SAMPLES", 100)
    assert recipes.auto_recipe(2, 89, None)[0] == "fer2neuro"
    result = invoke("train", *TINY, "--epochs", "2", "--resume", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["config"]["recipe_choice"]["recipe"] == "fast" and len(metrics["epochs"]) == 2
