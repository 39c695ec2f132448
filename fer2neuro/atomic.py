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
:data:`STALE_AFTER` seconds. A name too long to carry all that (NAME_MAX is
255 bytes) is shortened in its temporary names only (:func:`_stem`).

What a write replaces (docs/reliability.md, "Outputs"):

* only a regular file: never a device, a FIFO, a socket (as root, renaming
  over ``/dev/null`` would replace the device), nor a file the running
  command reads (:func:`reading`); :func:`check_target` says why not;
* a symbolic link is written through: the file it points to is replaced,
  the link stays (a folder likewise);
* a folder (:func:`atomic_folder`) only when it is empty or holds nothing
  but what fer2neuro wrote there; nothing else is ever deleted.

Results get the modes a plain ``open()``/``mkdir()`` would give them
(0666/0777 less the umask), not ``tempfile``'s 0600/0700.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

from fer2neuro import disk_errors
from fer2neuro.errors import ConfigError

STALE_AFTER = 3600.0        # seconds without a write after which a foreign/legacy temporary file is stale

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
# .<target>.<host>-<pid>.<8 random chars>.tmp, or (older versions) .<target>.<8 random chars>.tmp
_TAIL = r"(?:(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp"
_TEMP = re.compile(r"^\.(?P<target>.+?)\." + _TAIL + "$")
_NAME_MAX = 255             # bytes in one file name (Linux file systems)
# what a temporary name adds to its target's: "." before, ".<host>-<pid>.<random>.tmp" after, at their longest
_ADDED = 1 + 1 + 40 + 1 + 10 + 1 + 8 + len(".tmp")

_open: dict[str, int] = {}          # temporary path -> PID of the process that writes it
_reads: dict[tuple[int, int], str] = {}     # (st_dev, st_ino) of what the running command reads -> its name
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
            prefix = f".{_stem(target)}."
            match = re.fullmatch(_TAIL, entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if match is None:
            continue
        with contextlib.suppress(OSError):
            if (entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False)) \
                    and _is_stale(entry, match, now):
                _remove(entry.path)
                removed.append(Path(entry.path))
    return removed


def _stem(name: str) -> str:
    """``name`` as its temporary files carry it: itself, or where the
    temporary name would pass NAME_MAX (a legal name of up to 255 bytes,
    plus what ``.<host>-<pid>.<random>.tmp`` adds) its start and a hash of
    the whole, the same in every process, so that :func:`remove_stale` of
    that name finds what any process left."""
    room = _NAME_MAX - _ADDED
    if len(os.fsencode(name)) <= room:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    kept, size = "", 0
    for char in name:                   # whole characters: a name cut inside one would not decode
        size += len(os.fsencode(char))
        if size > room - 1 - len(digest):
            break
        kept += char
    return f"{kept}~{digest}"


def _temp_prefix(name: str) -> str:
    return f".{_stem(name)}.{_HOST}-{os.getpid()}."


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _key(path) -> tuple[int, int] | None:
    """What identifies the file or folder at ``path`` (links followed), or None if there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


@contextlib.contextmanager
def reading(named):
    """While the block runs, the files and folders in ``named`` (pairs of
    how to name it, path) are what the running command reads: no atomic
    write replaces one of them (nor a folder holding one). The CLI
    registers every command's inputs this way (fer2neuro/cli/base.py)."""
    saved = dict(_reads)
    try:
        also_reads(named)
        yield
    finally:
        _reads.clear()
        _reads.update(saved)


def also_reads(named) -> None:
    """Add to what the running command reads (see :func:`reading`); a path
    that does not exist is skipped."""
    for label, path in named:
        key = _key(path)
        if key is not None:
            _reads.setdefault(key, label)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def check_target(path, label: str | None = None, advice: str = "write elsewhere") -> None:
    """Refuse (ConfigError) to replace what ``path`` names (links followed)
    unless it is missing or a regular file that the running command does not
    read. ``label`` names the path in the message (e.g. ``--out x.pt``)."""
    label = label or str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return                          # a new file (a dangling link: the file it names, created)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{label}: cannot be written ({reason}); {advice}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{label}: is {_kind(info.st_mode)}, not a regular file, and fer2neuro replaces only "
                          f"regular files; {advice}")
    source = _reads.get((info.st_dev, info.st_ino))
    if source is not None:
        raise ConfigError(f"{label}: is the input {source}, which this command reads; {advice}")


def check_writable(folder, label: str, advice: str = "write elsewhere") -> None:
    """Refuse (ConfigError) a ``folder`` (which exists) this process cannot
    create files in, by creating and removing one: the only test that holds
    for root (whom ``os.access`` always lets write), read-only mounts and
    ACLs alike. The probe is named like a temporary file, so that a kill
    between the two steps leaves nothing :func:`remove_stale` keeps."""
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix("probe"), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot write in {folder} ({exc.strerror}); {advice}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_name_length(path, label: str) -> None:
    """Refuse a file name longer than its folder's file system allows (a
    rename at the end would fail only after the work)."""
    name = os.fsencode(Path(path).name)
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = _NAME_MAX
    if len(name) > limit:
        raise ConfigError(f"{label}: the file name is {len(name)} bytes long, more than the {limit} its file "
                          "system allows")


def _through_link(path: Path) -> Path:
    """A symbolic link is written through: the path it points to (the link
    stays, and now names the new result)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success rename it over
    ``path`` (atomic on POSIX), on error delete it and leave ``path`` as it was.
    ``path`` must be missing or a regular file the command does not read
    (:func:`check_target`); a symbolic link is written through.

        with atomic_path("best.pt") as tmp:
            torch.save(obj, tmp)
    """
    if str(path) == "":
        raise ConfigError("empty output path: name the file to write")
    shown = str(path)
    path = Path(path)
    if path.is_dir() or shown.endswith(os.sep):
        raise IsADirectoryError(21, "is a folder, not a file name", shown)
    path = _through_link(path)
    check_target(path, shown)           # not a device, a FIFO, ... nor a file this command reads
    path.parent.mkdir(parents=True, exist_ok=True)
    _install_handlers()
    remove_stale(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:              # name the user's file, not the hidden temporary one
        raise type(exc)(exc.errno, exc.strerror, shown) from None
    _open[tmp] = os.getpid()
    try:
        os.close(fd)
        # mkstemp creates the file 0600; give the result the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        check_target(path, shown)       # still so: nothing made a FIFO or a device of it meanwhile
        try:
            os.replace(tmp, path)
        except OSError as exc:          # name the user's file, not the hidden temporary one
            raise type(exc)(exc.errno, exc.strerror, shown) from None
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        disk_errors.raise_naming(exc, shown)    # a full disk: name the user's file (disk_errors.py)
        raise
    finally:
        _open.pop(tmp, None)


@contextlib.contextmanager
def atomic_folder(path: str | Path, foreign=None, label: str | None = None, advice: str = "write elsewhere"):
    """Yield a temporary folder next to ``path``; on success it replaces
    ``path``, on error it is deleted. Named like a temporary file, so the
    signal handlers and ``remove_stale`` treat it alike (a Lava export killed
    half-way leaves nothing the next run keeps).

    An existing folder at ``path`` is replaced only if it holds nothing
    fer2neuro did not write: ``foreign(folder)`` lists what it did not
    (default: everything, so only an empty folder is replaced), and
    :func:`check_folder` refuses the rest. A symbolic link to a folder: the
    folder it points to is replaced, the link stays. The folder gets the
    mode ``mkdir`` would give it (0777 less the umask)."""
    if str(path) == "":
        raise ConfigError("empty output path: name the folder to write")
    shown = label or str(path)
    path = _through_link(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _install_handlers()
    remove_stale(path.parent, path.name)
    try:
        staging = tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:              # name the user's folder, not the hidden temporary one
        raise type(exc)(exc.errno, exc.strerror, shown) from None
    _open[staging] = os.getpid()
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield Path(staging)
        _swap_in(Path(staging), path, foreign, shown, advice)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        disk_errors.raise_naming(exc, shown)    # a full disk: name the user's folder (disk_errors.py)
        raise
    finally:
        _open.pop(staging, None)


def _everything(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def check_folder(path, foreign=None, label: str | None = None, advice: str = "write elsewhere") -> None:
    """Refuse (ConfigError) to replace the folder ``path`` (links followed)
    if it exists and is not a folder, holds what the running command reads,
    or holds anything ``foreign(folder)`` names (what fer2neuro did not
    write there; default: anything)."""
    label = label or str(path)
    path = Path(os.path.realpath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be written ({exc.strerror}); {advice}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{label}: is {_kind(info.st_mode)}, not a folder; {advice}")
    for inside in [path, *path.iterdir()]:
        source = _reads.get(_key(inside))
        if source is not None:
            raise ConfigError(f"{label}: would replace the input {source}, which this command reads; {advice}")
    others = (foreign or _everything)(path)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ConfigError(f"{label}: holds files fer2neuro did not write ({shown}), which replacing it would "
                          f"delete; {advice}")


def _swap_in(staging: Path, path: Path, foreign, label: str, advice: str) -> None:
    """Rename ``staging`` to ``path``; an existing folder there (checked
    again now: files may have appeared during the work) is first renamed
    aside, under a temporary name, and deleted once the new one is in."""
    if not os.path.lexists(path):
        os.replace(staging, path)
        return
    check_folder(path, foreign, label, advice)
    aside = tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.replace(path, aside)         # a folder may be renamed over an empty one
    except BaseException:
        os.rmdir(aside)
        raise
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(aside, path)         # put the old one back
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
