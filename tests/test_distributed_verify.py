"""``fer2neuro verify`` sharded over torchrun ranks (CPU, gloo, 2 processes)
reports exactly what one process reports: the same spike counts, accuracy,
first divergences and exit status; only the seconds differ. And the merge
underneath: comparisons folded over shards equal one comparison of all."""
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch.distributed as dist

from fer2neuro.targets.base import Arithmetic
from fer2neuro.verification.compare import BackendComparison
from fer2neuro.verification.report import Report, shard_batches

distributed = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="torch.distributed with gloo is not available")


def run(cwd, *args, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run([*launcher, "-m", "fer2neuro", "verify", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def without_seconds(obj):
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def one_json(result) -> dict:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout          # rank 0 only
    return json.loads(lines[0])


def same_as_one_process(tmp_path, *args, exit_code=0):
    single, sharded = run(tmp_path, *args), run(tmp_path, *args, nproc=2)
    assert single.returncode == exit_code, single.stderr
    assert (sharded.returncode == 0) == (exit_code == 0), sharded.stderr
    one, two = one_json(single), one_json(sharded)
    assert without_seconds(two) == without_seconds(one)
    return one, sharded


@distributed
@pytest.mark.parametrize("extra", [[], ["--encoder", "poisson", "-T", "6", "--batch-size", "4"]],
                         ids=["checkpoint-encoder", "poisson-batches-across-shards"])
def test_sharded_checkpoint_verification_equals_one_process(checkpoint, tmp_path, extra):
    report, _ = same_as_one_process(tmp_path, checkpoint, "--backends", "nir,loihi", "--samples", 6,
                                    "--data", "synthetic", "--json", *extra)
    assert report["samples"] == 6 and report["equivalent"] is True
    loihi = report["backends"]["loihi"]
    assert loihi["layers"]["if1"]["reference_spikes"] > 0
    assert loihi["first_divergence"] is not None      # a divergence to place: the loihi run is fixed point


@distributed
def test_sharded_graph_verification_finds_a_divergence_on_the_second_rank(checkpoint, tmp_path):
    """A NIR graph on given inputs whose first four are silent: the first
    divergence lies in rank 1's shard, and a tampered graph fails the run on
    every rank, rank 0 alone saying why."""
    from fer2neuro.nirgraph.file import read_graph, write_graph

    assert subprocess.run([sys.executable, "-m", "fer2neuro", "export", str(checkpoint), "--target", "nir",
                           "--out", str(tmp_path / "m.nir")], capture_output=True).returncode == 0
    graph = read_graph(tmp_path / "m.nir")
    graph.nodes["conv2"].bias[3] += 0.4
    write_graph(graph, tmp_path / "bad.nir")
    x = (np.random.default_rng(0).uniform(0, 1, size=(7, 4, 1, 48, 48)) > 0.7).astype(np.float64)
    x[:4] = 0
    np.save(tmp_path / "x.npy", x)
    report, _ = same_as_one_process(tmp_path, "m.nir", "--targets", "loihi,onnx", "--input", "x.npy",
                                    "--batch-size", 3, "--json")
    assert report["backends"]["loihi"]["first_divergence"]["sample"] >= 4

    report, sharded = same_as_one_process(tmp_path, checkpoint, "--nir", "bad.nir", "--samples", 5, "--json",
                                          exit_code=1)
    assert report["equivalent"] is False
    errors = [line for line in sharded.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "nir differs from snntorch" in errors[0], sharded.stderr


def test_shard_batches_cover_every_sample_once_within_one_process_batches():
    for samples, batch, world in [(6, 16, 2), (6, 4, 2), (10, 3, 4), (2, 1, 3)]:
        seen = []
        for rank in range(world):
            for whole, mine in shard_batches(samples, batch, Group(rank=rank, world=world)):
                assert whole.stop - whole.start <= batch and whole.start % batch == 0
                if mine is not None:
                    assert whole.start <= mine.start < mine.stop <= whole.stop
                    seen += range(mine.start, mine.stop)
        assert seen == list(range(samples))


def test_comparisons_merged_over_shards_equal_one_comparison():
    rng = np.random.default_rng(0)
    shapes = {"a": (3, 4), "b": (5,)}
    reference = {n: (rng.random((9, 6, *s)) < 0.3).astype(np.uint8) for n, s in shapes.items()}
    backend = {n: v.copy() for n, v in reference.items()}
    backend["b"][7, 2, 1] ^= 1                       # an earlier step, but in a later layer
    backend["a"][5, 4, 0, 0] ^= 1                    # the first divergence (layer a comes first)
    backend["a"][6, 4, 0, 0] ^= 1                    # the same step, a later sample
    labels = rng.integers(0, 5, 9)
    pred = lambda s: s["b"].sum(1).argmax(-1)        # noqa: E731

    def compare(parts):
        out = None
        for lo, hi in parts:
            c = BackendComparison.start("x", Arithmetic.FLOAT64, shapes, 6)
            ref, back = ({n: v[lo:hi] for n, v in d.items()} for d in (reference, backend))
            c.add(ref, back, labels[lo:hi], pred(ref), pred(back), lo)
            if out is None:
                out = c
            else:
                out.merge(c)
        return out

    whole = compare([(0, 9)])
    for split in ([(0, 5), (5, 9)], [(0, 2), (2, 3), (3, 9)], [(0, 8), (8, 9)]):
        merged = compare(split)
        assert merged.to_dict() == whole.to_dict()
        assert (merged.correct, merged.labelled) == (whole.correct, whole.labelled)
        assert merged.first_divergence == whole.first_divergence
        assert merged.first_divergence.layer == "a" and merged.first_divergence.sample == 5
        for ours, theirs in zip(merged.divergence_trains, whole.divergence_trains):
            np.testing.assert_array_equal(ours, theirs)


@dataclass(frozen=True)
class Group:
    """distributed.Group's shard, with a gather that hands back given parts."""
    rank: int = 0
    world: int = 1
    parts: tuple = ()

    active = property(lambda self: self.world > 1)

    def shard(self, n):
        from fer2neuro.training.distributed import Group as Real
        return Real(rank=self.rank, world=self.world).shard(n)

    def gather(self, obj):
        return [obj, *self.parts]


def test_a_backend_that_fails_on_one_shard_cannot_run_at_all():
    def comparison(spikes):
        c = BackendComparison.start("x", Arithmetic.FLOAT64, {"a": (2,)}, 3)
        c.add({"a": np.zeros((1, 3, 2), np.uint8)}, {"a": np.full((1, 3, 2), spikes, np.uint8)}, None, None,
              None, 0)
        return c

    other = {"comparisons": {"nir": comparison(0)}, "fixed_agreement": {}, "quantised": {},
             "unavailable": {"onnx": "broke on sample 5"}, "divergence_inputs": {}, "reference_seconds": 1.0}
    report = Report(reference="nir", encoder="poisson", timesteps=3, samples=2, reference_seconds=0.5,
                    comparisons={"nir": comparison(0), "onnx": comparison(1)}, unavailable={"lava": "no lava"})
    report.merge_shards(Group(rank=0, world=2, parts=(other,)))
    assert list(report.comparisons) == ["nir"] and report.comparisons["nir"].samples == 2
    assert report.unavailable == {"lava": "no lava", "onnx": "broke on sample 5"}
    assert report.reference_seconds == 1.5 and report.equivalent


def test_an_error_on_one_rank_is_raised_on_every_rank():
    from fer2neuro.errors import ConfigError
    from fer2neuro.verification.report import failing_together

    with pytest.raises(ConfigError, match="rank 1 broke"):
        with failing_together(Group(rank=0, world=2, parts=((ConfigError, "rank 1 broke"),))):
            pass
    with failing_together(Group(rank=0, world=2, parts=(None,))):
        pass
