"""Write files so that a crash never leaves a half-written result behind.

A result is written to a hidden temporary file next to it, then renamed over
it. The temporary file is named ``.<name>.<host>-<pid>.<random>.tmp`` after
the process that writes it, so that leftovers can be told apart from files
that another live process is still writing:

* on SIGINT and SIGTERM the temporary files this process has open are
  removed (the handlers are installed once, at the first write, and then do
  what the previous handler did: KeyboardInterrupt, or death by SIGTERM);
* SIGKILL cannot be caught: whatever it leaves is removed by the next write
  of the same file (:func:`atomic_path`) or, for a whole folder, by
  :func:`remove_stale` (a training run calls it on its run folder at start).

A temporary file is stale when its process (on this host) is dead, or, for a
file without a PID or from another host, when it has not been written to for
:data:`STALE_AFTER` seconds.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from fer2neuro.errors import ConfigError

STALE_AFTER = 3600.0        # seconds without a write after which a foreign/legacy temporary file is stale

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
# .<target>.<host>-<pid>.<8 random chars>.tmp, or (older versions) .<target>.<8 random chars>.tmp
_TAIL = r"(?:(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp"
_TEMP = re.compile(r"^\.(?P<target>.+?)\." + _TAIL + "$")

_open: dict[str, int] = {}          # temporary path -> PID of the process that writes it
_lock = threading.Lock()
_installed = False


def _remove_open() -> None:
    """Remove this process's open temporary files (from a signal handler)."""
    me = os.getpid()
    for tmp, pid in list(_open.items()):
        if pid == me:                   # not a forked child's copy of the parent's files
            _remove(tmp)


def _remove(path: str) -> None:
    """A temporary file, or a staging folder (``atomic_folder``)."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _chain(signum: int, previous):
    def handler(sig, frame):
        if previous is signal.SIG_IGN:
            return
        if callable(previous):
            try:
                previous(sig, frame)    # KeyboardInterrupt for SIGINT by default
            except BaseException:
                _remove_open()
                raise
            return                      # the previous handler carried on: so do the writes
        _remove_open()                  # SIG_DFL (or unknown): die as that signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return handler


def _install_handlers() -> None:
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if _installed:
            return
        replaced = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or previous is None:
                continue                # ignored (e.g. nohup), or set outside Python: leave it alone
            signal.signal(signum, _chain(signum, previous))
            replaced[signum] = previous
        # A forked child (Lava's runtime processes, multiprocessing workers)
        # gets the handlers it would have had: a Python-level SIGTERM handler
        # runs only when the child's main thread returns to Python, so a child
        # blocked in C would ignore multiprocessing's terminate() and its
        # parent would wait forever (seen: a Lava run that hung). The child
        # writes none of our temporary files anyway.
        os.register_at_fork(after_in_child=lambda: _restore(replaced))
        _installed = True


def _restore(handlers: dict) -> None:
    for signum, previous in handlers.items():
        with contextlib.suppress(ValueError, OSError):     # not the main thread: nothing to restore
            signal.signal(signum, previous)


def _is_stale(entry: os.DirEntry | Path, match: re.Match, now: float) -> bool:
    if str(entry.path if isinstance(entry, os.DirEntry) else entry) in _open:
        return False                    # this process is writing it
    pid = match.group("pid")
    if pid is not None and match.group("host") == _HOST:
        pid = int(pid)
        if pid == os.getpid():
            return True                 # an earlier process with our PID; we do not write it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False                # alive (another user's process)
        return False
    try:
        mtime = entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return now - mtime > STALE_AFTER


def remove_stale(folder: str | Path, target: str | None = None) -> list[Path]:
    """Remove the stale temporary files (see the module's doc) in ``folder``,
    only those of the file named ``target`` if given; return what was
    removed. A folder that does not exist has none."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        if target is None:
            match = _TEMP.match(entry.name)
        else:
            prefix = f".{target}."
            match = re.fullmatch(_TAIL, entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if match is None:
            continue
        with contextlib.suppress(OSError):
            if (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)) \
                    and _is_stale(entry, match, now):
                _remove(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success rename it over
    ``path`` (atomic on POSIX), on error delete it and leave ``path`` as it was.

        with atomic_path("best.pt") as tmp:
            torch.save(obj, tmp)
    """
    if str(path) == "":
        raise ConfigError("empty output path: name the file to write")
    shown = str(path)
    path = Path(path)
    if path.is_dir() or shown.endswith(os.sep):
        raise IsADirectoryError(21, "is a folder, not a file name", shown)
    path.parent.mkdir(parents=True, exist_ok=True)
    _install_handlers()
    remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    _open[tmp] = os.getpid()
    try:
        os.close(fd)
        # mkstemp creates the file 0600; give the result the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:          # name the user's file, not the hidden temporary one
            raise type(exc)(exc.errno, exc.strerror, shown) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _open.pop(tmp, None)


@contextlib.contextmanager
def atomic_folder(path: str | Path):
    """Yield a temporary folder next to ``path``; on success it replaces
    ``path`` (an existing folder there is removed first), on error it is
    deleted. Named like a temporary file, so the signal handlers and
    ``remove_stale`` treat it alike (a Lava export killed half-way leaves
    nothing the next run keeps)."""
    if str(path) == "":
        raise ConfigError("empty output path: name the folder to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _install_handlers()
    remove_stale(path.parent, path.name)
    staging = tempfile.mkdtemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    _open[staging] = os.getpid()
    try:
        yield Path(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _open.pop(staging, None)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
