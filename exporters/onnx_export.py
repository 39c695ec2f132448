"""``fer2neuro export --target onnx``: the trained model's NIR graph
(exporters/nir_export.py) lowered to ONNX, unrolled over T
(fer2neuro/lowering/onnx_graph.py), and written atomically.

The ONNX model therefore computes what the NIR reference target computes
on that graph (BatchNorm folded, max pools as sum pool + IF, NIR's neuron
equations), which in float64 equals the trained model spike for spike.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from fer2neuro.atomic import atomic_path
from fer2neuro.exporters.nir_export import model_to_nir
from fer2neuro.lowering.onnx_graph import OPSET, nir_to_onnx, onnx_metadata
from fer2neuro.model.network import ConvSNN
from fer2neuro.nirgraph.file import GraphInfo


def model_to_onnx(model: ConvSNN, *, encoder: str | None = None, timesteps: int | None = None,
                  precision: str = "float64", membranes: bool = False) -> onnx.ModelProto:
    """The model as ONNX, for ``encoder``/``timesteps`` (default: the
    model's); with ``membranes``, also each neuron's ``<node>.v``."""
    graph = model_to_nir(model, encoder=encoder, timesteps=timesteps)
    info = GraphInfo.of(graph)
    return nir_to_onnx(graph, timesteps=info.timesteps, direct=info.encoder == "direct", dt=info.dt,
                       precision=precision, membranes=membranes)


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None,
                      precision: str = "float64") -> dict:
    """``fer2neuro export CKPT --target onnx --out model.onnx``."""
    from fer2neuro.model.checkpoint import load_model

    model, _ = load_model(checkpoint, "cpu", dtype=torch.float64)
    proto = model_to_onnx(model, encoder=encoder, timesteps=timesteps, precision=precision)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    meta = onnx_metadata(proto)
    operators = len(proto.graph.node)
    return {"target": "onnx", "path": str(out), "bytes": Path(out).stat().st_size, "opset": OPSET,
            "dt": float(meta["dt"]), "timesteps": int(meta["timesteps"]), "encoder": meta["encoder"],
            "class_names": json.loads(meta["class_names"]),
            "nodes": {o.name: "output" for o in proto.graph.output}, "edges": operators,
            "precision": precision,
            "summary": f"ONNX opset {OPSET}, {operators} operators unrolled over T={meta['timesteps']}, "
                       f"{meta['encoder']} input, {precision}"}
