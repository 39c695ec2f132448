"""What the benchmark scripts share: each variant runs in a child process so
its peak memory (max RSS) is its own.

Two ways to drive a child:

- :func:`run_variant` runs ``script --variant NAME *args`` once and returns
  the JSON object its last stdout line holds (one measurement per process).
- :class:`Worker` keeps a child alive and talks to it over pipes, one JSON
  line per request and per reply, so a driver can interleave rounds of
  several variants without paying start-up every round. The child side is
  :func:`serve`.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import traceback
from typing import Callable


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB (MiB).

    On Linux, the high-water mark of the current address space (``VmHWM`` in
    ``/proc/self/status``). ``getrusage``'s ``ru_maxrss`` is no good for a
    child: Linux carries the parent's RSS high-water mark over fork and exec
    into it, so every child of a parent that once held 1.3 GB would report at
    least 1.3 GB. Elsewhere, ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_variant(script: str, variant: str, args: list[str]) -> dict:
    """Run ``script --variant variant *args`` and return the JSON object its
    last stdout line holds."""
    out = subprocess.run([sys.executable, script, "--variant", variant, *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_range(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


class WorkerError(RuntimeError):
    """A child failed to start or to answer; the message ends with the tail
    of its stderr."""


class Worker:
    """A long-lived child ``python script *args`` answering JSON requests.

    The child must call :func:`serve`. Its stderr goes to a temporary file,
    shown (last lines) when it fails, so library warnings do not interleave
    with the driver's table.
    """

    def __init__(self, script: str, args: list[str]) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        self.hello = self._read()                 # the child's ready message

    def request(self, **message) -> dict:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"] + self._stderr_tail())
        return reply

    def _died(self) -> str:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return f"child exited with status {self.proc.returncode}" + self._stderr_tail()

    def _stderr_tail(self, lines: int = 8) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        tail = [line.rstrip() for line in self._stderr.read().splitlines()[-lines:]]
        return "".join(f"\n    | {line}" for line in tail)


def serve(ready: Callable[[], dict], handle: Callable[[dict], dict]) -> None:
    """Child side of :class:`Worker`. ``ready()`` builds what the child needs
    and returns the ready message; then every request line read from stdin is
    answered by ``handle(request)`` (``{"cmd": "rss"}`` and ``{"cmd": "quit"}``
    are answered here). Anything else that writes to stdout (libraries) is
    sent to stderr, so the pipe carries only replies."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")

    def fail(exc: Exception) -> None:   # traceback first, so the driver shows it
        traceback.print_exc()
        sys.stderr.flush()
        reply({"error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)

    try:
        reply(ready())
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which carries on
        fail(exc)
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.get("cmd")
        if cmd == "quit":
            return
        if cmd == "rss":
            reply({"max_rss_mb": peak_rss_mb()})
            continue
        try:
            reply(handle(request))
        except Exception as exc:  # noqa: BLE001
            fail(exc)
