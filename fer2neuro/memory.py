"""Sizes: the upper bounds of the numbers that set how much a run holds
(steps, samples, seeds), and the memory a run will need, estimated before
it allocates and compared with what the machine has.

A spiking network holds T steps of its neurons for every sample of a batch
at once (a recording, the tensors autograd keeps for the backward pass, an
ONNX graph unrolled over T). A T or a sample count too large for the machine
would otherwise end, seconds or minutes later, in a MemoryError or a
"can't allocate memory" traceback, after the command has started writing.
Each command asks :func:`check_fits` first, with :func:`steps_bytes`.

The estimate is a lower bound: it counts only the arrays the run cannot do
without (one value per neuron, step and sample at the dtype the run uses),
not the copies a library makes on the way. A refusal is therefore never
wrong; a run just below the limit may still need more than estimated.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

from fer2neuro.errors import ConfigError, ResourceError
from fer2neuro.nirgraph.flat import flatten_graph, known_shape

# Far beyond any network here (the paper runs 4 to 25 steps; fer2neuro's
# interop peers at most thousands): a bound that click can check when the
# command line is parsed, before any estimate. The memory check decides below it.
MAX_TIMESTEPS = 100_000
MAX_SAMPLES = 1_000_000      # samples of one verification (FER2013 has 35,887 faces)
# numpy's legacy seeding and the synthetic data use 32 bits of a seed; torch
# takes 64 (training adds 7919 x rank): every seed in this range means one stream.
MAX_SEED = 2**32 - 1

MEMINFO = "/proc/meminfo"


def steps_bytes(*, timesteps: int, values: int, batch: int, itemsize: int, copies: int = 1) -> int:
    """Bytes of ``copies`` arrays holding ``values`` numbers per step (the
    neurons of every layer, or an input frame) for ``timesteps`` steps of
    ``batch`` samples, ``itemsize`` bytes each (8: float64, 4: float32,
    1: uint8 spikes)."""
    return int(timesteps) * int(values) * int(batch) * int(itemsize) * int(copies)


def checked_timesteps(timesteps, source: str) -> int:
    """A step count read from a file (a graph's or a checkpoint's
    metadata), within the bound every -T option has."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, numbers.Integral) or \
            not 1 <= timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"{source}: timesteps {timesteps!r} is not a step count from 1 to {MAX_TIMESTEPS}; "
                          f"give -T")
    return int(timesteps)


def graph_values(graph) -> int:
    """Numbers one step of one sample holds in a NIR graph (nir.NIRGraph or
    FlatGraph): every node's output, where its type gives its shape, else
    its parameters' (a neuron's threshold; a weight's rows): a lower bound."""
    flat = flatten_graph(graph) if not hasattr(graph, "predecessors") else graph
    total = 0
    for node in flat.nodes.values():
        shape = known_shape(getattr(node, "output_type", None))
        if shape is not None:
            total += math.prod(shape)
        else:
            sizes = [v.shape[0] if v.ndim > 1 else v.size for v in vars(node).values() if isinstance(v, np.ndarray)]
            total += max(sizes, default=0)
    return total


def model_values(config) -> int:
    """Numbers one step of one sample holds in the network ``config``
    describes (fer2neuro.model.config.ModelConfig): its input and every
    layer's output."""
    from fer2neuro.model.layers import network_layers    # here: the NIR-side modules import this one

    layers = network_layers(config)
    return math.prod(layers[0].input_shape) + sum(math.prod(layer.shape) for layer in layers)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a run can still take: a CUDA device's free memory, else the
    host's MemAvailable (/proc/meminfo: free memory plus the caches the
    kernel can drop), else free pages (sysconf); None where nothing says."""
    if str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, ValueError):
            pass                        # no such device: the command's own check says so
    try:
        with open(MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024          # given in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(nbytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if nbytes < 1024:
        return f"{int(nbytes)} bytes"
    power = min(int(math.log(nbytes, 1024)), len(units) - 1)
    return f"{nbytes / 1024 ** power:.1f} {units[power]}"


def check_fits(needed: int, what: str, lower: str, device: str = "cpu") -> None:
    """Raise a one-line ResourceError when ``needed`` bytes (an estimate,
    ``what`` the run holds) exceed what ``device`` has available; ``lower``
    names the options that make it smaller."""
    available = available_bytes(device)
    if available is not None and needed > available:
        where = "this machine has" if not str(device).startswith("cuda") else f"{device} has"
        raise ResourceError(f"{what} needs at least {human(needed)} of memory, more than the {human(available)} "
                            f"{where} available: lower {lower}")
