"""``fer2neuro visualize`` writes the paper's figures as real PNGs."""
from click.testing import CliRunner

from fer2neuro.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_visualize_writes_non_empty_pngs(active_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["visualize", str(active_checkpoint), "--out", str(tmp_path / "figs"),
                                       "--limit", "40", "--samples", "2"])
    assert result.exit_code == 0, result.output
    for name in ("poisson_encoding.png", "poisson_cumulative.png", "encoder_spikes.png", "confusion.png"):
        data = (tmp_path / "figs" / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    assert not (tmp_path / "figs" / "curves.png").exists()          # no metrics.json beside this checkpoint


def test_visualize_draws_training_curves_of_a_run(tmp_path):
    run = CliRunner().invoke(main, ["train", "--data", "synthetic", "--preset", "small", "--epochs", "2",
                                    "--limit", "32", "--val-limit", "16", "--batch-size", "16", "--timesteps", "2",
                                    "--out", str(tmp_path / "run"), "--no-progress"])
    assert run.exit_code == 0, run.output
    result = CliRunner().invoke(main, ["visualize", str(tmp_path / "run" / "best.pt"), "--out",
                                       str(tmp_path / "figs"), "--limit", "16", "--samples", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "figs" / "curves.png").read_bytes()[:8] == PNG


def test_several_runs_curves_on_one_chart(tmp_path):
    """plots.plot_runs (benchmarks/paired_models.py --curves): one PNG, nothing else left."""
    from fer2neuro.training.plots import plot_runs

    def run(level):
        return [{"epoch": e, "val_accuracy": level + e / 100, "train_accuracy": level + e / 80} for e in range(1, 6)]

    plot_runs({"a": run(0.3), "b": run(0.4), "c": run(0.5)}, tmp_path / "runs.png", "three runs")
    data = (tmp_path / "runs.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["runs.png"]
