"""Float helpers the dialects (and the ``--for`` rewrites of
interop/for_peer) share: a field's value as float64, the float nearest a
guess that makes a peer's arithmetic give an exact value, and the
array-generic operations of the dialects' steps (numpy arrays for the nir
target, torch tensors for the ONNX lowering)."""
from __future__ import annotations

import sys

import numpy as np


def f64(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def nearest_solution(f, target, x0, ulps: int = 64):
    """Elementwise, the float nearest ``x0`` (within ``ulps`` steps) for
    which ``f(x) == target`` exactly; ``x0`` where there is none. -> (x,
    found)."""
    x0 = np.asarray(x0, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), x0.shape)
    with np.errstate(all="ignore"):
        found = f(x0) == target
        best = x0.copy()
        down, up = x0.copy(), x0.copy()
        for _ in range(ulps):
            if found.all():
                break
            down, up = np.nextafter(down, -np.inf), np.nextafter(up, np.inf)
            for cand in (down, up):
                ok = ~found & (f(cand) == target)
                best = np.where(ok, cand, best)
                found = found | ok
    return best, found


# --- array-generic (numpy arrays for the nir target, torch tensors for the
# ONNX lowering) ----------------------------------------------------------------

def loaded_torch():
    """torch where it is imported already (a tensor means it is), else None."""
    return sys.modules.get("torch")


def is_tensor(x) -> bool:
    torch = loaded_torch()
    return torch is not None and isinstance(x, torch.Tensor)


def floor(x):
    """np.floor for arrays, torch.floor for tensors (exact in both)."""
    if is_tensor(x):
        return loaded_torch().floor(x)
    return np.floor(x)
