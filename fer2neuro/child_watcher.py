"""The watcher that cleans up after a fer2neuro process, however it ends.

Started by :func:`fer2neuro.children.guard` as
``python -I -S child_watcher.py FOLDER SHM_PREFIX TRACKER_PID REPORT_FD``, in
a session of its own (a Ctrl-C in the terminal does not reach it). It uses
the standard library only and imports nothing of fer2neuro's, so it starts
in milliseconds and works whatever state the package is in.

Its stdin is a pipe only the guarded process holds (forked children close
their copy at once): end of file means that process is gone, whether it
exited, died of a signal or was SIGKILLed. Before that it may write "exit"
(its ``atexit``): an orderly end. Every child forked from the guarded process
writes "PID START_TIME" to REPORT_FD as it starts.

Then the watcher kills every reported child still alive (the start time
tells a reused PID apart), kills multiprocessing's resource tracker unless the
end was orderly (it would print warnings about the segments removed next),
unlinks the shared memory segments ``/dev/shm/SHM_PREFIX*``, removes FOLDER
(the run's private TMPDIR; "" for none) and exits. It also holds a copy of the tracker's
pipe, so that the tracker cannot see its end of file and start warning before
the watcher has killed it.
"""
import os
import select
import shutil
import signal
import sys

SHM_DIR = "/dev/shm"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of
    /proc/PID/stat), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":          # a zombie: dead already, only waiting to be reaped
        return None
    return fields[19].decode()


def read_reports(data: bytes, pending: bytes, children: dict[int, str]) -> bytes:
    """Adds the complete "PID START" lines of pending + data; returns what is left."""
    *lines, rest = (pending + data).split(b"\n")
    for line in lines:
        try:
            pid, start = line.split()
            children[int(pid)] = start.decode()
        except ValueError:
            continue
    if len(children) > 4096:                   # a long run forks many workers: forget the dead ones
        for pid, start in list(children.items()):
            if start_time(pid) != start:
                del children[pid]
    return rest


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def is_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def unlink_segments(prefix: str) -> list[str]:
    """Unlink the shared memory segments whose names start with ``prefix``;
    return the names unlinked (fer2neuro.children uses it too)."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return []
    unlinked = []
    for name in names:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            continue
        unlinked.append(name)
    return unlinked


def main(argv: list[str]) -> None:
    folder, shm_prefix, tracker_pid, report_fd = argv[1], argv[2], int(argv[3]), int(argv[4])
    life = sys.stdin.fileno()
    children: dict[int, str] = {}
    pending, orderly = b"", False
    watching = [life, report_fd]
    while life in watching:
        ready, _, _ = select.select(watching, [], [])
        for fd in ready:
            data = os.read(fd, 65536)
            if fd == life:
                if not data:
                    watching.remove(life)
                orderly = orderly or b"exit" in data
            elif data:
                pending = read_reports(data, pending, children)
            else:
                watching.remove(report_fd)
    os.set_blocking(report_fd, False)          # the reports written before the end
    while True:
        try:
            data = os.read(report_fd, 65536)
        except OSError:
            break
        if not data:
            break
        pending = read_reports(data, pending, children)
    for pid, start in children.items():
        if start_time(pid) == start:
            kill(pid)
    if not orderly and tracker_pid and is_tracker(tracker_pid):
        kill(tracker_pid)
    unlink_segments(shm_prefix)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv)
