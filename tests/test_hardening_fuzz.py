"""Fuzz-style hardening: every command x bad values (NaN, ±inf, complex,
strings, empty, zero-length axes, huge) for numeric options and input arrays.

Each must end non-zero without a traceback and leave nothing in the output
folder, in one of two forms:

* exit 1: a user error (fer2neuro.errors), exactly one stderr line, "Error: ...";
* exit 2: click's usage error (a bad option value caught while parsing, before
  any work): "Usage: ..." and "Try ..." lines, then exactly one "Error: ..." line.
"""
from __future__ import annotations

import nir
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.lowering.onnx_graph import nir_to_onnx
from fer2neuro.nirgraph.file import GraphInfo

T, N_IN = 5, 4
NUMBERS = ["nan", "inf", "-inf", "1e400", "1+2j", "abc", ""]


def small_graph(*, bad_shape=False, encoder="poisson") -> nir.NIRGraph:
    """Input(4) -> Affine -> LIF(3) -> Affine -> LIF(2) -> Output, with
    fer2neuro metadata; ``bad_shape``: the second Affine takes 5 inputs."""
    ones = np.ones
    nodes = {"input": nir.Input(input_type=np.array([N_IN])),
             "fc1": nir.Affine(weight=np.full((3, N_IN), 0.6), bias=np.zeros(3)),
             "lif1": nir.LIF(tau=2 * ones(3), r=ones(3), v_leak=0 * ones(3), v_threshold=ones(3)),
             "fc2": nir.Affine(weight=np.full((2, 5 if bad_shape else 3), 0.8), bias=np.zeros(2)),
             "lif2": nir.LIF(tau=2 * ones(2), r=ones(2), v_leak=0 * ones(2), v_threshold=ones(2)),
             "output": nir.Output(output_type=np.array([2]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    meta = GraphInfo(dt=1.0, timesteps=T, encoder=encoder, class_names=("a", "b")).to_metadata()
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=not bad_shape)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    nir.write(d / "G.nir", small_graph())
    nir.write(d / "direct.nir", small_graph(encoder="direct"))
    nir.write(d / "bad.nir", small_graph(bad_shape=True))
    onnx.save(nir_to_onnx(small_graph(), timesteps=T, direct=False, dt=1.0, precision="float64",
                          membranes=False), d / "m.onnx")
    spikes = (np.random.default_rng(0).random((T, N_IN)) < 0.5).astype(np.float64)
    np.save(d / "good.npy", spikes)
    arrays = {
        "nan": np.where(spikes > 0, np.nan, 0.0),
        "posinf": np.where(spikes > 0, np.inf, 0.0),
        "neginf": np.where(spikes > 0, -np.inf, 0.0),
        "complex": spikes + 1j,
        "complex-real": spikes.astype(np.complex128),        # imaginary part 0: complex all the same
        "strings": np.full((T, N_IN), "1"),
        "objects-free-bytes": np.full((T, N_IN), b"1"),
        "empty": np.zeros((0,)),
        "scalar": np.array(1.0),
        "no-samples": np.zeros((0, T, N_IN)),
        "no-steps": np.zeros((1, 0, N_IN)),
        "no-features": np.zeros((T, 0)),
        "wrong-shape": np.zeros((T, N_IN + 1)),
        "huge": np.full((T, N_IN), 1e300),
        "uint8-pixels": np.full((T, N_IN), 255, dtype=np.uint8),
    }
    for name, a in arrays.items():
        np.save(d / f"{name}.npy", a)
    return d


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(result, out_dir):
    err = result.stderr
    assert result.exit_code in (1, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "Warning" not in err, err
    lines = err.strip().splitlines()
    if result.exit_code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), err
    else:                                  # click's usage error
        assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: "), err
        assert sum(line.startswith("Error") for line in lines) == 1, err
    assert not any(out_dir.iterdir()), sorted(p.name for p in out_dir.iterdir())


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


BAD_INPUTS = ["nan", "posinf", "neginf", "complex", "complex-real", "strings", "objects-free-bytes", "empty",
              "scalar", "no-samples", "no-steps", "no-features", "wrong-shape", "huge", "uint8-pixels"]


@pytest.mark.parametrize("source,target", [("G.nir", "nir"), ("G.nir", "onnx"), ("G.nir", "loihi"),
                                           ("m.onnx", "onnx")])
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_simulate_refuses_bad_inputs(files, out_dir, source, target, bad):
    result = invoke(["simulate", files / source, "--target", target, "--input", files / f"{bad}.npy",
                     "--out", out_dir / "y.npz"])
    if source == "m.onnx" and bad in ("huge", "uint8-pixels"):
        # an .onnx file carries no fer2neuro range: finite values run
        assert result.exit_code == 0, result.output
        (out_dir / "y.npz").unlink()
        return
    assert_clean_failure(result, out_dir)


def test_simulate_messages_name_the_problem(files, out_dir):
    def error(bad, source="G.nir", target="nir"):
        result = invoke(["simulate", files / source, "--target", target, "--input", files / f"{bad}.npy",
                         "--out", out_dir / "y.npz"])
        assert_clean_failure(result, out_dir)
        return result.stderr
    assert "NaN" in error("nan", "m.onnx", "onnx") and "direct" not in error("nan", "m.onnx", "onnx")
    assert "complex" in error("complex", target="loihi")
    assert "strings" in error("strings", "m.onnx", "onnx")
    assert "0/1" in error("huge")
    assert "[0, 1]" in error("uint8-pixels", "direct.nir") and "255" in error("uint8-pixels", "direct.nir")
    # the good input runs on every target, so the refusals above are the checks, not a broken fixture
    for source, target in [("G.nir", "nir"), ("G.nir", "onnx"), ("G.nir", "loihi"), ("m.onnx", "onnx")]:
        ok = invoke(["simulate", files / source, "--target", target, "--input", files / "good.npy",
                     "--out", out_dir / "y.npz", "--json"])
        assert ok.exit_code == 0, ok.output
        (out_dir / "y.npz").unlink()


@pytest.mark.parametrize("target", ["nir", "onnx", "loihi", "lava-fixed"])
def test_shape_mismatched_graph_is_one_line_naming_the_nodes(files, out_dir, target):
    result = invoke(["simulate", files / "bad.nir", "--target", target, "--input", files / "good.npy",
                     "--out", out_dir / "y.npz"])
    assert_clean_failure(result, out_dir)
    assert result.exit_code == 1 and "'fc2'" in result.stderr and "'lif1'" in result.stderr, result.stderr


def test_report_loihi_refuses_shape_mismatched_graph(files, out_dir):
    result = invoke(["report", files / "bad.nir", "--target", "loihi"])
    assert_clean_failure(result, out_dir)
    assert "'fc2'" in result.stderr


@pytest.mark.parametrize("value", NUMBERS + ["0", "-1", "1e300"])
@pytest.mark.parametrize("command", ["simulate", "verify"])
def test_dt_must_be_finite_and_in_range(files, out_dir, command, value):
    args = (["simulate", files / "G.nir", "--input", files / "good.npy", "--out", out_dir / "y.npz"]
            if command == "simulate" else ["verify", files / "G.nir", "--out", out_dir / "v"])
    result = invoke(args + ["--dt", value])
    assert_clean_failure(result, out_dir)
    assert result.exit_code == 2 and "--dt" in result.stderr


# (command, its other arguments, numeric option, values beyond NUMBERS that it refuses)
NUMERIC = [
    ("train", ["--out", "{out}/run"], "--lr", ["0", "-1"]),
    ("train", ["--out", "{out}/run"], "--batch-size", ["0", "-1", "1.5"]),
    ("train", ["--out", "{out}/run"], "--limit", ["0", "-3"]),
    ("train", ["--out", "{out}/run"], "--epochs", ["0"]),
    ("train", ["--out", "{out}/run"], "--timesteps", ["0"]),
    ("train", ["--out", "{out}/run"], "--dropout", ["1", "-0.1"]),
    ("train", ["--out", "{out}/run"], "--stdp-a-plus", []),
    ("evaluate", ["{out}/none.pt"], "--limit", ["0"]),
    ("evaluate", ["{out}/none.pt"], "--batch-size", ["0"]),
    ("export", ["{out}/none.pt", "--out", "{out}/m.nir"], "--timesteps", ["0", "-1"]),
    ("verify", ["{out}/none.pt"], "--samples", ["0"]),
    ("verify", ["{files}/G.nir"], "--rate", ["1.5", "-0.5"]),
    ("simulate", ["{files}/G.nir", "--input", "{files}/good.npy", "--out", "{out}/y.npz"], "--batch-size", ["0"]),
    ("report", ["{out}/none.pt"], "--samples", ["0"]),
]


@pytest.mark.parametrize("command,args,option,extra", NUMERIC, ids=[f"{c}{o}" for c, _, o, _ in NUMERIC])
def test_numeric_options_refuse_bad_values(files, out_dir, command, args, option, extra):
    for value in NUMBERS + extra:
        filled = [a.format(out=out_dir, files=files) for a in args]
        result = invoke([command, *filled, option, value])
        assert_clean_failure(result, out_dir)
        assert result.exit_code == 2 and option in result.stderr, (value, result.stderr)


@pytest.mark.parametrize("suffix", [".xyz", "", ".npy"])
def test_verify_plot_format_is_checked_before_verifying(files, out_dir, suffix):
    result = invoke(["verify", files / "G.nir", "--plot", out_dir / f"agreement{suffix}"])
    assert_clean_failure(result, out_dir)
    assert result.exit_code == 2 and "--plot" in result.stderr and ".png" in result.stderr
