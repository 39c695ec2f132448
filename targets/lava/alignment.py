"""Lava's per-layer delay, accounted for in one place.

Lava's Dense and Conv processes send, at each step, what they computed from
the previous step's spikes (``a_out.send(a_buff)`` before updating
``a_buff``), like Loihi's pipeline. A layer behind ``depth`` synapses
therefore emits at step ``depth + t`` (0-based) the spike that the
delay-free model emits at step ``t``.

So a run of T input steps lasts ``T + max depth`` steps (no spike of the
deepest layer is cut off), and layer k's recording is read from
``depth_k`` to ``depth_k + T``. Inputs keep flowing after step T (a bias
stays on, spike inputs are zero), but what they cause reaches each layer
only after its window has closed: layer k at step depth_k + t depends on
layer k-1 at step depth_{k-1} + t and earlier, never later.
"""
from __future__ import annotations

import numpy as np


def run_steps(timesteps: int, max_depth: int) -> int:
    """How many steps to run so the deepest layer's T steps all arrive."""
    return timesteps + max_depth


def align(recorded: np.ndarray, depth: int, timesteps: int, axis: int = 0) -> np.ndarray:
    """The T steps of a layer ``depth`` synapses deep, from a recording along ``axis``."""
    if recorded.shape[axis] < depth + timesteps:
        raise ValueError(f"recording of {recorded.shape[axis]} steps is too short for depth {depth} "
                         f"and {timesteps} steps")
    index = [slice(None)] * recorded.ndim
    index[axis] = slice(depth, depth + timesteps)
    return recorded[tuple(index)]
