"""Issue 17's friendlier edges, through the command line: output paths named
as the user gave them, the --split choices in every command's help, one
default preset, and a resume with nothing to do saying so."""
import os

import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data.dataset import SPLITS
from cli_errors import one_line_error


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_out_empty_is_an_error_not_the_current_folder(tmp_path):
    before = sorted(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = invoke("train", "--data", "synthetic", "--epochs", "1", "--limit", "16", "--out", "")
    finally:
        os.chdir(cwd)
    one_line_error(result, "--out", "empty path")
    assert sorted(os.listdir(tmp_path)) == before


def test_file_outputs_refuse_a_folder_naming_the_users_path(tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    result = invoke("simulate", tmp_path / "g.nir", "--input", tmp_path / "x.npy", "--out", folder)
    one_line_error(result, str(folder), "is a folder")
    result = invoke("verify", tmp_path / "m.pt", "--report", f"{folder}{os.sep}")
    one_line_error(result, str(folder))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("command,option", [("evaluate", "--split"), ("report", "--split"), ("verify", "--split"),
                                            ("visualize", "--split"), ("finetune", "--eval-split")])
def test_every_split_option_lists_the_splits(command, option):
    text = " ".join(invoke(command, "--help").output.split())
    assert option in text
    for split in SPLITS:
        assert split in text, (command, split)


def test_summary_and_train_share_one_default_preset():
    from fer2neuro.cli.summary import summary
    from fer2neuro.cli.train import train

    default = {p.name: p.default for p in summary.params}["preset"]
    assert default == {p.name: p.default for p in train.params}["preset"] == "small"


def test_export_out_help_covers_onnx():
    text = " ".join(invoke("export", "--help").output.split())
    assert ".onnx" in text


def test_a_resume_with_nothing_to_do_does_not_claim_a_write(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--preset", "small", "--epochs", "1", "--limit", "32", "--val-limit", "8",
            "--no-progress", "--out", out]
    assert invoke(*args).exit_code == 0
    stamp = (out / "best.pt").stat().st_mtime_ns
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.output
    assert "nothing to train" in again.output and "unchanged" in again.output and "wrote" not in again.output
    assert (out / "best.pt").stat().st_mtime_ns == stamp
    more = invoke(*[a if a != "1" else "2" for a in args], "--resume")    # epoch 2 is trained: not "nothing"
    assert more.exit_code == 0, more.output
    assert "nothing to train" not in more.output and ("wrote" in more.output or "no better epoch" in more.output)
