"""Every process fer2neuro starts dies with it and leaves nothing behind
(fer2neuro/children.py; docs/reliability.md, "Child processes").

A ``simulate --target lava-fixed`` runs in a subprocess with a private
TMPDIR and a marker in its environment. Once Lava's workers run, the parent
alone gets SIGTERM, SIGKILL or SIGINT. Then no process carrying the marker
survives (the workers, multiprocessing's resource tracker, the watcher), the
TMPDIR is empty, and no shared memory segment the run had mapped is left.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nir
import numpy as np
import pytest

from fer2neuro import children

from test_hardening_fuzz import N_IN, T, small_graph  # the fuzz test's tiny graph

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG, /proc and /dev/shm are Linux's")

MARK = "FER2NEURO_TEST_CHILDREN"


def marked(mark: str) -> list[int]:
    """The live (not zombie) processes whose environment carries ``mark``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if f"{MARK}={mark}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(name))
    return found


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return None


def cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def mapped_shared_memory(pids) -> set[str]:
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                paths = (line.split(maxsplit=5)[5].strip() for line in f if " /dev/shm/" in line)
                names |= {p for p in paths if not p.endswith(" (deleted)")}   # unlinked already: not left
        except OSError:
            continue
    return names


def kill_all(mark: str) -> None:
    for pid in marked(mark):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_until(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


@pytest.fixture
def short_tmp():
    """A TMPDIR with a short path: Lava's manager listens on a Unix socket
    in it (at most 107 bytes), which pytest's tmp_path is too long for."""
    folder = tempfile.mkdtemp(prefix="f2n-test-", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("children")
    nir.write(d / "G.nir", small_graph())
    # enough samples that the run is still going when the signal comes (one Lava run per sample)
    np.save(d / "x.npy", (np.random.default_rng(0).random((400, T, N_IN)) < 0.5).astype(np.float64))
    return d


def sigint_as_a_terminal_sends_it():
    """A shell starts background jobs with SIGINT ignored, and Python keeps
    an ignored SIGINT ignored: under `pytest &` the run would never see its
    Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_during_lava_run(run_files, tmpdir, out, signum):
    """Start the run, signal the parent once Lava's workers run; return
    (the parent's return code, stderr, the private TMPDIR, the segments the
    run had mapped, what survives)."""
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fer2neuro", "simulate", str(run_files / "G.nir"),
                             "--target", "lava-fixed", "--input", str(run_files / "x.npy"),
                             "--out", str(out / "y.npz")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_as_a_terminal_sends_it)
    try:
        def workers():                             # Lava's: forks of the parent, running its command line
            return [p for p in marked(mark) if parent_of(p) == proc.pid and cmdline(p) == cmdline(proc.pid)]

        seen = {}

        def running():
            if proc.poll() is not None:
                return True
            forks, segments = workers(), mapped_shared_memory(marked(mark))
            if len(forks) >= 3 and segments:
                seen.update(forks=forks, segments=segments)
            return bool(seen)

        wait_until(running, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]
        os.kill(proc.pid, signum)                  # at once: a sample's workers live for a fraction of a second
        assert seen, "Lava's workers never started"
        segments = seen["segments"]
        # Every segment is named after the run. A semaphore is not a segment: glibc's sem_open maps a
        # temporary /dev/shm/sem.XXXXXX and unlinks it a moment later, so a poll can catch that name.
        strangers = [s for s in segments if not s.startswith((f"/dev/shm/fer2neuro-{proc.pid}-", "/dev/shm/sem."))]
        assert strangers == [], strangers
        _, err = proc.communicate(timeout=60)
        wait_until(lambda: not marked(mark), timeout=20)
        segments |= {f"/dev/shm/{n}" for n in os.listdir("/dev/shm") if n.startswith(f"fer2neuro-{proc.pid}-")}
        return proc.returncode, err, tmpdir, segments, marked(mark)
    finally:
        kill_all(mark)                             # a failed test must not leave them either
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_nothing_left(err, tmpdir, segments, survivors):
    assert survivors == [], f"processes left: {survivors}"
    assert sorted(os.listdir(tmpdir)) == [], "TMPDIR leftovers"
    assert [s for s in segments if os.path.exists(s)] == [], "shared memory left"
    assert "leaked" not in err and "Traceback" not in err, err


@pytest.mark.lava
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)],
                         ids=["SIGTERM", "SIGKILL"])
def test_a_killed_lava_run_leaves_no_process_folder_or_shared_memory(run_files, short_tmp, tmp_path, signum,
                                                                      status):
    code, err, tmpdir, segments, survivors = signal_during_lava_run(run_files, short_tmp, tmp_path, signum)
    assert code == status, err
    assert_nothing_left(err, tmpdir, segments, survivors)


@pytest.mark.lava
def test_ctrl_c_during_a_lava_run_exits_130_in_one_line_and_leaves_nothing(run_files, short_tmp, tmp_path):
    code, err, tmpdir, segments, survivors = signal_during_lava_run(run_files, short_tmp, tmp_path, signal.SIGINT)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "Error: interrupted", err
    assert_nothing_left(err, tmpdir, segments, survivors)


def test_a_child_forked_from_the_main_thread_dies_with_its_parent(short_tmp):
    """PR_SET_PDEATHSIG: the kernel SIGKILLs the child when the parent dies."""
    code = ("import ctypes, os, signal\n"
            "from fer2neuro import children\n"
            "children.guard()\n"
            "r, w = os.pipe()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    sig = ctypes.c_int()\n"
            "    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)   # PR_GET_PDEATHSIG\n"
            "    os.write(w, str(sig.value).encode())\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "print(os.read(r, 8).decode())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(short_tmp)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(int(signal.SIGKILL))


def test_the_watcher_kills_a_child_forked_from_another_thread(short_tmp):
    """PR_SET_PDEATHSIG fires when the forking *thread* ends, so a fork from
    another thread is not armed: the watcher, to which every fork reports,
    kills it when the parent is SIGKILLed. The private TMPDIR goes too."""
    mark = uuid.uuid4().hex
    code = ("import os, sys, threading, time\n"
            "from fer2neuro import children\n"
            "children.guard()\n"
            "def fork():\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(120)\n"
            "        os._exit(0)\n"
            "t = threading.Thread(target=fork)\n"
            "t.start(); t.join()\n"
            "print(children.private_folder(), flush=True)\n"
            "time.sleep(120)\n")
    env = {**os.environ, MARK: mark, "TMPDIR": str(short_tmp)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        folder = proc.stdout.readline().strip()
        assert folder.startswith(str(short_tmp / children.FOLDER_PREFIX)) and os.path.isdir(folder)
        fork = wait_until(lambda: [p for p in marked(mark) if parent_of(p) == proc.pid
                                   and cmdline(p) == cmdline(proc.pid)], 30)
        assert len(fork) == 1
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not marked(mark), timeout=20), marked(mark)
        assert not os.path.exists(folder)
    finally:
        kill_all(mark)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_next_run_removes_what_a_run_and_its_watcher_killed_together_left(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    gone = tmp_path / f"{children.FOLDER_PREFIX}{dead}.abcd1234"
    alive = tmp_path / f"{children.FOLDER_PREFIX}{os.getpid()}.abcd1234"
    other_host = tmp_path / f"{children.FOLDER_PREFIX}{dead}.efgh5678"
    for folder, host in ((gone, children._HOST), (alive, children._HOST), (other_host, "elsewhere")):
        (folder / "pymp-x").mkdir(parents=True)
        (folder / children.HOST_FILE).write_text(host)
    segment = f"/dev/shm/{children.shm_prefix(dead)}00ff00ff"
    open(segment, "wb").close()
    try:
        removed = children.remove_stale(str(tmp_path))
        assert sorted(removed) == sorted([str(gone), segment])
        assert not gone.exists() and alive.exists() and other_host.exists() and not os.path.exists(segment)
    finally:
        if os.path.exists(segment):
            os.unlink(segment)
