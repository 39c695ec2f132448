"""TensorBoard scalars of a training run, with disk errors reported as one
line naming the folder.

``SummaryWriter`` writes its event file from a thread. When a write fails (a
full disk, a file-size limit) the thread dies, threading prints its
traceback, and the writer raises the bare ``OSError`` again at its next call
in the training loop. :class:`ScalarLog` names the folder in that error (the
CLI prints ``Error: RUN/tensorboard: No space left on device``), and the
writer thread's disk errors are not printed: the loop reports them.
"""
from __future__ import annotations

import threading
from pathlib import Path

from fer2neuro import disk_errors


class ScalarLog:
    """A ``SummaryWriter`` (``writer_class``) writing into ``path``, and the
    calls training makes (``add_scalar``, ``flush``, ``close``), each
    reporting a disk error against ``path`` (its first event is written as
    it is made)."""

    def __init__(self, path: Path, writer_class):
        self.path = Path(path)
        _quiet_writer_threads()
        self._writer = self._call(writer_class, log_dir=str(self.path))

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only a disk error is translated; the rest re-raised
            disk_errors.raise_naming(exc, self.path)
            raise

    def add_scalar(self, *args, **kwargs):
        return self._call(self._writer.add_scalar, *args, **kwargs)

    def flush(self):
        return self._call(self._writer.flush)

    def close(self):
        return self._call(self._writer.close)


def _quiet_writer_threads() -> None:
    """Leave a disk error in tensorboard's writer thread unprinted (the
    writer raises it again where ScalarLog reports it); any other error in
    any thread is printed as before."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard_disk_errors", False):
        return

    def hook(args):
        from_tensorboard = type(args.thread).__module__.startswith("tensorboard.")
        if from_tensorboard and disk_errors.disk_error(args.exc_value) is not None:
            return
        previous(args)

    hook.quiet_tensorboard_disk_errors = True
    threading.excepthook = hook
