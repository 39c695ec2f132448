"""The CPU kernel of the fused neuron (``fused_neuron.c`` and the bodies it includes, ``fused_neuron_impl.h``): built with the
system C compiler at first use, cached, and called through ctypes.

Why ctypes and not a torch C++ extension: the kernel needs nothing from torch
but data pointers, and without torch's headers it compiles in about a second
instead of a minute. It is linked to ``libgomp.so.1``, the OpenMP runtime torch
itself loads, so both share one thread pool.

The shared library lives in ``$FER2NEURO_CACHE`` (default
``~/.cache/fer2neuro``) under a name that hashes the source, the flags and the
CPU's instruction-set flags (``-march=native``), written to a temporary file and
renamed. ``make setup`` builds it ahead of time (``python -m
fer2neuro.model.kernels``). If there is no compiler, the build fails, or
``FER2NEURO_KERNEL=off`` is set, :func:`load` returns ``None`` and the fused
engine runs its torch-ops implementation instead, which computes the same
spikes and gradients (tested).

Loading a library runs its code, and a damaged one can crash the process
(a truncated ``.so`` died with SIGBUS inside ``dlopen``). So the build
records the library's SHA-256 next to it (``<name>.so.sha256``, written after
the rename), and :func:`load` checks the file against it before ``dlopen``:
a library without a record (a kill between the two writes, an older
fer2neuro, a file put there by hand) is rebuilt; one whose bytes changed is
rebuilt with a warning; one that fails to load anyway gives a warning and
the torch ops.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from fer2neuro.atomic import atomic_path, write_text
from fer2neuro.errors import one_line

SOURCE = Path(__file__).with_name("fused_neuron.c")
HEADERS = (Path(__file__).with_name("fused_neuron_impl.h"),)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared", "-std=c11"]
DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}

_state: dict = {}
NO_RECORD = "no recorded SHA-256"


class Params(ctypes.Structure):
    _fields_ = [("beta", ctypes.c_float), ("scale", ctypes.c_float), ("theta", ctypes.c_float),
                ("half_alpha", ctypes.c_float), ("pi_half_alpha", ctypes.c_float)]


def cache_dir() -> Path:
    return Path(os.environ.get("FER2NEURO_CACHE") or Path.home() / ".cache" / "fer2neuro") / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    key = hashlib.sha256(b"".join(f.read_bytes() for f in (SOURCE, *HEADERS)) + " ".join(FLAGS).encode() + _cpu_flags().encode()
                         + platform.machine().encode()).hexdigest()[:16]
    return cache_dir() / f"fused_neuron-{key}.so"


def _sha256(path: Path, fd: int | None = None) -> str:
    """The SHA-256 of the file at ``path``, or of the one open as ``fd``."""
    digest = hashlib.sha256()
    with (os.fdopen(os.dup(fd), "rb") if fd is not None else open(path, "rb")) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(library: Path) -> Path:
    """Where the SHA-256 the build measured is kept."""
    return library.with_name(library.name + ".sha256")


def _check(library: Path, fd: int | None = None) -> str | None:
    """Why the cached ``library`` (or the file open as ``fd``) cannot be
    trusted (None: it can): no record of its hash, or bytes that differ from
    the recorded ones."""
    try:
        recorded = record_path(library).read_text().strip()
    except OSError:
        return NO_RECORD
    try:
        actual = _sha256(library, fd)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if actual == recorded else "its SHA-256 differs from the one recorded when it was built"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def build(verbose: bool = False) -> Path:
    """Compile the kernel unless a cached build passes its hash check;
    returns the library's path. Raises ``RuntimeError`` with the compiler's
    message on failure (``OSError`` where the cache cannot be written)."""
    target = library_path()
    if target.is_file():
        problem = _check(target)
        if problem is None:
            return target
        if problem != NO_RECORD:                # a build we recorded changed since: say so
            _state["damaged"] = problem
            _warn(f"the cached fused-neuron kernel {target} is damaged ({problem}); rebuilding it")
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH")
    # atomic_path: a temporary file renamed into place, removed on error, on
    # SIGINT/SIGTERM, and (if a kill left it) by the next build
    with atomic_path(target) as tmp:
        cmd = [compiler, *FLAGS, str(SOURCE), "-o", str(tmp)]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {' '.join(done.stderr.split())[:300]}")
        digest = _sha256(tmp)
    # after the rename: a kill between the two leaves a library with no
    # record, which the next load rebuilds
    write_text(record_path(target), digest + "\n")
    return target


def load():
    """The loaded kernel library, or ``None`` when it cannot be had (the
    reason is in :func:`unavailable_reason`)."""
    if "lib" in _state:
        return _state["lib"]
    lib = None
    if os.environ.get("FER2NEURO_KERNEL", "").lower() in ("off", "0", "no", "false"):
        _state["reason"] = "disabled by FER2NEURO_KERNEL"
    else:
        try:
            path = build()
        except (OSError, RuntimeError) as exc:    # no compiler, an unwritable cache: torch ops, as documented
            _state["reason"] = str(exc)
            if "damaged" in _state:               # ... but the warning said "rebuilding": say how that ended
                _warn(f"the fused-neuron kernel could not be rebuilt ({one_line(exc)}); "
                      "the fused engine uses torch ops (the same results, slower)")
        else:
            try:
                lib = _open_checked(path)
                for name in ("f2n_forward", "f2n_backward", "f2n_forward_pool", "f2n_backward_pool"):
                    for suffix in DTYPES.values():
                        getattr(lib, f"{name}_{suffix}").restype = None
            except (OSError, AttributeError, RuntimeError) as exc:   # AttributeError: a missing symbol
                why = re.sub(r"/proc/self/fd/\d+: ", "", one_line(exc))    # (_open_checked's name)
                _state["reason"] = f"{path}: {why}"
                _warn(f"the fused-neuron kernel cannot be loaded ({_state['reason']}); "
                      "the fused engine uses torch ops (the same results, slower)")
                lib = None
    _state["lib"] = lib
    return lib


def _open_checked(path: Path) -> ctypes.CDLL:
    """``dlopen`` the library whose bytes were just checked: through a file
    descriptor opened before the check where /proc allows it, so that the
    file loaded is the file hashed even if the name is replaced meanwhile."""
    fd = os.open(path, os.O_RDONLY)
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        problem = _check(path, fd)
        if problem is not None:
            raise RuntimeError(problem)
        return ctypes.CDLL(str(proc) if proc.exists() else str(path))
    finally:
        os.close(fd)


def unavailable_reason() -> str | None:
    load()
    return _state.get("reason")


def usable(x: torch.Tensor) -> bool:
    """Whether the kernel can take ``x``: a CPU tensor in float32 or bfloat16."""
    return x.device.type == "cpu" and x.dtype in DTYPES and load() is not None


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _launch(kind: str, x: torch.Tensor, buffers: tuple[torch.Tensor, ...], steps: int, constant: bool,
            p, pool: bool) -> None:
    """Call ``f2n_<kind>[_pool]_<dtype>(x, time stride, *buffers, T, dims,
    params, threads)``: dims are N neurons, or P planes, H, W with ``pool``."""
    shape = tuple(x.shape if constant else x.shape[1:])
    dims = (math.prod(shape[:-2]), *shape[-2:]) if pool else (math.prod(shape),)
    function = getattr(load(), f"f2n_{kind}{'_pool' if pool else ''}_{DTYPES[x.dtype]}")
    params = Params(p.beta, p.input_scale, p.threshold, p.alpha / 2, math.pi / 2 * p.alpha)
    function(_ptr(x), ctypes.c_int64(0 if constant else math.prod(shape)), *map(_ptr, buffers),
             ctypes.c_int64(steps), *map(ctypes.c_int64, dims), params, ctypes.c_int(torch.get_num_threads()))


def forward(x: torch.Tensor, steps: int, constant: bool, p, pool: bool) -> torch.Tensor:
    """Spikes (T, ...) of the neurons driven by ``x`` ((T, ...) contiguous, or
    one current held for ``steps`` steps); with ``pool``, the 2x2 max pool of
    them: x is (.., P.., H, W) and the result (T, .., H/2, W/2)."""
    shape = tuple(x.shape if constant else x.shape[1:])
    if pool:
        shape = (*shape[:-2], shape[-2] // 2, shape[-1] // 2)
    out = x.new_empty((steps, *shape))
    _launch("forward", x, (out,), steps, constant, p, pool)
    return out


def backward(x: torch.Tensor, grad_out: torch.Tensor, steps: int, constant: bool, p,
             pool: bool) -> torch.Tensor:
    """Gradient with respect to ``x`` (``x``'s shape: summed over time for a
    held current) given the gradient of :func:`forward`'s output."""
    grad_x = torch.empty_like(x)
    _launch("backward", x, (grad_out.to(x.dtype).contiguous(), grad_x), steps, constant, p, pool)
    return grad_x
