"""Progress bars that suit where stderr goes.

On a terminal: tqdm's bar, redrawn in place. Anywhere else (a log file, a
pipe, CI): tqdm writes each redraw after a carriage return, which in a file
is hundreds of frames glued onto one line. There the same bar writes a plain
line instead, at most every ``LOG_EVERY`` seconds, plus one when the bar
starts; ``--no-progress`` (``disable=True``) still silences it.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_EVERY = 10.0                       # seconds between progress lines in a log


def _interactive(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class LogLines:
    """A file for tqdm that keeps one line of its frames now and then: the
    first, then at most one every ``every`` seconds (the bar's last frame
    before it closes is written if it has not been)."""

    def __init__(self, stream, every: float = LOG_EVERY):
        self.stream, self.every = stream, every
        self.last_written = None
        self.pending = ""

    def write(self, text: str) -> int:
        for frame in text.replace("\n", "\r").split("\r"):
            frame = frame.strip()
            if not frame:
                continue
            now = time.monotonic()
            if self.last_written is None or now - self.last_written >= self.every:
                self.stream.write(frame + "\n")
                self.last_written, self.pending = now, ""
            else:
                self.pending = frame
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        """Write the last frame held back (the bar's final count)."""
        if self.pending:
            self.stream.write(self.pending + "\n")
            self.pending = ""


class _LoggedBar(tqdm):
    lines: LogLines | None = None

    def close(self):
        if not self.disable and self.lines is not None:
            self.refresh()                   # the final count, as a frame
            self.lines.finish()
            self.disable = True              # leave=False would otherwise clear a line that is not there
        super().close()


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; in a log, lines now and then."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or _interactive(stream):
        return tqdm(iterable, **kwargs)
    lines = LogLines(stream)
    kwargs.update(file=lines, dynamic_ncols=False, ncols=100, ascii=True)
    bar = _LoggedBar(iterable, **kwargs)
    bar.lines = lines
    return bar
