"""A quantised network as a lava-dl netx HDF5 file (``network.net``), the
format ``lava.lib.dl.netx.hdf5.Network`` loads: on disk in an exported Lava
folder, or in memory when a target runs a NIR graph directly (h5py writes to
and reads from file objects, so nothing touches the disk)."""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from fer2neuro.errors import GraphError, TargetError, one_line
from fer2neuro.hdf5 import open_hdf5, write_hdf5
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan
from fer2neuro.lowering.quantise import (DECAY_UNITY, MAX_WEIGHT_SHIFT, VTH_MAX, QuantisedNetwork, QuantizedLayer,
                                         decay_mantissa, integer_bias_stages, integer_input_bias)
from fer2neuro.lowering.synapse_chain import MAX_LAVA_GROUPS


# A dense layer's weight exponent beyond the one netx derives from the
# integers (quantise.dense_exponent). netx does not read it: fer2neuro's
# runners add it to the synapses' exponent (lava-fixed through the Dense
# process's proc_params, loihi in its loader); a Lava user loading the file
# with netx alone must do the same.
EXTRA_WEIGHT_EXP = "fer2neuro_weight_exp"


def _write_neuron(group: h5py.Group, q: QuantizedLayer) -> None:
    n = group.create_group("neuron")
    n.create_dataset("type", data=b"CUBA")
    for key, value in (("iDecay", q.i_decay), ("vDecay", q.v_decay), ("vThMant", q.vth), ("refDelay", 1)):
        n.create_dataset(key, data=np.int64(value))
    n.create_dataset("gradedSpike", data=False)


def _channel_bias(q: QuantizedLayer, layer: LavaLayer) -> np.ndarray | None:
    """netx broadcasts a conv bias per channel; per-neuron biases it takes
    whole. The file bias is the bias once every input is on: a Lava user
    running the file gets all of it from the first step, while fer2neuro's
    runners switch its parts on in stages (``NetxNetwork.bias_stages``)."""
    if q.bias is None:
        return None
    if layer.kind == "conv":
        per_channel = q.bias.reshape(q.bias.shape[0], -1)
        if np.all(per_channel == per_channel[:, :1]):
            return per_channel[:, 0]
        raise TargetError(f"layer {layer.name}: netx takes one bias per conv channel")
    return q.bias


def write_netx(network: QuantisedNetwork, file) -> None:
    """The network as a lava-dl netx HDF5 file (layer order = data flow);
    ``file``: a path or a binary file object."""
    if isinstance(file, (str, os.PathLike)):    # through memory: h5py fails badly on a full disk (write_hdf5)
        write_hdf5(file, lambda buffer: write_netx(network, buffer))
        return
    plan, quantized = network.plan, network.layers
    with h5py.File(file, "w") as f:
        layers = f.create_group("layer")
        index = 0

        def group():
            nonlocal index
            g = layers.create_group(str(index))
            index += 1
            return g

        if not plan.direct:
            g = group()
            g.create_dataset("type", data=b"input")
            g.create_dataset("shape", data=np.array(plan.input_shape))
        for layer, q in zip(plan.layers, quantized):
            if layer.flatten_input:
                group().create_dataset("type", data=b"flatten")
            g = group()
            g.create_dataset("shape", data=np.array(layer.shape))
            _write_neuron(g, q)
            if layer.kind == "bias":
                g.create_dataset("type", data=b"input")
                continue
            recurrent = q.recurrent is not None
            g.create_dataset("type", data=b"dense_rec" if recurrent else layer.kind.encode())
            g.create_dataset("weight", data=q.weight)
            if recurrent:
                g.create_dataset("weight_rec", data=q.recurrent)
            if q.weight_exp:
                g.create_dataset(EXTRA_WEIGHT_EXP, data=np.int64(q.weight_exp))
            bias = _channel_bias(q, layer)
            if bias is not None:
                g.create_dataset("bias", data=bias)
            if layer.kind == "conv":
                for key in ("stride", "padding", "dilation"):
                    g.create_dataset(key, data=np.array(layer.conv[key]))
                g.create_dataset("groups", data=np.int64(layer.conv["groups"]))



@dataclass(frozen=True)
class NetxNetwork:
    """An integer network as lava-fixed and loihi run it: the netx file (a
    path, or its bytes) and the float plan and per-layer scales it was
    quantised with (for the direct-encoding input bias, and to scale integer
    membranes back to the float model's units)."""

    plan: LavaPlan
    scales: dict[str, float]
    netx: Path | bytes

    @classmethod
    def in_memory(cls, network: QuantisedNetwork) -> "NetxNetwork":
        buffer = io.BytesIO()
        write_netx(network, buffer)
        return cls(plan=network.plan, scales=network.scales(), netx=buffer.getvalue())

    @property
    def direct(self) -> bool:
        return self.plan.direct

    @property
    def description(self) -> str:
        return str(self.netx) if isinstance(self.netx, Path) else "the netx network"

    def check_readable(self) -> "NetxNetwork":
        """A file on disk must open as HDF5 and pass ``open_netx``'s checks
        (a truncated, damaged or edited ``network.net`` is one line of error
        here, not h5py's traceback or a wrong number inside Lava)."""
        open_netx(self.open(), self.description, what="a readable netx HDF5 network").close()
        return self

    def open(self):
        """What h5py.File and netx take: the path, or a fresh file object."""
        return str(self.netx) if isinstance(self.netx, Path) else io.BytesIO(self.netx)

    def bias_stages(self, name: str, file_bias: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """A layer's integer bias schedule (``quantise.integer_bias_stages``):
        (steps run, bias mantissa, u shift or None), each stage's bias taken
        as the file's bias (``file_bias``, what the last stage reaches) less
        what is not on yet. Without a scale for the layer (a netx file run
        with a bare plan) the file's bias goes on at the layer's depth."""
        layer = next(layer for layer in self.plan.layers if layer.name == name)
        if name not in self.scales:
            return [(layer.depth, file_bias, None)]
        stages = integer_bias_stages(layer, self.scales[name], decay_mantissa(layer, "du", layer.du))
        final = stages[-1][1]
        return [(after, file_bias - (final - bias), shift) for after, bias, shift in stages]

    def input_bias(self, frames: np.ndarray) -> np.ndarray:
        first = self.plan.layers[0].name
        return integer_input_bias(self.plan, first, self.scales[first], frames)


# ---- reading: every value in a netx file checked before anything uses it ----
#
# One check for every reader of a netx file (the loihi loader and inspect in
# targets/loihi/network.py, the lava-fixed runners before lava-dl's netx
# reads the file): the file holds no links out of itself (fer2neuro.hdf5),
# every dataset is numbers or text of a bounded size, and each field netx
# reads is of the type, shape and range netx and Lava's models take. What
# netx would do with a field (truncate, clip, broadcast) the loader copies;
# what no Lava model can hold (a 17-bit threshold of 2^40, a negative
# decay, a stride of 0, a layer of a trillion neurons) stops here.

# Bounds refused from the declared size, before an array is allocated: a
# layer of more neurons than 16 Loihi 2 chips hold (1 M each), and a dataset
# of more values (512 MiB as int64) than a layer of fer2neuro's or lava-dl's
# networks has weights by far.
MAX_LAYER_NEURONS = 1 << 24
MAX_DATASET_VALUES = 1 << 26
INT32 = 1 << 31                  # Lava holds weights, delays and bias mantissas in int32 (or narrower) vars
# CUBA neuron fields (lava-nc 0.10 lif/models.py, netx's get_neuron_params):
# vth is "unsigned 17-bit"; du = iDecay - 1 and dv = vDecay are 12-bit
# decays that Lava's model applies as (4096 - (du + 1)) and (4096 - dv):
# 0..4096 each (netx's own default integrator has iDecay 0, fer2neuro's
# threshold layers vDecay 4096)
NEURON_RANGES = {"vThMant": (0, VTH_MAX, "Lava's LIF threshold mantissa is an unsigned 17-bit integer"),
                 "vDecay": (0, DECAY_UNITY, "a decay out of 4096"),
                 "iDecay": (0, DECAY_UNITY, "a decay out of 4096")}
SPIKING_NEURONS = ("CUBA", "LOIHI")          # the types netx makes a LIF of
# Conv settings (lava-nc's Conv models hold them as int8): (low, high, values)
CONV_RANGES = {"stride": (1, 127, 2), "padding": (0, 127, 2), "dilation": (1, 127, 2),
               "groups": (1, MAX_LAVA_GROUPS, 1)}
CONV_WHY = "Lava's Conv holds it as an 8-bit integer"
SYNAPSE_FIELDS = ("weight", "weight_rec", "bias", "delay")
# fer2neuro's extra dense weight exponent: what quantise.dense_exponent writes
EXTRA_EXP_RANGE = (-MAX_WEIGHT_SHIFT, 0)


def open_netx(file, name: str, what: str = "a netx HDF5 network") -> h5py.File:
    """The netx file (a path or a binary file object) open for reading,
    after ``check_netx``; the caller closes it. Any fault is a one-line
    GraphError naming ``name`` and the field."""
    f = open_hdf5(file, name, GraphError, what)
    try:
        check_netx(f, name)
    except BaseException:
        f.close()
        raise
    return f


def check_netx(f: h5py.File, name: str) -> None:
    """Every value of the open netx file ``f`` checked (see above), before
    any reader uses one; the first fault raises GraphError."""
    layers = f.get("layer")
    if not isinstance(layers, h5py.Group):
        raise GraphError(f"{name}: not a netx network (no 'layer' group)")
    if not all(key.isdigit() and len(key) < 10 for key in layers):      # readers sort them with int()
        raise GraphError(f"{name}: not a netx network (its layers are not numbered 0, 1, ...)")
    for key in layers:
        g = layers[key]
        if not isinstance(g, h5py.Group):
            raise GraphError(f"{name}: {g.name} is not a group (a netx layer is a group of fields)")
        _check_layer(g, name)


def _fields(g: h5py.Group, name: str, depth: int = 1) -> dict:
    """A layer's fields, read: datasets, and groups of datasets (the neuron;
    dense_comp's weight/real and weight/imag) one level down."""
    values = {}
    for key, item in g.items():
        if isinstance(item, h5py.Dataset):
            values[key] = _dataset(item, name)
        elif isinstance(item, h5py.Group) and depth > 0:
            values[key] = _fields(item, name, depth - 1)
        else:
            raise GraphError(f"{name}: {item.name} is {'a group' if isinstance(item, h5py.Group) else 'a named type'}"
                             f" where a netx file has a dataset{' or a group' if depth else ''}")
    return values


def _check_layer(g: h5py.Group, name: str) -> None:
    values = _fields(g, name)
    where = f"{name}: {g.name}"
    _text(values.get("type"), f"{where}/type")
    if "shape" in values:
        shape = _integers(values["shape"], f"{where}/shape", 1, MAX_LAYER_NEURONS, (1, 3),
                          "a layer's size along an axis, at most 16 Loihi 2 chips' neurons")
        neurons = math.prod(int(s) for s in shape)          # Python ints: numpy's product could wrap to 0
        if neurons > MAX_LAYER_NEURONS:
            raise GraphError(f"{where}/shape {tuple(int(s) for s in shape)} is {neurons} neurons, more than "
                             f"{MAX_LAYER_NEURONS} (more than 16 Loihi 2 chips hold)")
    block = values.get("type")
    for key in SYNAPSE_FIELDS:
        if key in values and not (isinstance(values[key], dict) and block == "dense_comp"):   # weight/real, /imag
            array = _numbers(values[key], f"{where}/{key}")
            if array.size and (array.max() >= INT32 or array.min() <= -INT32):
                extreme = array.max() if array.max() >= INT32 else array.min()
                raise GraphError(f"{where}/{key} holds {_value(extreme)}, beyond the 32-bit integers Lava holds "
                                 f"weights, delays and biases in")
    for key, (low, high, count) in CONV_RANGES.items():
        if key in values:
            _integers(values[key], f"{where}/{key}", low, high, (1, count), CONV_WHY)
    if EXTRA_WEIGHT_EXP in values:
        _integers(values[EXTRA_WEIGHT_EXP], f"{where}/{EXTRA_WEIGHT_EXP}", *EXTRA_EXP_RANGE, (1, 1),
                  "the right shift fer2neuro adds to a dense layer's synaptic sums")
    neuron = values.get("neuron")
    if neuron is not None and not isinstance(neuron, dict):
        raise GraphError(f"{where}/neuron is a dataset; netx reads a group of neuron fields")
    if neuron is not None:
        kind = _text(neuron.get("type"), f"{where}/neuron/type")
        if kind is None or kind in SPIKING_NEURONS:         # SDNN, RF...: other fields, refused by the loader
            for key, (low, high, why) in NEURON_RANGES.items():
                if key in neuron:
                    _integers(neuron[key], f"{where}/neuron/{key}", low, high, (1, 1), why)


def _dataset(d: h5py.Dataset, name: str):
    """A dataset's value (a numpy array, or str for text), read only after
    its declared size and element type are checked."""
    where = f"{name}: {d.name}"
    try:                                          # h5py raises TypeError for a type it cannot map
        shape, size, dtype = d.shape, d.size, d.dtype
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise GraphError(f"{where} cannot be read ({one_line(exc, 120)})") from None
    if shape is None or size == 0:                # no netx field is empty (netx takes max/min of each)
        raise GraphError(f"{where} holds no values")
    if size > MAX_DATASET_VALUES:
        raise GraphError(f"{where} declares {size} values (shape {shape}), more than the {MAX_DATASET_VALUES} "
                         f"a netx field holds here")
    text = h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU"
    if not text and dtype.kind not in "biuf":
        raise GraphError(f"{where} holds {dtype} values, neither numbers nor text")
    try:
        value = d[()]
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise GraphError(f"{where} cannot be read ({one_line(exc, 120)})") from None
    if text:
        flat = np.asarray(value, dtype=object).reshape(-1)
        if flat.size != 1:
            return _Texts(flat.size)
        item = flat[0]
        try:
            return item.decode() if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise GraphError(f"{where} holds text that is not UTF-8") from None
    value = np.asarray(value)
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        # a NaN or infinite weight, bias or threshold becomes an arbitrary integer when truncated
        raise GraphError(f"{name}: {d.name} holds non-finite values")
    return value


class _Texts:
    """A text dataset of several strings: no netx field is one."""

    def __init__(self, count: int) -> None:
        self.count = count


def _text(value, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, _Texts):
        raise GraphError(f"{where} holds {value.count} strings; netx reads one")
    if isinstance(value, dict):
        raise GraphError(f"{where} is a group, not text")
    raise GraphError(f"{where} holds numbers, not text")


def _numbers(value, where: str) -> np.ndarray:
    if isinstance(value, (str, _Texts)):
        raise GraphError(f"{where} holds text, not numbers")
    if isinstance(value, dict):
        raise GraphError(f"{where} is a group, not numbers")
    return value


def _value(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e18 else f"{x:.6g}"


def _integers(value, where: str, low: int, high: int, counts: tuple[int, int], why: str = "") -> np.ndarray:
    """Whole numbers in [low, high], ``counts[0]``..``counts[1]`` of them."""
    array = _numbers(value, where).reshape(-1)
    if not counts[0] <= array.size <= counts[1]:
        want = f"{counts[0]}" if counts[0] == counts[1] else f"{counts[0]} to {counts[1]}"
        raise GraphError(f"{where} holds {array.size} values; netx reads {want}")
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        bad = array[array != np.round(array)][0]
        raise GraphError(f"{where} is {_value(bad)}, not a whole number")
    outside = (array < low) | (array > high)
    if outside.any():
        reason = f" ({why})" if why else ""
        raise GraphError(f"{where} is {_value(array[outside][0])}, outside {low}..{high}{reason}")
    return array.astype(np.int64)
