"""One run at a time per run folder.

Two ``train`` (or ``finetune``) runs writing the same folder would each
exit 0 and leave a mix of both (metrics of one, checkpoints of the other).
A run holds an exclusive ``flock`` on ``RUN_DIR/.fer2neuro.lock`` for as
long as it writes there; a second run fails at once, naming the folder and
the holder's PID. The kernel releases the lock when its holder dies, however
it dies (SIGKILL included), so a killed run never blocks the next one.

The lock file holds the holder's PID (for the message) and is removed when
the run ends. Because a file can be removed between another process's
``open`` and its ``flock``, a lock counts only if the path still names the
very file locked; otherwise it is taken again.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from fer2neuro.errors import ConfigError

LOCK_FILE = ".fer2neuro.lock"
# file systems without flock (some network and FUSE mounts): the run goes on, unlocked
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def run_folder_lock(folder: str | Path, option: str = "--out"):
    """Hold ``folder``'s run lock while the block runs; ConfigError at once
    if another process holds it. Creates the folder if it is missing, and
    removes it again at the end if the run wrote nothing there (a run refused
    for a bad option leaves no run folder behind)."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = None
    try:
        fd = _acquire(path, f"{option} {folder}")
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)         # while still locked: the next run then creates a fresh one
            os.close(fd)
        for made in created:            # deepest first; only folders this call made, and only if empty
            try:
                made.rmdir()
            except OSError:
                break


def _acquire(path: Path, label: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            by = f" (PID {holder})" if holder else ""
            raise ConfigError(f"{label}: another fer2neuro run{by} is writing in this folder; wait for it to end "
                              f"or choose another {label.split()[0]}") from None
        except OSError as exc:
            if exc.errno in _NO_LOCKING:
                return fd
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)                    # the previous holder removed it after we opened it: again


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
