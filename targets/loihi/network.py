"""A lava-dl netx network file (``network.net``) read into integer layers
for the batched simulator: what netx (lava-dl 0.6 ``netx.hdf5.Network``)
and Lava's bit-accurate models would instantiate from the same file,
without Lava.

Every value is checked before it is read here (``open_netx``,
lowering/netx_file.py: no links out of the file, numbers of bounded size,
neuron and conv settings in the ranges Lava's models take); this module
copies what netx does with values that pass.

Tensors stay in NIR/torch layout, (C, H, W): the file's own order (netx
reverses it into Lava's (W, H, C)); the file's conv kernels are
torch-style correlations (netx flips them for Lava's convolution).

What netx builds, and this loader copies (lava-dl 0.6, lava-nc 0.10):

* ``input`` with a neuron: a LIF population with no synaptic input (netx
  leaves the block's ``inp`` unconnected); its ``bias``/``weight`` datasets
  are ignored (netx keeps them as an unused "transform"), so it is driven
  only by its ``bias_mant`` (``kind == "input"``). ``input`` without a
  neuron: only declares the spike input shape.
* ``dense`` / ``dense_rec``: weights truncated to integers, netx's
  ``optimize_weight_bits`` (for ``dense_rec`` on ``hstack(weight,
  weight_rec)``, one bit count and exponent for both), then each Lava
  ``Dense`` re-derives its own sign mode, clips to 8 bits and drops the
  low bits. A dense block without a neuron gets netx's default
  non-leaky integrator (iDecay 0, vDecay 4096, vThMant 2^17).
* ``delay`` on a dense block: Lava's ``DelayDense`` (netx's broadcasting of
  a scalar or 1-D delay, clip to [0, 62] when the largest exceeds 62,
  truncation to int). ``dense_rec`` with delays: netx gives the recurrent
  synapse the *input* synapse's delay matrix and passes no weight exponent
  to either synapse (its delay branch drops ``weight_exp``).
* ``conv``: raw integer weights, no exponent, no clipping; the sum wraps to
  24 bits (Lava's ``signed_clamp``).
* Lava stores ``bias_mant`` as int16: a mantissa outside it wraps.
* ``reset_interval`` / ``reset_offset`` (``Network`` arguments, not in the
  file): every neuron is a ``LIFReset``; netx starts the offset at
  ``reset_offset + 1`` and adds 1 per layer; Lava zeroes u and v at the
  start of each step t with ``t % interval == offset % interval``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import torch

from fer2neuro.errors import GraphError
from fer2neuro.lowering.netx_file import EXTRA_WEIGHT_EXP, open_netx
from fer2neuro.nirgraph.describe import summarise
from fer2neuro.targets.loihi import arithmetic as ar

NETX_BIAS_EXP = 6          # netx gives every CUBA neuron bias_exp = 6
NETX_MAX_DELAY = 62        # netx clamps delays to 62 and builds every DelayDense with max_delay=62
NEURON_FIRST = ("type", "vThMant", "vDecay", "iDecay")     # described first; the rest as the file lists them
# netx's neuron for a dense block without one: a non-leaky integrator
NETX_DEFAULT_NEURON = {"type": "CUBA", "iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}
# block types that lava-dl netx 0.6 itself cannot run (NotImplementedError or a missing method there)
NETX_UNSUPPORTED = ("pool", "convT", "unpool", "average", "concat", "dense_comp")
BIAS_MANT_RANGE = (-(1 << 15), (1 << 15) - 1)        # Lava's int16 bias_mant


def exact_float(weight: np.ndarray) -> torch.Tensor:
    """Integer weights as a torch tensor in the narrowest float dtype that
    sums them exactly: float32 when every partial sum of 0/1 inputs stays
    below 2^24 (float32 holds every integer up to there), else float64."""
    reach = np.abs(weight).reshape(weight.shape[0], -1).sum(1).max() if weight.size else 0
    return torch.from_numpy(np.ascontiguousarray(weight)).to(torch.float32 if reach < 2 ** 24 else torch.float64)


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
    # dense_rec: effective recurrent weights (N, N); their output of step n's
    # spikes reaches the neurons at step n + 1, shifted by weight_exp_rec
    weight_rec: np.ndarray | None = None
    weight_exp_rec: int = 0
    # Lava's DelayDense: per-synapse delays (out, in) (and the recurrent
    # synapse's (N, N)); delay d delivers step n's input at step n + 1 + d
    delays: np.ndarray | None = None
    delays_rec: np.ndarray | None = None
    reset_interval: int | None = None     # LIFReset: u, v zeroed before step t when t % interval == offset
    reset_offset: int = 0
    # fer2neuro's bias schedule for a graph it quantised: (steps run, effective
    # bias (<< 6), u shift or None) per stage; None: the file's bias from step depth + 1
    stages: list | None = None
    index: int = -1                       # the block's index in the file's 'layer' group
    block: str = ""                       # the file's block type (input, conv, dense, dense_rec)

    @cached_property
    def torch_weight(self) -> torch.Tensor:
        return exact_float(self.weight)

    @cached_property
    def torch_weight_rec(self) -> torch.Tensor:
        return exact_float(self.weight_rec)


def _read(group, key, default=None):
    """A field of a file ``open_netx`` checked (numbers finite and in range)."""
    if key not in group:
        return default
    value = group[key][()]
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU" and value.size >= 1:
        value = value.reshape(-1)[0]             # slayer writes strings as 1-element arrays
    return value.decode() if isinstance(value, bytes) else value


def _type(group) -> str:
    kind = _read(group, "type")
    return str(kind) if kind is not None else "<no type>"


def _neuron(group, name: str, kind: str) -> tuple[int, int, int]:
    if "neuron" in group:
        n = group["neuron"]
        params = {key: _read(n, key) for key in ("type", "iDecay", "vDecay", "vThMant")}
    elif kind == "dense":
        params = NETX_DEFAULT_NEURON
    else:
        raise GraphError(f"{name}: layer without a neuron; the loihi target runs CUBA neuron layers")
    if params["type"] not in ("CUBA", "LOIHI"):
        raise GraphError(f"{name}: neuron type {params['type']!r} is not supported by the loihi target (CUBA only)")
    missing = [key for key, value in params.items() if value is None]
    if missing:
        raise GraphError(f"{name}: neuron without {', '.join(missing)}")
    return int(params["iDecay"]) - 1, int(params["vDecay"]), int(params["vThMant"])


def _pair(value) -> tuple[int, int]:
    a = np.asarray(value).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _bias_mantissa(g, shape: tuple[int, ...], where: str, wrap: bool) -> np.ndarray:
    """The block's bias mantissa in NIR layout, as netx's ``_neuron`` places
    it (a dense block: broadcast to N; a conv block: one per neuron in
    Lava's (W, H, C) order, or one per channel) and Lava stores it (int16)."""
    if "bias" not in g:
        return np.zeros(shape, np.int64)
    mant = np.asarray(_read(g, "bias")).astype(np.int64)          # netx: .astype(int), truncation
    lava_shape = tuple(reversed(shape))
    try:
        if len(shape) == 1:
            mant = np.broadcast_to(mant, shape)
        elif mant.shape == lava_shape:                          # per neuron, Lava's (W, H, C) order
            mant = mant.transpose(tuple(reversed(range(mant.ndim))))
        elif mant.ndim >= 1 and mant.shape[0] == shape[0]:      # per channel
            mant = np.broadcast_to(mant, lava_shape).transpose(tuple(reversed(range(len(shape)))))
        else:
            raise ValueError
    except ValueError:
        raise GraphError(f"{where}: bias of shape {tuple(mant.shape)} does not fit neurons {lava_shape} "
                         f"(W, H, C) as netx places it") from None
    low, high = BIAS_MANT_RANGE
    if mant.size and (mant.min() < low or mant.max() > high):
        if not wrap:
            raise GraphError(f"{where}: bias mantissa {int(mant.max() if mant.max() > high else mant.min())} "
                             f"outside int16; Lava stores bias_mant as int16 and wraps it (pass "
                             f"--emulate-overflow to do the same)")
        mant = (mant + (1 << 15)) % (1 << 16) - (1 << 15)
    return np.ascontiguousarray(mant)


def _delays(g, weight: np.ndarray, where: str) -> np.ndarray | None:
    """netx's delay handling for a dense block: clip to [0, 62] when the
    largest exceeds 62, a scalar for every synapse, a 1-D vector per output
    (when its length is the output count) else per input, truncated to int
    by Lava's DelayDense, which rejects negative delays."""
    if "delay" not in g:
        return None
    delay = g["delay"][()]
    if np.max(delay) > NETX_MAX_DELAY:
        delay = np.clip(delay, 0, NETX_MAX_DELAY)
    if np.ndim(delay) == 0:
        delay = delay * np.ones_like(weight)
    elif np.ndim(delay) == 1:
        n = np.size(delay)
        if n == weight.shape[0]:
            delay = np.repeat(np.reshape(delay, (-1, 1)), weight.shape[1], axis=1)
        elif n == weight.shape[1]:
            delay = np.repeat(np.reshape(delay, (1, -1)), weight.shape[0], axis=0)
        else:
            raise GraphError(f"{where}: delay of shape {np.shape(delay)} fits neither the {weight.shape[0]} "
                             f"outputs nor the {weight.shape[1]} inputs")
    delay = np.asarray(delay).astype(np.int64)
    if delay.shape != weight.shape:
        raise GraphError(f"{where}: delay of shape {delay.shape} for weights {weight.shape}")
    if delay.min() < 0:
        raise GraphError(f"{where}: negative delay {int(delay.min())} (Lava's DelayDense rejects it)")
    return delay


def _dense_weights(weight: np.ndarray, where: str) -> tuple[np.ndarray, int, int]:
    if weight.size == 0 or (weight.max() == 0 and weight.min() == 0):
        raise GraphError(f"{where}: all weights are zero; netx's optimize_weight_bits cannot scale them "
                         f"(lava-dl fails to load this block)")
    return ar.netx_weight_bits(weight)


def _conv_output(in_shape, out_channels, kernel, conv) -> tuple[int, int, int]:
    size = []
    for axis in range(2):
        n = in_shape[1 + axis] + 2 * conv["padding"][axis] - conv["dilation"][axis] * (kernel[axis] - 1) - 1
        size.append(n // conv["stride"][axis] + 1)
    return out_channels, size[0], size[1]


def _shape(g, where: str) -> tuple[int, ...]:
    if "shape" not in g:
        raise GraphError(f"{where}: no 'shape'")
    return tuple(int(s) for s in np.asarray(_read(g, "shape")).reshape(-1))


def _matrix(g, key: str, rows: int, where: str) -> np.ndarray:
    if key not in g:
        raise GraphError(f"{where}: no '{key}'")
    weight = np.asarray(_read(g, key)).astype(np.int64)          # netx: .astype(int), truncation
    if weight.ndim == 1 and weight.size % rows == 0:              # netx: reshape(shape[0], -1)
        weight = weight.reshape(rows, -1)
    if weight.ndim != 2 or weight.shape[0] != rows:
        raise GraphError(f"{where}: {key} of shape {weight.shape} for {rows} neurons")
    return weight


def load_netx(file, name: str | None = None, *, reset_interval: int | None = None, reset_offset: int = 0,
              wrap_bias: bool = False) -> tuple[list[LoihiLayer], tuple[int, ...] | None]:
    """(layers, the declared spike-input shape, or None when there is none
    (the first layer is bias-driven, or a dense layer takes the input
    directly)). ``file``: a path, or a binary file object (a network
    quantised in memory); ``name`` names it in errors. ``reset_interval`` /
    ``reset_offset``: netx ``Network``'s arguments of the same names.
    ``wrap_bias``: wrap bias mantissas outside int16 as Lava stores them
    (else an error)."""
    if isinstance(file, (str, Path)):
        file = Path(file)
        name = name or str(file)
        if not file.is_file():
            raise GraphError(f"{file}: no such netx network file")
        file = str(file)
    name = name or "netx network"
    if reset_interval is not None and int(reset_interval) < 1:
        raise GraphError(f"{name}: reset interval {reset_interval} (must be at least 1)")
    f = open_netx(file, name)                 # every value checked: links, types, sizes, ranges
    layers: list[LoihiLayer] = []
    input_shape = None
    flatten_next = False
    offset = reset_offset + 1                   # netx: "time starts from 1 in hardware", then +1 per layer
    with f:
        groups = f["layer"]
        if sorted(groups, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(groups))]:
            raise GraphError(f"{name}: not a netx network (its layers are not numbered 0, 1, ...)")
        for i in range(len(groups)):
            g = groups[str(i)]
            kind = _type(g)
            where = f"{name} layer {i} ({kind})"
            if kind in NETX_UNSUPPORTED:
                raise GraphError(f"{name} layer {i}: block type {kind!r} is not supported (lava-dl netx 0.6 "
                                 f"cannot run it either)")
            if kind not in ("input", "flatten", "conv", "dense", "dense_rec"):
                raise GraphError(f"{name} layer {i}: unknown block type {kind!r}")
            if kind == "flatten":
                flatten_next = True
                continue
            shape = _shape(g, where)
            if kind == "input" and "neuron" not in g:
                if not layers:
                    input_shape = shape
                continue
            if kind == "input" and layers:
                raise GraphError(f"{where}: an input block with a neuron after other layers (netx leaves it "
                                 f"unconnected)")
            if kind == "input" and any(key in g and np.size(g[key][()]) != 1 for key in ("weight", "bias")):
                raise GraphError(f"{where}: an input block's weight and bias must be single numbers (netx reads "
                                 f"them with int())")
            dense = kind in ("dense", "dense_rec")
            if dense:
                shape = (int(np.prod(shape)),)
            du, dv, vth = _neuron(g, where, "dense" if dense else kind)
            bias = np.zeros(shape, np.int64) if kind == "input" else _bias_mantissa(g, shape, where, wrap_bias)
            layer = LoihiLayer(kind="dense" if dense else kind, shape=shape, du=du, dv=dv, vth=vth,
                               bias=ar.effective_bias(bias, NETX_BIAS_EXP),
                               depth=(layers[-1].depth + 1) if layers else (0 if kind == "input" else 1),
                               index=i, block=kind)
            previous = layers[-1].shape if layers else input_shape
            if dense:
                _load_dense(layer, g, where, previous if layers else None, flatten_next and bool(layers))
                flatten_next = False
            elif kind == "conv":
                _load_conv(layer, g, where, previous)
            if reset_interval is not None:
                layer.reset_interval, layer.reset_offset = int(reset_interval), offset % int(reset_interval)
            offset += 1
            layers.append(layer)
    if not layers:
        raise GraphError(f"{name}: the network has no neuron layer")
    return layers, input_shape


def _load_dense(layer: LoihiLayer, g, where: str, previous: tuple[int, ...] | None, flatten: bool) -> None:
    n = layer.shape[0]
    weight = _matrix(g, "weight", n, where)
    if previous is not None:
        if flatten and len(previous) != 3:
            raise GraphError(f"{where}: a flatten after a layer of shape {previous} (netx flattens (W, H, C) "
                             f"outputs only)")
        if not flatten and len(previous) != 1:
            raise GraphError(f"{where}: a dense block after a layer of shape {previous} without a flatten block "
                             f"(netx cannot connect them)")
        if weight.shape[1] != int(np.prod(previous)):
            raise GraphError(f"{where}: weight of shape {weight.shape}, but the layer before has "
                             f"{int(np.prod(previous))} neurons")
    layer.flatten_input = flatten
    if layer.block == "dense_rec":
        weight_rec = _matrix(g, "weight_rec", n, where)
        if weight_rec.shape != (n, n):
            raise GraphError(f"{where}: weight_rec of shape {weight_rec.shape} for {n} neurons")
        shifted, bits, exp = _dense_weights(np.hstack((weight, weight_rec)), where)
        shifted, shifted_rec = shifted[:, :weight.shape[1]], shifted[:, weight.shape[1]:]
        # each Lava Dense re-derives its own sign mode: clip and truncate each part on its own
        layer.weight_rec = ar.lava_dense_weights(shifted_rec, bits)
    else:
        shifted, bits, exp = _dense_weights(weight, where)
    exp += int(_read(g, EXTRA_WEIGHT_EXP, 0))          # fer2neuro's own exponent on top of netx's
    layer.weight, layer.weight_exp = ar.lava_dense_weights(shifted, bits), exp
    layer.weight_exp_rec = exp
    layer.delays = _delays(g, shifted, where)
    if layer.delays is not None and layer.weight_rec is not None:
        if layer.delays.shape != layer.weight_rec.shape:
            raise GraphError(f"{where}: netx gives the recurrent synapse the input synapse's delays "
                             f"{layer.delays.shape}, which do not fit weight_rec {layer.weight_rec.shape} "
                             f"(Lava's DelayDense rejects them)")
        layer.delays_rec = layer.delays
        layer.weight_exp = layer.weight_exp_rec = 0      # netx's RecurrentDense delay branch drops weight_exp


def _load_conv(layer: LoihiLayer, g, where: str, previous: tuple[int, ...] | None) -> None:
    if previous is None:
        raise GraphError(f"{where}: a conv block with no input shape before it (netx: 'Input shape could not be "
                         f"inferred')")
    if len(previous) != 3 or len(layer.shape) != 3:
        raise GraphError(f"{where}: a conv block from {previous} to {layer.shape}; both must be (C, H, W)")
    for key in ("weight", "stride", "padding", "dilation", "groups"):
        if key not in g:
            raise GraphError(f"{where}: no '{key}' (netx needs it)")
    weight = np.asarray(_read(g, "weight")).astype(np.int64)
    if weight.ndim < 4 or any(s != 1 for s in weight.shape[4:]):
        raise GraphError(f"{where}: weight of shape {weight.shape}, not (out, in, kH, kW)")
    layer.weight = weight.reshape(weight.shape[:4])
    layer.conv = dict(stride=_pair(_read(g, "stride")), padding=_pair(_read(g, "padding")),
                      dilation=_pair(_read(g, "dilation")), groups=int(np.asarray(_read(g, "groups")).reshape(-1)[0]))
    groups = layer.conv["groups"]
    if groups < 1 or layer.weight.shape[1] * groups != previous[0] or layer.weight.shape[0] % groups:
        raise GraphError(f"{where}: weight {layer.weight.shape} with {groups} groups does not take {previous[0]} "
                         f"input channels")
    out = _conv_output(previous, layer.weight.shape[0], layer.weight.shape[2:], layer.conv)
    if out != tuple(layer.shape):
        raise GraphError(f"{where}: the convolution of {previous} gives {out}, but the block's shape is "
                         f"{tuple(layer.shape)}")


def describe_netx(path: str | Path) -> dict:
    """What a netx file holds, as plain data (``fer2neuro inspect``): per
    layer its index, block type, shape, neuron (type and integer
    parameters), weight and bias (shape and range), and any other
    scalar or small setting (stride, padding, groups). Reads any netx file,
    whatever this target can run."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such netx network file")
    with open_netx(str(path), str(path)) as f:        # every value checked first, as the targets do
        groups = f["layer"]
        return {"layers": [_describe_layer(int(key), groups[key]) for key in sorted(groups, key=int)]}


def _describe_layer(index: int, group: h5py.Group) -> dict:
    layer = {"index": index, "type": _read(group, "type")}
    for key, item in group.items():
        if key == "type":
            continue
        if isinstance(item, h5py.Group) and key != "neuron":     # netx reads no other group (dense_comp's
            layer[key] = f"<group of {len(item)}>"                # weight/real and weight/imag aside)
        elif isinstance(item, h5py.Group):      # the neuron: type and integer parameters
            keys = sorted((k for k, v in item.items() if isinstance(v, h5py.Dataset)),
                          key=lambda k: NEURON_FIRST.index(k) if k in NEURON_FIRST else len(NEURON_FIRST))
            layer[key] = {k: summarise(_read(item, k)) for k in keys}
        else:
            layer[key] = summarise(_read(group, key))
    return layer
