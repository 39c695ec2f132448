"""Issue 27, full disks and file-size limits: every writer reports ENOSPC,
EFBIG and EDQUOT as one ``Error: PATH: reason`` line naming the user's
path, exits 1, leaves no temporary file and keeps the previous file intact.

EFBIG runs everywhere: each command runs in a child process whose file-size
limit (RLIMIT_FSIZE, ``ulimit -f``) is below the size of what it writes
(CPython ignores SIGXFSZ, so the write fails with EFBIG). ENOSPC needs a
small tmpfs, which only root may mount: those tests skip elsewhere. A child
process is needed here: h5py used to crash the interpreter at exit
(a segmentation fault) after a failed write, which only the exit status of a
process shows.
"""
import errno
import os
import re
import resource
import shutil
import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.atomic import atomic_path
from fer2neuro.cli import main
from fer2neuro.cli.base import Fer2NeuroGroup
from fer2neuro.exporters.nir_export import export_checkpoint
from fer2neuro.model.architecture import two_conv_template
from fer2neuro.model.checkpoint import save_checkpoint
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.network import build_model

LIMIT = 512                 # bytes: below every output here; the previous files are written without a limit
PREVIOUS = b"the previous output, which must survive\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
T = 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny checkpoint, its NIR graph and an input for ``simulate``."""
    d = tmp_path_factory.mktemp("disk-inputs")
    torch.manual_seed(0)
    cfg = ModelConfig(preset="test", blocks=two_conv_template(4, (16, 8)), class_names=CLASSES, timesteps=T)
    save_checkpoint(d / "m.pt", build_model(cfg), cfg)
    export_checkpoint(d / "m.pt", d / "m.nir")
    np.save(d / "x.npy", (np.random.default_rng(0).random((T, 1, 48, 48)) < 0.3).astype(np.float64))
    return d


def _verify(flag, name):
    return lambda i, o: ["verify", i / "m.pt", "-n", "1", "--backends", "nir", flag, o / name]


# case -> (arguments for inputs i and output folder o, the path the error must name, the previous output there)
CASES = {
    "export-nir": (lambda i, o: ["export", i / "m.pt", "--target", "nir", "--out", o / "m.nir"], "m.nir", "m.nir"),
    "export-onnx": (lambda i, o: ["export", i / "m.pt", "--target", "onnx", "--out", o / "m.onnx"], "m.onnx",
                    "m.onnx"),
    "export-lava": (lambda i, o: ["export", i / "m.pt", "--target", "lava", "--out", o / "lava"], "lava", "lava"),
    "simulate": (lambda i, o: ["simulate", i / "m.nir", "--input", i / "x.npy", "--record", "all",
                               "--out", o / "s.npz"], "s.npz", "s.npz"),
    "verify-report": (_verify("--report", "r.json"), "r.json", "r.json"),   # --markdown: the same write_text
    "verify-plot": (_verify("--plot", "p.png"), "p.png", "p.png"),
    # the first file a training run writes is best.pt, the largest: a run folder that holds one keeps it
    "train": (lambda i, o: ["train", "--data", "synthetic", "--preset", "small", "--epochs", "1", "--limit", "16",
                            "--val-limit", "8", "--batch-size", "16", "--timesteps", "2", "--init", "he",
                            "--no-progress", "--out", o / "run"], "run/best.pt", "run/best.pt"),
}
# On a full disk: the cases of the issue (h5py's segmentation fault, the tracebacks).
FULL_DISK_CASES = ("export-nir", "export-lava", "export-onnx", "train")


def run(args, limit=None):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "fer2neuro", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, preexec_fn=set_limit if limit else None)


def snapshot(path):
    """The bytes of a file, or of every file in a folder."""
    if path.is_dir():
        return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


def make_previous(inputs, out, case, previous):
    """The previous output at ``out/previous``: for a Lava folder a real
    export (the one a re-export replaces), else a file of known bytes."""
    path = out / previous
    if case == "export-lava":
        result = CliRunner().invoke(main, ["export", str(inputs / "m.pt"), "--target", "lava", "--out", str(path)])
        assert result.exit_code == 0, result.output
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PREVIOUS)
    return snapshot(path)


def assert_disk_error(result, named, code):
    """Exit 1 with one line, ``Error: NAMED: <the system's text for code>``
    (NAMED may come with its option: ``--out NAMED``), as the last line of
    stderr (progress bars and log lines may come first), and no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.fullmatch(f"Error: (--out )?{re.escape(str(named))}: {re.escape(os.strerror(code))}", errors[0]), \
        errors[0]
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]


def temporaries(folder):
    return sorted(str(p) for p in folder.rglob(".*.tmp"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_file_size_limit_is_one_line_naming_the_output(case, inputs, tmp_path):
    args, named, previous = CASES[case]
    before = make_previous(inputs, tmp_path, case, previous)
    result = run(args(inputs, tmp_path), limit=LIMIT)
    assert_disk_error(result, tmp_path / named, errno.EFBIG)
    assert snapshot(tmp_path / previous) == before
    assert temporaries(tmp_path) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root only), which ``fill`` fills but a little:
    writes beyond that fail with ENOSPC."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             text=True) if os.geteuid() == 0 and shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and CAP_SYS_ADMIN")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk, leave=16384):
    """Take all but ``leave`` bytes of the free space of ``disk`` (room for
    the small files a command writes before its output: a run's lock, the
    first TensorBoard event)."""
    info = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(info.f_bavail * info.f_frsize - leave, 0))


@pytest.mark.parametrize("case", FULL_DISK_CASES)
def test_full_disk_is_one_line_naming_the_output(case, inputs, full_disk):
    args, named, previous = CASES[case]
    before = make_previous(inputs, full_disk, case, previous)
    fill(full_disk)
    result = run(args(inputs, full_disk))
    assert_disk_error(result, full_disk / named, errno.ENOSPC)
    assert snapshot(full_disk / previous) == before
    assert temporaries(full_disk) == []


@pytest.mark.parametrize("limit", [1, LIMIT])      # the first event fails / a later one
def test_tensorboard_disk_error_names_its_folder_without_a_thread_traceback(tmp_path, limit):
    """tensorboard writes its event file from a thread: the error must come
    back once, naming the folder, with no traceback from that thread."""
    code = (
        "import sys\n"
        "from torch.utils.tensorboard import SummaryWriter\n"
        "from fer2neuro.training.tensorboard import ScalarLog\n"
        "try:\n"
        "    log = ScalarLog(sys.argv[1], SummaryWriter)\n"
        "    for step in range(200):\n"
        "        log.add_scalar('train/loss', 0.5, step)\n"
        "        log.flush()\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.filename, exc.strerror, sep='|')\n")

    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    folder = tmp_path / "tensorboard"
    result = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=ENV,
                            timeout=120, preexec_fn=set_limit)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{errno.EFBIG}|{folder}|{os.strerror(errno.EFBIG)}"
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr, result.stderr


def test_quota_error_in_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path):
    """EDQUOT cannot be provoked without a quota: a writer that raises it
    (bare, as open().write does) goes through the same path as the others."""
    path = tmp_path / "out.json"
    path.write_bytes(PREVIOUS)
    with pytest.raises(OSError) as raised:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert (raised.value.errno, raised.value.filename) == (errno.EDQUOT, str(path))
    assert raised.value.strerror == os.strerror(errno.EDQUOT)
    assert path.read_bytes() == PREVIOUS
    assert temporaries(tmp_path) == []


@click.group(cls=Fer2NeuroGroup)
def group():
    pass


@group.command()
def wrapped():
    """A library that wraps the OSError of a full disk (torch.save's
    RuntimeError does) outside any atomic writer."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@group.command()
def long_reason():
    """h5py's OSError: the errno, a page of HDF5 text, a file name."""
    raise OSError(errno.ENOSPC, "Can't close file (file write failed: time = ...\n, filename = 'x', errno = 28)",
                  "out.nir")


@group.command()
def other_runtime_error():
    raise RuntimeError("a bug")


def test_cli_makes_any_disk_error_one_line():
    runner = CliRunner()
    result = runner.invoke(group, ["wrapped"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: No space left on device (while writing the results)"
    result = runner.invoke(group, ["long-reason"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: out.nir: No space left on device"
    result = runner.invoke(group, ["other-runtime-error"])   # not a disk error: still a bug, with its traceback
    assert isinstance(result.exception, RuntimeError)
