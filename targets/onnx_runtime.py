"""The ``onnx`` target: an exported model (exporters/onnx_export.py) run by
onnxruntime on the CPU. Inputs follow the other targets, (B, T, *input
shape); a direct-encoded model takes the constant image once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from fer2neuro.errors import DataError, TargetError
from fer2neuro.targets.base import Recording, Target


def load_session(proto: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


class OnnxTarget(Target):
    name = "onnx"
    precision = "float64"

    def run(self, graph, inputs, *, dt=None, record="spikes", record_states=False,
            batch_size=None, progress=False) -> Recording:
        from fer2neuro.exporters.onnx_export import onnx_metadata, read_onnx

        if isinstance(graph, (str, Path)):
            proto = read_onnx(graph)
        elif isinstance(graph, onnx.ModelProto):
            proto = graph
        else:
            raise TargetError("the onnx target runs ONNX models exported by fer2neuro "
                              "('fer2neuro export CKPT --target onnx'), not NIR graphs")
        if dt is not None and dt != 1.0:
            # the exported graph is the model unrolled step by step, at dt = 1
            raise TargetError(f"the onnx target runs the model as exported, at dt = 1, not dt = {dt:g} "
                              "(the nir target simulates a NIR graph at other time steps)")
        meta = onnx_metadata(proto)
        layers = json.loads(meta["layers"])
        timesteps, encoder = int(meta["timesteps"]), meta["encoder"]
        dtype = np.float64 if meta.get("precision", "float32") == "float64" else np.float32
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim == 4:
            x = x[None]
        if x.ndim != 5 or x.shape[2:] != (1, 48, 48):
            raise DataError(f"input has shape {x.shape}; the model takes (T, 1, 48, 48) for one sample or "
                            f"(B, T, 1, 48, 48) for a batch")
        if x.shape[1] != timesteps:
            raise DataError(f"input has {x.shape[1]} steps; this ONNX model is unrolled over T={timesteps} "
                            f"(export it again with --timesteps)")
        if encoder == "direct":
            if not np.all(x == x[:, :1]):
                raise DataError("this ONNX model was exported for direct encoding: its input must be held "
                                "constant over time (export with --encoder poisson for spike inputs)")
            feed = x[:, 0]
        else:
            feed = x
        unknown = [n for n in (record if isinstance(record, (list, tuple)) else []) if n not in layers]
        if unknown:
            raise DataError(f"the onnx target records the spiking layers ({', '.join(layers)}); "
                            f"not {', '.join(unknown)}")
        session = load_session(proto)
        step = batch_size or len(feed)
        parts = [session.run(None, {"input": feed[i:i + step].astype(dtype)}) for i in range(0, len(feed), step)]
        outputs = {name: np.concatenate([p[k] for p in parts]).astype(np.uint8) for k, name in enumerate(layers)}
        outputs["output"] = outputs[layers[-1]]
        names = [o.name for o in proto.graph.output]
        states = {name: np.concatenate([p[k] for p in parts]).astype(np.float64)
                  for k, name in enumerate(names) if name.endswith(".v")}
        if record_states and not states:
            raise DataError("this ONNX model has no membrane outputs (export it with membranes to record them)")
        self.precision = meta.get("precision", "float32")
        return Recording(outputs=outputs, spiking=tuple(layers), output_nodes=("output",), dt=1.0,
                         states=states if record_states else {})
