"""The feature initialisation (``--init features``, the ``fast`` recipe's):
each fitted piece against an independent computation, the whole on a real
network, and the fast start it exists for."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data import load_splits
from fer2neuro.errors import ConfigError
from fer2neuro.model.config import preset_config
from fer2neuro.model.layers import Conv
from fer2neuro.model.network import TimeSharedDropout, build_model
from fer2neuro.training.feature_init import (FeatureInit, feature_initialise, input_patches, kmeans_filters,
                                             principal_weights, ridge_readout, spherical_kmeans)
from fer2neuro.training.recipe import RECIPES

CONV = Conv("conv1", (1, 12, 12), batchnorm="bn1", out_channels=4, source="input")


def test_input_patches_are_what_the_convolution_multiplies():
    x = torch.randn(2, 3, 7, 5)
    conv = Conv("c", (3, 7, 5), batchnorm="bn", out_channels=6, source="input")
    weight = torch.randn(6, 3, 3, 3)
    expected = torch.nn.functional.conv2d(x, weight, padding=1)          # (2, 6, 7, 5)
    got = (input_patches(x, conv) @ weight.reshape(6, -1).T).reshape(2, 7, 5, 6).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)


def test_spherical_kmeans_finds_well_separated_directions():
    rng = np.random.default_rng(0)
    truth = np.linalg.qr(rng.normal(size=(9, 9)))[0][:3]                  # 3 orthonormal directions
    points = np.repeat(truth, 200, axis=0) + 0.05 * rng.normal(size=(600, 9))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    centres = spherical_kmeans(torch.tensor(points, dtype=torch.float32), 3, 20,
                               torch.Generator().manual_seed(1)).numpy()
    similarity = centres @ truth.T                                         # each centre matches one direction
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    assert sorted(similarity.argmax(1)) == [0, 1, 2] and similarity.max(1).min() > 0.99


def test_kmeans_filters_are_unit_zero_mean_shapes_that_ignore_brightness():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((8, 1, 12, 12)), dtype=torch.float32)
    options = FeatureInit(patches=2000)
    filters = kmeans_filters(x, CONV, options, torch.Generator().manual_seed(0))
    assert filters.shape == (4, 1, 3, 3)
    flat = filters.reshape(4, -1)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(flat.mean(1), torch.zeros(4), atol=1e-6, rtol=0)
    interior = Conv("conv1", (1, 12, 12), batchnorm="bn1", out_channels=4, source="input", padding=0)
    brighter = kmeans_filters(x + 0.3, interior, options, torch.Generator().manual_seed(0))   # no zero padding
    torch.testing.assert_close(brighter, kmeans_filters(x, interior, options, torch.Generator().manual_seed(0)),
                               atol=1e-5, rtol=0)


def test_principal_weights_are_whitened_components_in_both_signs():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    weights = principal_weights(torch.tensor(data), 6).numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(data.T, bias=True))
    leading = eigenvectors[:, ::-1][:, :3].T                               # numpy's own PCA, largest first
    for row, direction in zip(weights[:3], leading):
        assert abs(abs(row @ direction) / np.linalg.norm(row) - 1) < 1e-9
    np.testing.assert_allclose(weights[3:], -weights[:3])
    projected = (data - data.mean(0)) @ weights[:3].T
    np.testing.assert_allclose(projected.var(0), 1.0, rtol=1e-9)          # whitened


def test_principal_weights_fill_missing_directions_when_samples_are_few():
    rates = torch.rand(4, 20, dtype=torch.float64)                         # 3 directions, 10 neurons per sign
    weights = principal_weights(rates, 20)
    assert weights.shape == (20, 20) and torch.isfinite(weights).all()
    assert torch.linalg.matrix_rank(weights[:10]) == 10


def test_a_silent_input_gets_finite_random_directions():
    weights = principal_weights(torch.zeros(50, 12), 8)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.norm(dim=1), torch.full((8,), 2.0 ** 0.5))
    torch.testing.assert_close(weights[4:], -weights[:4])


def test_images_without_contrast_are_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no contrast in the images.*use --init he"):
        kmeans_filters(torch.zeros(4, 1, 12, 12), CONV, FeatureInit(patches=500), torch.Generator())
    blank = tmp_path / "blank"                                  # the same through the CLI: one line, exit 1
    for split in ("train", "test"):
        for name in ("happy", "sad"):
            (blank / split / name).mkdir(parents=True)
            for i in range(6):
                (blank / split / name / f"{i}.pgm").write_bytes(b"P5 48 48 255\n" + bytes(48 * 48))   # black
    result = CliRunner().invoke(main, ["train", "--data", str(blank), "--epochs", "1", "--no-progress",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "use --init he" in errors[0], result.output      # one line, the last
    assert result.output.splitlines()[-1] == errors[0]


def test_ridge_readout_is_the_closed_form_and_fits_separable_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    rates = rng.random((300, 8)) * 0.2
    rates[np.arange(300), labels] += 1.0                                   # feature k says class k
    options = FeatureInit(ridge=0.1, target_current=1.5)
    weights, accuracy = ridge_readout(torch.tensor(rates), torch.tensor(labels), 3, options)
    target = np.zeros((300, 3))
    target[np.arange(300), labels] = 1.5
    gram = rates.T @ rates
    expected = np.linalg.solve(gram + 0.1 * np.trace(gram) / 8 * np.eye(8), rates.T @ target).T
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-9)
    assert accuracy == 1.0


@pytest.fixture(scope="module")
def faces():
    train = load_splits("synthetic", {"Training": 600}, seed=0)["Training"]
    return train.tensors()


def test_feature_initialisation_reaches_its_rates_and_starts_discriminative(faces):
    images, labels = faces
    torch.manual_seed(0)
    model = build_model(preset_config("small", timesteps=4, dropout=0.3))
    model.eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    report = feature_initialise(model, images, labels, seed=0)
    assert not model.training and all(not m.training for m in model.modules())       # modes as they were
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name, value in model.named_buffers():
        if not name.endswith(statistics):
            assert torch.equal(value, buffers[name]), name                             # nothing else touched
    assert report["batchnorm"] == 2 and not torch.equal(model.bn1.running_var, buffers["bn1.running_var"])
    # BatchNorm's running statistics are the init images': in eval mode (how
    # every target runs) the layers fire near the rates they were balanced to
    with torch.no_grad():
        seen = model.record(images[:256])
    for name, target, tolerance in (("if1", 0.05, 0.02), ("if2", 0.05, 0.02), ("lif1", 0.1, 0.05),
                                    ("lif2", 0.1, 0.05)):
        assert abs(seen[name].mean().item() - target) < tolerance, (name, seen[name].mean().item())
    layers = report["layers"]
    assert [layers[n]["method"] for n in ("conv1", "conv2", "fc1", "fc2", "fc3")] == \
        ["k-means", "k-means", "principal components", "principal components", "ridge readout"]
    for name, target in (("conv1", 0.05), ("conv2", 0.05), ("fc1", 0.1), ("fc2", 0.1)):
        assert abs(layers[name]["rate"] - target) < 0.01, (name, layers[name])
    assert layers["fc3"]["train_accuracy"] > 0.3                        # chance is 1/7
    json.dumps(report)                                                   # goes into metrics.json as it is

    model.train()
    with torch.no_grad():      # the output currents already tell the classes apart (the loss reads them)
        _, currents = model(images[:300], with_currents=True)
    assert (currents.mean(0).argmax(1) == labels[:300]).float().mean() > 0.3

    torch.manual_seed(5)                                                 # the seed decides, not the global RNG
    again = build_model(preset_config("small", timesteps=4, dropout=0.3))
    feature_initialise(again, images, labels, seed=0)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        if name.endswith(".weight") and not name.startswith("bn"):
            torch.testing.assert_close(a, b, msg=name)


def test_dropout_is_off_while_it_measures(faces):
    images, labels = faces
    torch.manual_seed(0)
    model = build_model(preset_config("small", timesteps=4, dropout=0.5))
    seen = []
    for module in model.modules():
        if isinstance(module, TimeSharedDropout):
            module.register_forward_hook(lambda m, args, out: seen.append(m.training))
    model.train()
    feature_initialise(model, images[:200], labels[:200], seed=0)
    assert seen and not any(seen)
    assert all(m.training for m in model.modules())


def test_the_fast_recipe_is_the_default_and_records_its_initialisation(tmp_path):
    assert RECIPES["fast"].init == "features" and RECIPES["paper"].init == "he"
    result = CliRunner().invoke(main, ["train", "--data", "synthetic", "--preset", "small", "--limit", "200",
                                       "--val-limit", "40", "--timesteps", "2", "--epochs", "1", "--no-progress",
                                       "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "feature initialisation from 179 training images" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["recipe"]["init"] == "features" and metrics["config"]["recipe"]["lr"] == 5e-3
    assert metrics["init"]["method"] == "features" and metrics["init"]["images"] == 179
    assert set(metrics["init"]["layers"]) == {"conv1", "conv2", "fc1", "fc2", "fc3"}


@pytest.mark.slow
def test_the_fast_start(tmp_path):
    """Issue 12's target, as a user runs it: two epochs of 2,000 synthetic
    faces on the small preset reach 60 % validation accuracy (the figure the
    command prints). Two threads, as CI has: the thread count changes float
    sums and so the run (docs/training.md: 61-67 % over seeds and threads).
    He initialisation with the paper's recipe gets about 20 %."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = CliRunner().invoke(main, ["train", "--data", "synthetic", "--preset", "small", "--epochs", "2",
                                           "--limit", "2000", "--no-progress", "--out", str(tmp_path / "fast")],
                                    catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "fast" / "metrics.json").read_text())
    assert metrics["epochs"][-1]["val_accuracy"] >= 0.60, result.output
    assert metrics["test"]["accuracy"] >= 0.50, result.output
