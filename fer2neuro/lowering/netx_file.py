"""A quantised network as a lava-dl netx HDF5 file (``network.net``), the
format ``lava.lib.dl.netx.hdf5.Network`` loads: on disk in an exported Lava
folder, or in memory when a target runs a NIR graph directly (h5py writes to
and reads from file objects, so nothing touches the disk)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from fer2neuro.errors import GraphError, TargetError
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan
from fer2neuro.lowering.quantise import (QuantisedNetwork, QuantizedLayer, decay_mantissa, integer_bias_stages,
                                         integer_input_bias)


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
        """A file on disk must open as HDF5 (a truncated or damaged
        ``network.net`` is one line of error here, not h5py's traceback
        inside Lava)."""
        try:
            with h5py.File(self.open(), "r") as f:
                f["layer"]
        except (OSError, KeyError) as exc:
            raise GraphError(f"{self.description}: not a readable netx HDF5 network "
                             f"({' '.join(str(exc).split())[:160]})") from None
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
