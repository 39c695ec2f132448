"""Every process fer2neuro starts dies with it and leaves nothing behind.

Lava runs each process model, its runtime service and a shared memory
manager in processes forked from ours (multiprocessing, start method
'fork'), and multiprocessing starts its resource tracker (a fresh
interpreter). Left alone they outlived a ``simulate`` killed by SIGTERM or
SIGKILL (16 to 22 processes of ~285 MB each, re-parented to PID 1), with
their ``pymp-*`` and ``fer2neuro-lava-spikes-*`` folders and 61 shared memory
segments. :func:`guard`, called before fer2neuro first runs Lava in a
process, arranges three things:

* Every process forked from here asks the kernel for SIGKILL when its parent
  dies (``PR_SET_PDEATHSIG``, Linux). The kernel sends it when the *thread*
  that forked exits, not the process, so only forks made from the main
  thread (whose end is the process's end) are armed; Lava forks from the
  thread that calls ``run``. SIGKILL, because a worker blocked in C would
  not run a Python handler.
* A private temporary folder, ``$TMPDIR/fer2neuro-<pid>.<random>``,
  becomes TMPDIR for this process and its children: every temporary file
  they make (multiprocessing's ``pymp-*``, the recorders'
  ``fer2neuro-lava-spikes-*``) is in it, so one removal cleans all. Its
  name is short because Lava's shared memory manager listens on a Unix
  socket in it (``pymp-*/listener-*``), and such a path has at most 107
  bytes; where TMPDIR is too long for that, there is no private folder.
  Shared memory segments are named ``/dev/shm/fer2neuro-<pid>-*`` for the
  same reason (multiprocessing's ``psm_*`` names say nothing of their
  owner).
* A watcher (``child_watcher.py``): a small interpreter in a session of its
  own that waits on a pipe only this process holds. When this process ends,
  however it ends, the watcher kills the children still alive (every forked
  child reports its PID to it, so forks from other threads are covered
  too), removes the segments and the private folder, and exits.

An interrupted run (Ctrl-C) cannot use Lava's own stop: it waits for
workers stopped mid-step, for ever. :func:`interrupt_kills_children` kills
them as the SIGINT comes, and makes sure the KeyboardInterrupt gets out
(targets/lava/processes.py ``stopping``). SIGTERM needs nothing: the
process dies (atomic.py's handlers chain to the default), the kernel kills
the workers and the watcher cleans up. If the watcher is killed too, the
next :func:`guard` removes what runs that are gone left on this host.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fer2neuro.atomic import _HOST
from fer2neuro.child_watcher import SHM_DIR, start_time, unlink_segments

__all__ = ["guard", "interrupt_kills_children", "kill_children", "remove_stale", "private_folder", "shm_prefix"]

FOLDER_PREFIX = "fer2neuro-"
HOST_FILE = ".host"        # in the private folder: the host of its process (a TMPDIR may be shared)
WATCHER = Path(__file__).with_name("child_watcher.py")
_PR_SET_PDEATHSIG = 1                                  # <linux/prctl.h>
_FOLDER = re.compile(rf"^{FOLDER_PREFIX}(?P<pid>\d+)\.[A-Za-z0-9_]{{8}}$")
# A Unix socket's path has at most 107 bytes; Lava's manager listens on
# TMPDIR/<private folder>/pymp-XXXXXXXX/listener-XXXXXXXX.
_UNIX_PATH_MAX = 107
_SOCKET_TAIL = len("/fer2neuro-4194304.XXXXXXXX/pymp-XXXXXXXX/listener-XXXXXXXX")
_SHM = re.compile(r"^fer2neuro-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class _Guard:
    pid: int                 # the guarded process
    folder: str | None       # its private TMPDIR (None: TMPDIR too long for one)
    life_w: int | None       # the watcher's stdin; only the guarded process holds it
    report_w: int            # where forked children report "PID START_TIME"
    prctl: object            # libc's prctl, looked up before any fork
    watcher: object = None   # its Popen (kept: a dropped one warns that it still runs)


_guard: _Guard | None = None
_hooks_registered = False
_fork_from_main_thread = True
_forking_pid = 0


def shm_prefix(pid: int) -> str:
    """The name (in /dev/shm) of every shared memory segment a guarded process and its children create."""
    return f"fer2neuro-{pid}-"


def private_folder() -> str | None:
    """This process's private TMPDIR, if it is guarded and has one."""
    return _guard.folder if _is_guarded() else None


def _is_guarded() -> bool:
    return _guard is not None and _guard.pid == os.getpid()


def guard() -> None:
    """Make every child this process forks from now on die with it, and clean up after them (the module's doc).
    Once per process; later calls return at once. Linux only (elsewhere: nothing)."""
    global _guard, _hooks_registered
    if sys.platform != "linux" or _is_guarded():
        return
    from multiprocessing import resource_tracker

    remove_stale()
    pid = os.getpid()
    tmp = tempfile.gettempdir()
    folder = None
    if len(tmp) + _SOCKET_TAIL <= _UNIX_PATH_MAX:
        folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{pid}.", dir=tmp)
        Path(folder, HOST_FILE).write_text(_HOST)
        tempfile.tempdir = folder
        os.environ["TMPDIR"] = folder
    _name_shared_memory(pid)
    resource_tracker.ensure_running()          # now, so that the watcher can hold its pipe open
    tracker_fd = resource_tracker.getfd()
    tracker_pid = getattr(resource_tracker._resource_tracker, "_pid", None) or 0
    life_r, life_w = os.pipe()
    report_r, report_w = os.pipe()
    watcher = None
    command = [sys.executable, "-I", "-S", str(WATCHER), folder or "", shm_prefix(pid), str(tracker_pid),
               str(report_r)]
    try:
        watcher = subprocess.Popen(command, stdin=life_r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   pass_fds=(report_r, tracker_fd), start_new_session=True)
    except OSError:
        pass            # no interpreter to run it (an embedded Python): the children still die with us
    finally:
        os.close(life_r)
        os.close(report_r)
    _guard = _Guard(pid, folder, life_w, report_w, ctypes.CDLL(None, use_errno=True).prctl, watcher)
    atexit.register(_orderly_exit, life_w)
    if not _hooks_registered:
        os.register_at_fork(before=_before_fork, after_in_child=_in_child)
        _hooks_registered = True


def _name_shared_memory(pid: int) -> None:
    """Name multiprocessing's new segments after us (its private prefix; kept if it is gone)."""
    from multiprocessing import shared_memory

    if not hasattr(shared_memory, "_SHM_NAME_PREFIX") or not hasattr(shared_memory, "_SHM_SAFE_NAME_LENGTH"):
        return
    prefix = "/" + shm_prefix(pid)
    shared_memory._SHM_NAME_PREFIX = prefix
    shared_memory._SHM_SAFE_NAME_LENGTH = max(shared_memory._SHM_SAFE_NAME_LENGTH, len(prefix) + 16)


def _orderly_exit(life_w: int) -> None:
    with contextlib.suppress(OSError):
        if _guard is not None and _guard.pid == os.getpid():
            os.write(life_w, b"exit")


def _before_fork() -> None:
    global _fork_from_main_thread, _forking_pid
    _fork_from_main_thread = threading.current_thread() is threading.main_thread()
    _forking_pid = os.getpid()


def _in_child() -> None:
    """In a child forked from a guarded process: report to the watcher, and die with the parent."""
    global _guard
    parent = _guard
    if parent is None:
        return
    if parent.life_w is not None:
        with contextlib.suppress(OSError):
            os.close(parent.life_w)            # the watcher waits for the guarded process, not for us
        _guard = _Guard(parent.pid, parent.folder, None, parent.report_w, parent.prctl, parent.watcher)
    started = start_time(os.getpid())       # the watcher's own reading: it compares the two
    with contextlib.suppress(OSError):
        if started is not None:
            os.write(parent.report_w, f"{os.getpid()} {started}\n".encode())
    if _fork_from_main_thread and parent.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0 \
            and os.getppid() != _forking_pid:
        os._exit(1)                            # the parent died before prctl: the signal will never come


def kill_children() -> None:
    """Kill every process forked from this one (Lava's workers and its shared memory manager) and remove
    this process's shared memory segments: an interrupted Lava run's stop."""
    children = multiprocessing.active_children()
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()
    # A fork multiprocessing does not list yet: the interrupt came inside Process.start
    for pid in _forks():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(Exception):
            multiprocessing.Process.join(child, 10)       # Lava's SystemProcess.join takes no timeout
    _forget_the_reaped()
    _remove_shared_memory(os.getpid(), unregister=True)


def _forget_the_reaped() -> None:
    """A child that multiprocessing still lists but that is no longer our child was reaped behind its
    back: a KeyboardInterrupt raised between its ``waitpid`` and the line that records the result.
    Its join would fail at exit ("Cannot close a process while it is still running"): record it dead."""
    from multiprocessing import process

    for child in multiprocessing.active_children():
        if _parent_of(child.pid) != os.getpid():
            with contextlib.suppress(Exception):
                child._popen.returncode = -signal.SIGKILL
                process._children.discard(child)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _forks() -> list[int]:
    """This process's children that run its own command line: forks (not the watcher nor the tracker)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/cmdline", "rb") as f:
            mine = f.read()
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if _parent_of(int(name)) != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read() == mine:
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@contextlib.contextmanager
def interrupt_kills_children(on_interrupt=None, resend_every: float = 0.5):
    """Within the block, a SIGINT kills the children at once, then goes on
    as the previous handler says (KeyboardInterrupt, usually). The block
    gets a dict whose "interrupted" says whether that happened.

    While the block has not ended, that KeyboardInterrupt comes again every
    ``resend_every`` seconds: Python drops an exception raised in a
    finalizer ("Exception ignored in ..."), where a signal handler also
    runs, and Lava's code, which waits for its workers without a timeout,
    would then wait for ever on dead ones (seen: a Ctrl-C that hung
    ``simulate``). An error the killed children cause (EOFError...) is the
    interrupt too. When the block ends by an interrupt the children are
    killed (again: some may have started since) and ``on_interrupt()``
    called, with SIGINT quiet. Only in the main thread (where signals are
    handled); a SIGINT the previous handler ignores or survives stays so."""
    state = {"interrupted": False, "closing": False, "resender": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:
        yield state
        return
    done = threading.Event()
    unraisablehook = sys.unraisablehook

    def quiet_unraisable(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            unraisablehook(unraisable)

    def resend():
        while not done.wait(resend_every):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def handler(signum, frame):
        if state["closing"]:
            return
        if state["interrupted"]:
            raise KeyboardInterrupt
        try:
            if callable(previous):
                previous(signum, frame)
                return                         # the previous handler carried on: so does the run
            kill_children()                    # SIG_DFL: die as the signal would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        except BaseException:
            state["interrupted"] = True
            # Python prints the one it drops ("Exception ignored in ..."): noise, as it comes again
            sys.unraisablehook = quiet_unraisable
            kill_children()
            state["resender"] = threading.Thread(target=resend, name="fer2neuro-interrupt", daemon=True)
            state["resender"].start()
            raise

    def quiet():
        state["closing"] = True
        done.set()
        if state["resender"] is not None:
            state["resender"].join()           # its last SIGINT meets our handler, which now ignores it

    def clean_up():
        quiet()
        kill_children()
        if on_interrupt is not None:
            on_interrupt()

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    except BaseException as exc:
        if state["interrupted"] or not isinstance(exc, Exception):
            clean_up()
            if isinstance(exc, Exception):     # what the killed children caused: the interrupt
                raise KeyboardInterrupt from None
        raise
    else:
        if state["interrupted"]:               # Python dropped it, and the block ended anyway
            clean_up()
            raise KeyboardInterrupt
    finally:
        quiet()
        signal.signal(signal.SIGINT, previous)
        if sys.unraisablehook is quiet_unraisable:
            sys.unraisablehook = unraisablehook


def _remove_shared_memory(pid: int, *, unregister: bool) -> None:
    """Unlink ``pid``'s segments; ``unregister``: also tell our resource tracker, which would otherwise
    warn about them (and fail to unlink them) when it exits."""
    from multiprocessing import resource_tracker

    for name in unlink_segments(shm_prefix(pid)):
        if unregister:
            with contextlib.suppress(Exception):
                resource_tracker.unregister("/" + name, "shared_memory")


def _host_of(folder: str) -> str | None:
    try:
        return Path(folder, HOST_FILE).read_text()
    except OSError:
        return None


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False            # alive, another user's
    return False


def remove_stale(tmp: str | None = None) -> list[str]:
    """Remove the private folders (in ``tmp``, default TMPDIR) and shared memory segments of guarded
    processes on this host that are gone and whose watcher could not clean up (killed too); return
    what was removed."""
    removed = []
    tmp = tmp or tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp):
            match = _FOLDER.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False) and _host_of(entry.path) == _HOST \
                    and _dead(int(match["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            match = _SHM.match(name)
            if match and int(match["pid"]) != os.getpid() and _dead(int(match["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))
                    removed.append(os.path.join(SHM_DIR, name))
    return removed
