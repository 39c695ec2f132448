"""Any lava-dl netx network file (``.net``) on the ``loihi`` target: read
once (network.py), run a batch at a time (simulator.py, ``schedule=False``)
exactly as lava-dl 0.6's ``netx.hdf5.Network`` runs in Lava's ``fixed_pt``
models, which ``targets/lava/netx_run.py`` does for the ``lava-fixed``
target with the same inputs and outputs.

Inputs (one rule for both targets):

* the first block is an ``input`` block with a neuron: X (T, *shape) or
  (B, T, *shape) of integers, constant over T, is that layer's
  ``bias_mant`` per sample (int16, as Lava stores it);
* otherwise X holds 0/1 spikes (T, *in) or (B, T, *in) into ``net.inp``:
  ``in`` is the input block's shape for a conv first block, the weight's
  input count for a dense first block (an input of the input block's
  (C, H, W) shape is flattened in that order).

Outputs: per netx layer index i, ``layer<i>`` (B, T, *shape) uint8 spikes
and, with ``record_all``, ``layer<i>.u`` and ``layer<i>.v`` (B, T, *shape)
int64: the state after each step. Shapes are the file's (C, H, W) order
(NIR/torch), not Lava's (W, H, C). T steps are run, the raw Lava steps
(no delay alignment): input frame t enters the first synapse at step t and
reaches the first layer's neurons at step t + 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from fer2neuro.progress import progress_bar

from fer2neuro.errors import DataError, GraphError
from fer2neuro.lowering.lava_plan import MAX_LAVA_GROUPS
from fer2neuro.targets.loihi.network import BIAS_MANT_RANGE, LoihiLayer, load_netx
from fer2neuro.targets.loihi.simulator import simulate

NETX_SUFFIX = ".net"


def is_netx_file(path) -> bool:
    return Path(path).suffix == NETX_SUFFIX and Path(path).is_file()


class NetxProgram:
    """A netx network file, ready to run batches on the loihi target."""

    target = "loihi"

    def __init__(self, path, *, reset_interval: int | None = None, reset_offset: int = 0,
                 emulate_overflow: bool = False) -> None:
        self.path = Path(path)
        self.reset_interval, self.reset_offset = reset_interval, int(reset_offset)
        self.emulate_overflow = emulate_overflow
        self.layers, declared = load_netx(self.path, reset_interval=reset_interval, reset_offset=reset_offset,
                                          wrap_bias=emulate_overflow)
        self.names = [f"layer{layer.index}" for layer in self.layers]
        for layer, name in zip(self.layers, self.names):
            if layer.kind == "conv" and layer.conv["groups"] > MAX_LAVA_GROUPS:
                raise GraphError(f"{self.path} {name}: {layer.conv['groups']} groups; Lava holds at most "
                                 f"{MAX_LAVA_GROUPS}")
        first = self.layers[0]
        self.bias_input = first.kind == "input"
        if self.bias_input:
            self.input_shape = tuple(first.shape)
            self.flat_shape = None
        elif first.kind == "conv":
            self.input_shape, self.flat_shape = tuple(declared), None
        else:
            self.input_shape = (int(first.weight.shape[1]),)
            self.flat_shape = tuple(declared) if declared is not None and \
                int(np.prod(declared)) == self.input_shape[0] and len(declared) > 1 else None

    @property
    def input_kind(self) -> str:
        return "bias" if self.bias_input else "spikes"

    def layer(self, name: str) -> LoihiLayer:
        return self.layers[self.names.index(name)]

    def prepare(self, x) -> np.ndarray:
        """X checked and batched: (B, T, *input_shape), int64 bias mantissas
        or uint8 spikes. Raises DataError (one line) for anything else."""
        x = np.asarray(x)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"input of dtype {x.dtype}: give a numeric array")
        shapes = [self.input_shape] + ([self.flat_shape] if self.flat_shape else [])
        for shape in shapes:
            if x.ndim == len(shape) + 1 and tuple(x.shape[1:]) == shape:
                x = x[None]
            if x.ndim == len(shape) + 2 and tuple(x.shape[2:]) == shape:
                break
        else:
            what = "bias mantissas for the input layer" if self.bias_input else "spikes into net.inp"
            wanted = " or ".join(f"(T, {', '.join(map(str, s))}) / (B, T, {', '.join(map(str, s))})" for s in shapes)
            raise DataError(f"input of shape {x.shape}: {self.path.name} takes {what}, {wanted}")
        x = x.reshape(*x.shape[:2], *self.input_shape)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"input of shape {x.shape}: no samples or no time steps")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError("input holds NaN or infinite values")
        if self.bias_input:
            if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
                raise DataError(f"{self.path.name}: its first block is an input neuron layer, driven by integer "
                                f"bias mantissas; the input holds non-integer values")
            x = x.astype(np.int64)
            if not (x == x[:, :1]).all():
                raise DataError(f"{self.path.name}: the input layer's bias mantissa must be constant over time "
                                f"(netx sets bias_mant once per sample); the input varies over T")
            low, high = BIAS_MANT_RANGE
            if x.min() < low or x.max() > high:
                if not self.emulate_overflow:
                    raise DataError(f"input bias mantissa {int(x.max() if x.max() > high else x.min())} outside "
                                    f"int16, which Lava's bias_mant holds (pass --emulate-overflow to wrap it "
                                    f"as Lava does)")
                x = (x + (1 << 15)) % (1 << 16) - (1 << 15)
            return x
        if not np.isin(x, (0, 1)).all():
            raise DataError(f"{self.path.name} takes spikes into net.inp: the input must hold only 0 and 1 "
                            f"(its first block is not an input neuron layer)")
        return x.astype(np.uint8)

    def run(self, x, *, record_all: bool = False, batch_size: int | None = None,
            progress: bool = False) -> dict[str, np.ndarray]:
        """{layer<i>: spikes (B, T, *shape) uint8} (+ ``.u``, ``.v`` int64
        with ``record_all``) for X (prepared or not)."""
        x = self.prepare(x)
        timesteps, step = x.shape[1], batch_size or 64
        parts, states = [], []
        for start in progress_bar(range(0, len(x), step), desc=self.target, unit="batch", disable=not progress,
                          leave=False):
            chunk = x[start:start + step]
            membranes = {} if record_all else None
            parts.append(simulate(self.layers, self.names, input_bias=chunk[:, 0] if self.bias_input else None,
                                  input_spikes=None if self.bias_input else chunk, timesteps=timesteps,
                                  emulate_overflow=self.emulate_overflow, membranes=membranes, schedule=False,
                                  currents=True))
            states.append(membranes)
        out = {}
        for name in self.names:
            out[name] = np.concatenate([p[name] for p in parts])
            if record_all:
                for key in (f"{name}.u", f"{name}.v"):
                    out[key] = np.concatenate([s[key] for s in states])
        return out
