"""Data-parallel training and evaluation on torch.distributed: real runs of
2 processes (gloo, CPU) started by torch's own launcher, compared with one
process on the same global batch."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from fer2neuro.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

TINY = ["--data", "synthetic", "--preset", "small", "--epochs", "1", "--limit", "16", "--val-limit", "8",
        "--select-on", "test", "--dropout", "0", "--no-progress"]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def fer2neuro(*args, nproc=1, check=True, **kwargs):
    """The CLI as a user runs it: one process, or torchrun's launcher."""
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    result = subprocess.run([sys.executable, *launcher, "-m", "fer2neuro", *map(str, args)], env=env(),
                            capture_output=True, text=True, timeout=300, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def state(path):
    return load_checkpoint(path).state_dict


def max_difference(a, b):
    assert sorted(a) == sorted(b)
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    fer2neuro("train", *TINY, "--batch-size", "16", "--out", out)
    return out


def test_two_processes_with_sync_bn_take_the_one_process_step(one_process, tmp_path):
    """One optimizer step on the same global batch of 16 (2 ranks x 8,
    SyncBatchNorm) gives the parameters of one process with batch 16, to
    1e-5; without SyncBatchNorm each rank normalises its own 8 and they differ.
    The default recipe's feature initialisation runs on every rank: were the
    ranks' starts not identical, they would differ by far more."""
    out = tmp_path / "two"
    result = fer2neuro("train", *TINY, "--batch-size", "8", "--nproc", "2", "--sync-bn", "--out", out)
    assert "2 ranks x 8 = batch 16 (SyncBatchNorm)" in result.stderr
    before = state(one_process / "last.pt")
    assert max_difference(state(out / "last.pt"), before) < 1e-5        # 4.4e-6 at lr 5e-3 (6.9e-7 at 1e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parallel"] == {"ranks": 2, "batch_per_rank": 8, "effective_batch": 16, "backend": "gloo",
                                   "sync_bn": True}
    assert metrics["epochs"][0]["train_samples"] == 16
    ckpt = load_checkpoint(out / "last.pt")                               # loads in one process, no DDP in it
    assert ckpt.epoch == 1 and not any(k.startswith("module.") for k in ckpt.state_dict)
    assert load_checkpoint(out / "best.pt").epoch in (0, 1)                # epoch 0: the initialised network
    # only rank 0 writes: the same files as one process, one TensorBoard log
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one_process.iterdir())
    assert len(list((out / "tensorboard").iterdir())) == 1
    unsynced = tmp_path / "unsynced"
    fer2neuro("train", *TINY, "--batch-size", "8", "--nproc", "2", "--out", unsynced)
    assert max_difference(state(unsynced / "last.pt"), before) > 1e-4     # measured 1.4e-2


def _stdp_head(group, batch_size):
    """An STDP phase on a model whose head fires (fc weights x 30), one
    batch of 16 synthetic faces in all; the head's weights after it."""
    from fer2neuro.data import load_split
    from fer2neuro.model.config import preset_config
    from fer2neuro.model.network import build_model
    from fer2neuro.training.loop import Batches
    from fer2neuro.training.stdp import STDPOptions, head, stdp_phase

    data = load_split("synthetic", "Training", limit=16)
    torch.manual_seed(0)
    model = build_model(preset_config("small", class_names=data.class_names, dropout=0.0))
    with torch.no_grad():
        for fc in head(model):
            getattr(model, fc).weight.mul_(30)
    batches = Batches(data, batch_size, torch.device("cpu"), group=group)
    stats = stdp_phase(model, batches, STDPOptions(batches=1, a_plus=0.01, a_minus=0.0105), group=group)
    return {fc: getattr(model, fc).weight.detach().clone() for fc in head(model)}, stats


def _stdp_rank(rank, world, init_file, out_file):
    from fer2neuro.training.distributed import Group

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        head, _ = _stdp_head(Group(rank=rank, world=world, local_rank=rank), 8)
        torch.save(head, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_stdp_under_two_processes_applies_the_all_reduced_update(tmp_path):
    """Each rank computes STDP's weight change on its 8 faces; the changes
    are averaged over the ranks before they are applied, so both ranks hold
    the head one process computes on all 16."""
    import torch.multiprocessing as mp

    from fer2neuro.training.distributed import SINGLE

    mp.start_processes(_stdp_rank, args=(2, tmp_path / "init", tmp_path / "head"), nprocs=2, start_method="fork")
    one, stats = _stdp_head(SINGLE, 16)
    assert all(stats[fc]["mean_abs_dw"] > 0 for fc in one)             # the phase changes the head
    ranks = [torch.load(tmp_path / f"head.{r}") for r in range(2)]
    for fc in one:
        assert torch.equal(ranks[0][fc], ranks[1][fc]), fc              # identical on every rank
        assert (ranks[0][fc] - one[fc]).abs().max().item() < 1e-6, fc
    # a phase that did not average (each rank its own 8 faces) would differ
    local, _ = _stdp_head(SINGLE, 8)
    assert max((local[fc] - one[fc]).abs().max().item() for fc in one) > 1e-4


def test_qat_after_a_two_process_run_is_rank_0s_one_process_fine_tuning(tmp_path):
    """train --qat under 2 ranks: rank 0 fine-tunes best.pt (numpy integer
    simulation, not data-parallel) once; it equals 'finetune' in one process."""
    out = tmp_path / "run"
    result = fer2neuro("train", *TINY, "--batch-size", "8", "--nproc", "2", "--qat", "loihi", "--qat-epochs", "1",
                       "--out", out)
    assert result.stdout.count(f"wrote {out}/qat/best.pt") == 1
    fer2neuro("finetune", out / "best.pt", "--qat", "loihi", "--data", "synthetic", "--epochs", "1", "--limit", "16",
              "--seed", "0", "--out", tmp_path / "alone")
    assert max_difference(state(out / "qat" / "best.pt"), state(tmp_path / "alone" / "best.pt")) == 0.0


def test_sharded_evaluate_reports_what_one_process_reports(one_process):
    args = ["evaluate", one_process / "best.pt", "--data", "synthetic", "--limit", "150", "--batch-size", "32",
            "--json"]
    single = fer2neuro(*args).stdout
    sharded = fer2neuro(*args, nproc=2).stdout
    assert json.loads(sharded) == json.loads(single)        # one JSON document: rank 0's
    assert json.loads(single)["n"] == 150


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks to kill through /proc")
def test_a_killed_two_process_run_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--preset", "small", "--epochs", "3", "--limit", "96", "--val-limit",
            "16", "--batch-size", "8", "--no-progress", "--out", out]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "fer2neuro", *map(str, args)]
    process = subprocess.Popen(launcher, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            if (out / "last.pt").is_file() and load_checkpoint(out / "last.pt").epoch >= 1:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        for pid in [*descendants(process.pid), process.pid]:   # both ranks (torch's launcher starts each in
            try:                                                # a session of its own), then the launcher
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
    killed_at = load_checkpoint(out / "last.pt").epoch
    assert 1 <= killed_at < 3
    result = fer2neuro(*args, "--resume", nproc=2)
    assert f"resuming {out} after epoch {killed_at}" in result.stderr
    assert load_checkpoint(out / "last.pt").epoch == 3
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    # and it is the run an uninterrupted one is: the same parameters
    straight = tmp_path / "straight"
    fer2neuro(*args[:-1], straight, nproc=2)
    assert max_difference(state(out / "last.pt"), state(straight / "last.pt")) == 0.0


def test_nproc_outside_train_and_bad_use_are_clear_errors(tmp_path):
    result = fer2neuro("train", *TINY, "--nproc", "0", "--out", tmp_path / "x", check=False)
    assert result.returncode != 0 and "--nproc" in result.stderr and "Traceback" not in result.stderr


def test_the_group_helpers_on_one_process():
    from fer2neuro.training.distributed import SINGLE

    assert not SINGLE.active and SINGLE.main and SINGLE.sum(2, 3) == [2.0, 3.0]
    assert SINGLE.shard(7) == slice(0, 7) and SINGLE.gather("x") == ["x"]
    t = torch.ones(3)
    assert SINGLE.mean_(t) is t and t.tolist() == [1.0, 1.0, 1.0]
