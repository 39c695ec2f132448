"""A lava-dl netx network file (``network.net``) read into integer layers
for the batched simulator: what netx and Lava's bit-accurate models would
instantiate from the same file, without Lava.

Tensors stay in NIR/torch layout, (C, H, W); the file's conv kernels are
torch-style correlations (netx flips them for Lava's convolution).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import torch

from fer2neuro.errors import GraphError
from fer2neuro.nirgraph.describe import summarise
from fer2neuro.targets.loihi import arithmetic as ar

NETX_BIAS_EXP = 6          # netx gives every CUBA neuron bias_exp = 6
NEURON_FIRST = ("type", "vThMant", "vDecay", "iDecay")     # described first; the rest as the file lists them


@dataclass
class LoihiLayer:
    kind: str                             # "input" (bias-driven neurons), "conv" or "dense"
    shape: tuple[int, ...]                # (C, H, W) or (N,)
    du: int
    dv: int
    vth: int
    bias: np.ndarray                      # effective bias (mantissa << 6), broadcast to shape
    weight: np.ndarray | None = None      # conv: (out, in, kH, kW) ints; dense: effective (out, in)
    weight_exp: int = 0
    conv: dict = field(default_factory=dict)
    flatten_input: bool = False
    depth: int = 0

    @cached_property
    def torch_weight(self) -> torch.Tensor:
        """The weights as a torch tensor in the narrowest float dtype that sums
        them exactly: float32 when every partial sum of 0/1 inputs stays below
        2^24 (float32 holds every integer up to there), else float64."""
        reach = np.abs(self.weight).reshape(self.weight.shape[0], -1).sum(1).max()
        return torch.from_numpy(self.weight).to(torch.float32 if reach < 2 ** 24 else torch.float64)


def _read(group, key, default=None):
    if key not in group:
        return default
    value = group[key][()]
    return value.decode() if isinstance(value, bytes) else value


def _neuron(group, name: str) -> tuple[int, int, int]:
    if "neuron" not in group:
        raise GraphError(f"{name}: layer without a neuron; the loihi target runs CUBA neuron layers")
    n = group["neuron"]
    kind = _read(n, "type")
    if kind not in ("CUBA", "LOIHI"):
        raise GraphError(f"{name}: neuron type {kind!r} is not supported by the loihi target (CUBA only)")
    return int(_read(n, "iDecay")) - 1, int(_read(n, "vDecay")), int(_read(n, "vThMant"))


def _pair(value) -> tuple[int, int]:
    a = np.asarray(value).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def load_netx(file, name: str | None = None) -> tuple[list[LoihiLayer], tuple[int, ...] | None]:
    """(layers, spike-input shape or None when the first layer is bias-driven).
    ``file``: a path, or a binary file object (a network quantised in
    memory); ``name`` names it in errors."""
    if isinstance(file, (str, Path)):
        file = Path(file)
        name = name or str(file)
        if not file.is_file():
            raise GraphError(f"{file}: no such netx network file")
        file = str(file)
    name = name or "netx network"
    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise GraphError(f"{name}: not a netx HDF5 network ({exc})") from None
    layers: list[LoihiLayer] = []
    input_shape = None
    flatten_next = False
    with f:
        if "layer" not in f:
            raise GraphError(f"{name}: not a netx network (no 'layer' group)")
        groups = f["layer"]
        for i in range(len(groups)):
            g = groups[str(i)]
            kind = _read(g, "type")
            where = f"{name} layer {i} ({kind})"
            if kind == "flatten":
                flatten_next = True
                continue
            shape = tuple(int(s) for s in np.asarray(_read(g, "shape")).reshape(-1))
            if kind == "input" and "neuron" not in g:
                input_shape = shape
                continue
            du, dv, vth = _neuron(g, where)
            mant = np.asarray(_read(g, "bias", 0)).astype(np.int64)
            if kind == "conv" and mant.ndim == 1:
                mant = mant.reshape(-1, *([1] * (len(shape) - 1)))
            bias = np.broadcast_to(ar.effective_bias(mant, NETX_BIAS_EXP), shape).copy()
            layer = LoihiLayer(kind=kind, shape=shape, du=du, dv=dv, vth=vth, bias=bias,
                               flatten_input=flatten_next, depth=(layers[-1].depth + 1) if layers else
                               (0 if kind == "input" else 1))
            flatten_next = False
            if kind == "dense":
                weight = np.asarray(_read(g, "weight")).astype(np.int64).reshape(int(np.prod(shape)), -1)
                shifted, bits, exp = ar.netx_weight_bits(weight)
                layer.weight, layer.weight_exp = ar.lava_dense_weights(shifted, bits), exp
            elif kind == "conv":
                weight = np.asarray(_read(g, "weight")).astype(np.int64)
                layer.weight = weight.reshape(weight.shape[:4])
                layer.conv = dict(stride=_pair(_read(g, "stride", 1)), padding=_pair(_read(g, "padding", 0)),
                                  dilation=_pair(_read(g, "dilation", 1)), groups=int(_read(g, "groups", 1)))
            elif kind != "input":
                raise GraphError(f"{where}: layer type {kind!r} is not supported by the loihi target")
            layers.append(layer)
    if not layers:
        raise GraphError(f"{name}: the network has no neuron layer")
    return layers, input_shape


def describe_netx(path: str | Path) -> dict:
    """What a netx file holds, as plain data (``fer2neuro inspect``): per
    layer its index, block type, shape, neuron (type and integer
    parameters), weight and bias (shape and range), and any other
    scalar or small setting (stride, padding, groups). Reads any netx file,
    whatever this target can run."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such netx network file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise GraphError(f"{path}: not a netx HDF5 network ({' '.join(str(exc).split())[:150]})") from None
    with f:
        if "layer" not in f or not isinstance(f["layer"], h5py.Group):
            raise GraphError(f"{path}: not a netx network (no 'layer' group)")
        groups = f["layer"]
        if not all(key.isdigit() for key in groups):
            raise GraphError(f"{path}: not a netx network (its layers are not numbered 0, 1, ...)")
        return {"layers": [_describe_layer(int(key), groups[key]) for key in sorted(groups, key=int)]}


def _describe_layer(index: int, group: h5py.Group) -> dict:
    layer = {"index": index, "type": _read(group, "type")}
    for key, item in group.items():
        if key == "type":
            continue
        if isinstance(item, h5py.Group):        # the neuron: type and integer parameters
            keys = sorted((k for k, v in item.items() if isinstance(v, h5py.Dataset)),
                          key=lambda k: NEURON_FIRST.index(k) if k in NEURON_FIRST else len(NEURON_FIRST))
            layer[key] = {k: summarise(_read(item, k)) for k in keys}
        else:
            layer[key] = summarise(_read(group, key))
    return layer
