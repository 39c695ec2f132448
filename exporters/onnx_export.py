"""``fer2neuro export --target onnx``: the SNN unrolled over T as a plain
ONNX graph (opset 17), run by onnxruntime.

The graph computes what the trained model computes, in float32, with the
model's own operations in the model's own order: conv + BatchNorm (not
folded), max pooling, linear layers, and each neuron's update written out
for every step by the model's own step function,
``fer2neuro.model.neuron_step.neuron_step`` (SPEC §2 as snnTorch's ``Leaky``
rounds it)::

    h = beta * v + I * input_scale     (IF: 1, 1; LIF: 1 - 1/tau, 1/tau)
    s = h > v_threshold;   v = h - s * h

In float64 by default, so that it matches the float64 reference spike for
spike (onnxruntime has no float64 Conv or BatchNormalization, so those are
written as im2col + MatMul and element-wise ops); ``precision="float32"``
keeps the trained model's dtype and ONNX's Conv, which is faster but differs
from torch's float32 at a few threshold ties (docs/deployment.md). Exported with the
TorchScript exporter (``dynamo=False``: the dynamo exporter needs
onnxscript, not installed here), written atomically, checked with
``onnx.checker``.

Inputs: ``input``, (B, 1, 48, 48) images with direct encoding (conv1 + BN
run once, as in training), (B, T, 1, 48, 48) spikes with Poisson. Outputs:
one per spiking layer (``if1``, ``pool1``, ... ``lif_out``), (B, T, ...).
The encoder, T and class names are in the model's metadata.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from fer2neuro.atomic import atomic_path
from fer2neuro.errors import CheckpointError, GraphError
from fer2neuro.model.network import SPIKING_LAYERS, ConvSNN
from fer2neuro.model.neuron_step import neuron_step

OPSET = 17
FORMAT = "fer2neuro.onnx"


class UnrolledSNN(nn.Module):
    """ConvSNN with every time step written out: traceable to ONNX.

    In float64 the convolutions are written as im2col (``Unfold``, which the
    exporter lowers to Pad/Gather/Concat) and a MatMul, and BatchNorm as
    element-wise ops: onnxruntime implements neither Conv nor
    BatchNormalization in float64, but it does MatMul and element-wise ops."""

    def __init__(self, model: ConvSNN, encoder: str, timesteps: int, membranes: bool = False) -> None:
        super().__init__()
        self.m, self.encoder, self.timesteps, self.membranes = model, encoder, timesteps, membranes
        self.voltages: dict[str, list[torch.Tensor]] = {}
        self.double = next(model.parameters()).dtype == torch.float64

    def conv_bn(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        if not self.double:
            return bn(conv(x))
        batch, _, h, w = x.shape
        cols = nn.functional.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                                    stride=conv.stride)
        y = (conv.weight.reshape(conv.out_channels, -1) @ cols).reshape(batch, conv.out_channels, h, w)
        shape = (1, -1, 1, 1)
        return (y - bn.running_mean.reshape(shape)) / torch.sqrt(bn.running_var.reshape(shape) + bn.eps) \
            * bn.weight.reshape(shape) + bn.bias.reshape(shape)

    def _neuron(self, name: str, currents: list[torch.Tensor]) -> list[torch.Tensor]:
        params = getattr(self.m, name).params
        v = None
        out, vs = [], []
        for current in currents:
            s, v = neuron_step(v, current, params)
            out.append(s)
            vs.append(v)
        self.voltages[name] = vs
        return out

    def forward(self, x: torch.Tensor):
        m, T = self.m, self.timesteps
        if self.encoder == "direct":                      # x: (B, 1, H, W)
            constant = self.conv_bn(m.conv1, m.bn1, x)
            s = self._neuron("if1", [constant] * T)
        else:                                             # x: (B, T, 1, H, W)
            s = self._neuron("if1", [self.conv_bn(m.conv1, m.bn1, x[:, t]) for t in range(T)])
        trace = {"if1": s}
        s = trace["pool1"] = [m.pool1(st) for st in s]
        s = trace["if2"] = self._neuron("if2", [self.conv_bn(m.conv2, m.bn2, st) for st in s])
        s = trace["pool2"] = [m.pool2(st) for st in s]
        s = trace["lif1"] = self._neuron("lif1", [m.fc1(st.flatten(1)) for st in s])
        s = trace["lif2"] = self._neuron("lif2", [m.fc2(st) for st in s])
        trace["lif_out"] = self._neuron("lif_out", [m.fc3(st) for st in s])
        for pool in ("pool1", "pool2"):           # max pools have no membrane: their lowered IF's is 0 or the sum
            self.voltages[pool] = [torch.zeros_like(st) for st in trace[pool]]
        spikes = tuple(torch.stack(trace[name], dim=1) for name in SPIKING_LAYERS)
        if not self.membranes:
            return spikes
        return spikes + tuple(torch.stack(self.voltages[name], dim=1) for name in SPIKING_LAYERS)


PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def model_to_onnx(model: ConvSNN, *, encoder: str | None = None, timesteps: int | None = None,
                  precision: str = "float64", membranes: bool = False) -> onnx.ModelProto:
    """The model as ONNX; with ``membranes``, also an output ``<layer>.v``
    per spiking layer (the membrane after each step) for debugging."""
    if not isinstance(model, ConvSNN):
        raise CheckpointError(f"cannot export a {type(model).__name__} to ONNX: only the spiking ConvSNN")
    cfg = model.config
    encoder, timesteps = encoder or cfg.encoder, timesteps or cfg.timesteps
    dtype = PRECISIONS[precision]
    model = copy.deepcopy(model).to(dtype).eval()
    wrapper = UnrolledSNN(model, encoder, timesteps, membranes).eval()
    names = list(SPIKING_LAYERS) + ([f"{n}.v" for n in SPIKING_LAYERS] if membranes else [])
    size = cfg.image_size
    shape = (1, 1, size, size) if encoder == "direct" else (1, timesteps, 1, size, size)
    example = torch.zeros(shape, dtype=dtype)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {"format": FORMAT, "encoder": encoder, "timesteps": str(timesteps), "dt": "1.0", "precision": precision,
            "class_names": json.dumps(list(cfg.class_names)), "preset": cfg.preset,
            "layers": json.dumps(list(SPIKING_LAYERS))}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def onnx_metadata(proto: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


def read_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker raise many types
        raise GraphError(f"{path}: not a valid ONNX model ({' '.join(str(exc).split())[:150]})") from None
    if onnx_metadata(proto).get("format") != FORMAT:
        raise GraphError(f"{path}: an ONNX model, but not one fer2neuro exported (no {FORMAT!r} metadata)")
    return proto


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None,
                      precision: str = "float64") -> dict:
    """``fer2neuro export CKPT --target onnx --out model.onnx``."""
    from fer2neuro.model.checkpoint import load_model

    model, ckpt = load_model(checkpoint, "cpu", dtype=torch.float64)
    proto = model_to_onnx(model, encoder=encoder, timesteps=timesteps, precision=precision)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    meta = onnx_metadata(proto)
    return {"target": "onnx", "path": str(out), "bytes": Path(out).stat().st_size, "opset": OPSET,
            "dt": 1.0, "timesteps": int(meta["timesteps"]), "encoder": meta["encoder"],
            "class_names": json.loads(meta["class_names"]), "nodes": {n: "output" for n in SPIKING_LAYERS},
            "edges": len(proto.graph.node),
            "precision": precision,
            "summary": f"ONNX opset {OPSET}, {len(proto.graph.node)} operators unrolled over "
                       f"T={meta['timesteps']}, {meta['encoder']} input, {precision}"}
