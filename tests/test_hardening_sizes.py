"""Issue 27, sizes and ranges: seeds, step and sample counts within their
bounds, a memory estimate before anything is allocated, and verify in O(T)
memory. Every refusal is one ``Error:`` line, exit 1 (the estimate, a
file's number) or 2 (an option's range, checked while parsing), no
traceback, and nothing in the output folder (no ``tensorboard/``)."""
from __future__ import annotations

import json

import cv2
import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro import memory
from fer2neuro.cli import main
from fer2neuro.errors import ResourceError
from fer2neuro.lowering.onnx_graph import nir_to_onnx
from fer2neuro.memory import MAX_SAMPLES, MAX_SEED, MAX_TIMESTEPS
from fer2neuro.model.config import MAX_TIMESTEPS as MAX_MODEL_TIMESTEPS
from fer2neuro.verification.compare import DENSE_PAIRS_MAX_TIMESTEPS, CountPairs

from test_hardening_fuzz import small_graph  # the fuzz test's tiny graph, shared

BAD_SEEDS = ["-1", str(2**64), str(10**30), str(MAX_SEED + 1)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, code: int, *fragments) -> str:
    """Exit ``code``, exactly one ``Error:`` line holding ``fragments``, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    if code == 1:
        assert [line for line in result.output.splitlines() if line.strip()] == errors, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def empty(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("sizes") / "G.nir"
    nir.write(path, small_graph())
    return path


@pytest.fixture
def little_memory(monkeypatch):
    """The machine has 1 MiB available: every estimate above it is refused,
    whatever machine runs the test."""
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 2**20)


# -- seeds ----------------------------------------------------------------------------------------------

SEED_COMMANDS = {
    "train": lambda d, g, c, seed: ("train", "--out", d / "run", "--seed", seed),
    "finetune": lambda d, g, c, seed: ("finetune", c, "--out", d / "qat", "--seed", seed),
    "verify graph": lambda d, g, c, seed: ("verify", g, "--seed", seed, "--out", d / "v"),
    "verify --poisson-seed": lambda d, g, c, seed: ("verify", c, "--poisson-seed", seed, "--out", d / "v"),
    "predict": lambda d, g, c, seed: ("predict", d / "x.png", "--model", c, "--seed", seed, "--annotate", d / "a"),
    "evaluate": lambda d, g, c, seed: ("evaluate", c, "--seed", seed),
    "visualize": lambda d, g, c, seed: ("visualize", c, "--out", d / "figs", "--seed", seed),
    "interop": lambda d, g, c, seed: ("interop", g, "--seed", seed, "--out", d / "i"),
}


@pytest.mark.parametrize("seed", BAD_SEEDS)
@pytest.mark.parametrize("command", list(SEED_COMMANDS))
def test_a_seed_out_of_range_is_refused_while_parsing(tmp_path, graph, command, seed):
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*SEED_COMMANDS[command](out, graph, tmp_path / "missing.pt", seed))
    refused(result, 2, "--seed" if command != "verify --poisson-seed" else "--poisson-seed", "0<=x<=4294967295")
    assert empty(out)


def test_the_largest_seed_is_accepted_by_every_generator_it_reaches():
    """numpy (default_rng, the synthetic data, the validation split), torch
    (manual_seed plus the per-rank stride of distributed training)."""
    from fer2neuro.data.synthetic import load_synthetic
    from fer2neuro.model.encoding import poisson_generator
    from fer2neuro.training.run import RANK_SEED_STRIDE

    np.random.default_rng(MAX_SEED).random(2)
    np.random.seed(MAX_SEED)                       # the legacy seeding: 32 bits at most
    torch.manual_seed(MAX_SEED + RANK_SEED_STRIDE * 4096)
    poisson_generator(MAX_SEED)
    assert len(load_synthetic("PublicTest", limit=2, seed=MAX_SEED)) == 2
    with pytest.raises(ValueError):
        np.random.seed(MAX_SEED + 1)               # why the range ends where it does


def test_verify_runs_at_the_largest_seeds(graph, checkpoint):
    result = invoke("verify", graph, "--seed", MAX_SEED, "-n", 2, "--targets", "loihi", "--json")
    assert result.exit_code == 0, result.output
    result = invoke("verify", checkpoint, "--poisson-seed", MAX_SEED, "--seed", MAX_SEED, "--encoder", "poisson",
                    "-T", 2, "-n", 2, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["poisson_seed"] == MAX_SEED


# -- step and sample counts -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (("verify", "GRAPH", "-T", 1_000_000), "--timesteps"),
    (("verify", "GRAPH", "-T", MAX_TIMESTEPS + 1), "--timesteps"),
    (("verify", "GRAPH", "--samples", 10**9), "--samples"),
    (("verify", "GRAPH", "--samples", MAX_SAMPLES + 1), "--samples"),
    (("export", "CKPT", "--target", "onnx", "-T", 1_000_000, "--out", "OUT/m.onnx"), "--timesteps"),
    (("train", "--timesteps", 100_000, "--out", "OUT/run"), "--timesteps"),
    (("train", "--timesteps", MAX_MODEL_TIMESTEPS + 1, "--out", "OUT/run"), "--timesteps"),
    (("train", "--stdp-steps", 10**9, "--out", "OUT/run"), "--stdp-steps"),
    (("summary", "-T", 10**9), "--timesteps"),
    (("interop", "GRAPH", "-T", 10**9), "--timesteps"),
])
def test_step_and_sample_counts_beyond_their_bounds_are_refused_while_parsing(tmp_path, graph, args, option):
    out = tmp_path / "out"
    out.mkdir()
    names = {"GRAPH": graph, "CKPT": tmp_path / "missing.pt"}
    args = [names.get(a, str(a).replace("OUT", str(out))) for a in args]
    refused(invoke(*args), 2, option)
    assert empty(out)


def test_train_too_large_for_the_machine_is_refused_before_the_run_folder_exists(tmp_path, little_memory):
    out = tmp_path / "run"
    line = refused(invoke("train", "--epochs", 1, "--limit", 16, "-T", MAX_MODEL_TIMESTEPS, "--out", out), 1,
                   "training batches of 16 over T=10000", "-T or --batch-size", "1.0 MiB")
    assert "needs at least" in line
    assert not out.exists()            # no tensorboard/, nothing


def test_verify_of_more_than_any_machine_has_is_refused_before_allocating(graph, tmp_path):
    """Not patched: 10^6 samples x 10^5 steps of float64 inputs is terabytes."""
    out = tmp_path / "v"
    refused(invoke("verify", graph, "-n", MAX_SAMPLES, "-T", MAX_TIMESTEPS, "--out", out), 1,
            f"verifying {MAX_SAMPLES} samples over T={MAX_TIMESTEPS}", "TiB", "lower --samples, -T or --batch-size")
    assert empty(out)


def test_verify_of_a_checkpoint_beyond_the_networks_bound_names_t(checkpoint, tmp_path):
    out = tmp_path / "v"
    refused(invoke("verify", checkpoint, "-T", MAX_MODEL_TIMESTEPS + 1, "--out", out), 1,
            f"-T {MAX_MODEL_TIMESTEPS + 1}", f"1 to {MAX_MODEL_TIMESTEPS} steps")
    assert empty(out)


def test_a_graphs_timesteps_beyond_the_bound_is_one_line(tmp_path):
    g = small_graph()
    g.metadata = {**g.metadata, "timesteps": 10**9}
    path = tmp_path / "huge-T.nir"
    nir.write(path, g)
    out = tmp_path / "v"
    line = refused(invoke("verify", path, "-n", 1, "--out", out), 1, "timesteps")
    assert "1000000000" in line
    assert empty(out)


def test_the_estimate_guards_each_command(tmp_path, graph, checkpoint, little_memory):
    out = tmp_path / "out"
    out.mkdir()
    np.save(tmp_path / "x.npy", np.zeros((20_000, 4)))
    cv2.imwrite(str(tmp_path / "face.png"), np.full((48, 48), 128, np.uint8))
    cases = [
        (("verify", graph, "-n", 64, "-T", 1000, "--out", out / "v"), "verifying 64 samples over T=1000"),
        (("verify", checkpoint, "-n", 2, "--out", out / "v"), "verifying batches of 2 samples"),
        (("simulate", graph, "--input", tmp_path / "x.npy", "--out", out / "y.npz", "--membranes"),
         "recording 20000 sample steps"),
        (("export", checkpoint, "--target", "onnx", "-T", 5000, "--out", out / "m.onnx"),
         "unrolling the graph over T=5000 steps for ONNX"),
        (("predict", tmp_path / "face.png", "--model", checkpoint, "--no-detect", "--annotate", out / "a"),
         "classifying 1 faces"),
        (("finetune", checkpoint, "--out", out / "qat", "--limit", 8, "--eval-limit", 8),
         "fine-tuning batches of 32"),
    ]
    for args, words in cases:
        refused(invoke(*args), 1, words, "needs at least", "lower ")
        assert empty(out), (args, sorted(p.name for p in out.rglob("*")))


def test_a_memory_error_the_estimate_let_through_is_one_line(graph, tmp_path, monkeypatch):
    from fer2neuro.verification import graph as graph_verification

    def allocate(*args, **kwargs):
        return np.empty((2**50,), dtype=np.float64)        # 8 PiB: numpy's MemoryError, as a real shortfall gives
    monkeypatch.setattr(graph_verification, "check_memory", allocate)
    out = tmp_path / "v"
    refused(invoke("verify", graph, "-n", 1, "--out", out), 1, "out of memory", "lower -T, --samples or --batch-size")
    assert empty(out)


def test_torchs_out_of_memory_the_estimate_let_through_is_one_line(graph, tmp_path, monkeypatch):
    """torch's CPU allocator raises a RuntimeError, not a MemoryError."""
    import torch

    from fer2neuro.verification import graph as graph_verification

    def allocate(*args, **kwargs):
        return torch.empty(2**50, dtype=torch.float64)      # 8 PiB: "DefaultCPUAllocator: can't allocate memory"
    monkeypatch.setattr(graph_verification, "check_memory", allocate)
    out = tmp_path / "v"
    refused(invoke("verify", graph, "-n", 1, "--out", out), 1, "out of memory", "lower -T, --samples or --batch-size")
    assert empty(out)


def test_nir_to_onnx_refuses_before_tracing(little_memory):
    with pytest.raises(ResourceError, match="unrolling the graph over T=100000"):
        nir_to_onnx(small_graph(), timesteps=100_000, direct=False)


# -- the estimate itself --------------------------------------------------------------------------------

def test_available_memory_comes_from_meminfo_with_a_fallback(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048 kB\nMemFree:  100 kB\nMemAvailable:  1024 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    assert memory.available_bytes() == 1024 * 1024
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "missing"))
    fallback = memory.available_bytes()
    assert fallback is None or fallback > 0
    with pytest.raises(ResourceError, match="needs at least 2.0 GiB of memory, more than the 1.0 KiB"):
        monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1024)
        memory.check_fits(2**31, "this", "-T")


def test_a_cuda_run_is_checked_against_the_devices_free_memory(tmp_path, monkeypatch):
    """The CUDA branch, without a GPU: torch's free-memory query stands in
    (tests/test_cuda.py checks the real device where there is one)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:  104857600 kB\n")                  # the host has 100 GiB ...
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (2**30, 80 * 2**30))
    assert memory.available_bytes("cuda:1") == 2**30                     # ... the device 1 GiB free
    assert asked == [torch.device("cuda:1")]
    assert memory.available_bytes("cpu") == 100 * 2**30
    with pytest.raises(ResourceError, match=r"needs at least 2.0 GiB of memory, more than the 1.0 GiB cuda:1 has "
                                            r"available: lower --batch-size"):
        memory.check_fits(2**31, "this", "--batch-size", device="cuda:1")
    memory.check_fits(2**31, "this", "--batch-size", device="cpu")         # fits the host


def test_the_estimate_counts_steps_neurons_and_samples():
    assert memory.steps_bytes(timesteps=10, values=3, batch=4, itemsize=8, copies=2) == 10 * 3 * 4 * 8 * 2
    assert memory.graph_values(small_graph()) == 4 + 3 + 3 + 2 + 2 + 2     # every node's output
    with pytest.raises(Exception, match="timesteps 0"):
        memory.checked_timesteps(0, "x.nir's metadata")
    with pytest.raises(Exception, match="timesteps 2.5"):
        memory.checked_timesteps(2.5, "x.nir's metadata")
    assert memory.checked_timesteps(np.int64(MAX_TIMESTEPS), "here") == MAX_TIMESTEPS


# -- verify in O(T) memory ------------------------------------------------------------------------------

def old_matrix(ref, out, timesteps):
    """What verify allocated before: the (T+1) x (T+1) matrix."""
    m = np.zeros((timesteps + 1, timesteps + 1), dtype=np.int64)
    np.add.at(m, (np.minimum(ref, timesteps).ravel(), np.minimum(out, timesteps).ravel()), 1)
    return m


def test_count_pairs_hold_o_of_t_not_t_squared():
    T = 30_000
    pairs = CountPairs(T)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, T + 1, size=(16, 5))
    out = np.where(rng.random((16, 5)) < 0.5, ref, rng.integers(0, T + 1, size=(16, 5)))
    pairs.add(ref, out)
    arrays = [v for v in vars(pairs).values() if isinstance(v, np.ndarray)]
    assert sum(a.nbytes for a in arrays) == (T + 1) * 8            # the diagonal only: 240 KB, not 6.7 GiB
    assert len(pairs.off) == int((ref != out).sum())
    assert sum(n for *_, n in pairs.entries()) == ref.size
    layer = pairs.to_json()
    assert layer["count_pairs"] is None and sum(n for *_, n in layer["count_pairs_sparse"]) == ref.size


@pytest.mark.parametrize("T", [1, 4, 20, DENSE_PAIRS_MAX_TIMESTEPS])
def test_count_pairs_give_the_old_matrix_for_a_normal_t(T):
    rng = np.random.default_rng(T)
    batches = [(rng.integers(0, T + 1, size=(3, 7)), rng.integers(0, T + 1, size=(3, 7))) for _ in range(3)]
    batches.append((batches[0][0], batches[0][0]))                 # some diagonal
    whole, first, second = CountPairs(T), CountPairs(T), CountPairs(T)
    for k, (ref, out) in enumerate(batches):
        whole.add(ref, out)
        (first if k % 2 else second).add(ref, out)
    first.merge(second)                                             # two ranks' shards
    expected = sum(old_matrix(ref, out, T) for ref, out in batches)
    assert np.array_equal(whole.dense(), expected) and np.array_equal(first.dense(), expected)
    assert whole.to_json() == {"count_pairs": expected.tolist()}   # the JSON report as before


def test_count_pairs_bin_a_large_t_for_the_picture():
    T = 2000
    pairs = CountPairs(T)
    pairs.add(np.array([0, 1000, 2000, 7]), np.array([0, 1000, 1999, 1500]))
    binned = pairs.dense(bins=100)
    assert binned.shape == (100, 100) and binned.sum() == 4
    assert binned[0, 0] == 1 and binned[49, 49] == 1 and binned[99, 99] == 1 and binned[0, 74] == 1


def test_verify_above_the_dense_limit_writes_sparse_pairs_and_a_picture(graph, tmp_path):
    T = DENSE_PAIRS_MAX_TIMESTEPS + 44
    result = invoke("verify", graph, "-n", 2, "-T", T, "--targets", "loihi", "--report", tmp_path / "v.json",
                    "--plot", tmp_path / "v.png")
    assert result.exit_code == 0, result.output
    layer = json.loads((tmp_path / "v.json").read_text())["backends"]["loihi"]["layers"]["lif1"]
    assert layer["count_pairs"] is None
    assert sum(n for *_, n in layer["count_pairs_sparse"]) == 2 * 3           # samples x neurons
    assert all(0 <= r <= T and 0 <= b <= T for r, b, _ in layer["count_pairs_sparse"])
    assert (tmp_path / "v.png").stat().st_size > 0
