"""The ``onnx`` target: a NIR graph lowered to ONNX (fer2neuro/lowering/
onnx_graph.py), or an exported ``.onnx`` file, run by onnxruntime on the
CPU. Inputs follow the other targets, (B, T, *input_shape); a model lowered
for direct encoding takes the constant frame once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import onnx

from fer2neuro.errors import DataError, TargetError
from fer2neuro.lowering.onnx_graph import check_graph, nir_to_onnx, read_onnx
from fer2neuro.lowering.onnx_file import OnnxMetadata
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.nirgraph.equations import SPIKING_TYPES
from fer2neuro.targets.nir_reference.simulator import check_shapes
from fer2neuro.targets.base import (Arithmetic, Program, Recording, Target, TargetOptions, as_input_array,
                                    prepare_inputs, spike_counts)

PRECISIONS = ("float64", "float32")
CHECK_STEPS = 2          # what prepare (and so the target's check) unrolls a graph over


def load_session(proto: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class OnnxOptions(TargetOptions):
    precision: str = "float64"       # what a NIR graph is lowered to; an .onnx file keeps its own

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TargetError(f"onnx precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")


class OnnxModel:
    """One ONNX model and what its metadata says about it."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        meta = OnnxMetadata.of(proto)          # checked: read_onnx names the file when it is not
        self.layers = meta.layers
        self.timesteps, self.direct = meta.timesteps, meta.encoder == "direct"
        self.dt = meta.dt
        self.arithmetic = Arithmetic(meta.precision)
        self.output_nodes = meta.output_nodes
        self.info = GraphInfo(dt=self.dt, timesteps=self.timesteps, encoder=meta.encoder,
                              class_names=meta.class_names)
        self.outputs = [o.name for o in proto.graph.output]
        self.readout = meta.readout
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        self.input_shape = tuple(d.dim_value for d in dims[1 if self.direct else 2:])
        self.session = load_session(proto)

    def run(self, x: np.ndarray, batch_size: int | None) -> dict[str, np.ndarray]:
        """x (B, T, *input_shape) float64 -> every output, (B, T, ...)."""
        feed = x[:, 0] if self.direct else x
        dtype = np.float64 if self.arithmetic == Arithmetic.FLOAT64 else np.float32
        step = batch_size or len(feed)
        parts = [self.session.run(None, {"input": feed[i:i + step].astype(dtype)})
                 for i in range(0, len(feed), step)]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.outputs)}


class OnnxProgram(Program):
    """An exported .onnx file as it is, or a NIR graph lowered per input mode,
    T, dt and membranes (cached)."""

    def __init__(self, target: str, source, precision: str) -> None:
        self.target = target
        if isinstance(source, nir.NIRGraph):
            self.graph, self.file = source, None
            self.arithmetic = Arithmetic(precision)
            flat = flatten_graph(source)
            check_graph(flat)
            check_shapes(flat)
            self._layers = tuple(n for n in flat.nodes if isinstance(flat.nodes[n], SPIKING_TYPES))
            self._models: dict[tuple, OnnxModel] = {}
        else:
            proto = source if isinstance(source, onnx.ModelProto) else read_onnx(source)
            self.graph, self.file = None, OnnxModel(proto)
            self.fixed_timesteps = True
            self.arithmetic, self._layers = self.file.arithmetic, self.file.layers
            self.records_membranes = any(name.endswith(".v") for name in self.file.outputs)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.file.layers if self.file else self._layers

    @property
    def info(self) -> GraphInfo:
        return self.file.info if self.file else GraphInfo.of(self.graph)

    @property
    def readout(self):
        return self.file.readout if self.file else super().readout

    def _model(self, x: np.ndarray, dt: float | None, membranes: bool) -> OnnxModel:
        if self.file is not None:
            model = self.file
            if dt is not None and dt != model.dt:
                # the file is the model unrolled step by step at the dt it was lowered with
                raise TargetError(f"this ONNX model runs at dt = {model.dt:g}, not dt = {dt:g} (the nir and "
                                  f"onnx targets lower a NIR graph at any dt)")
            if x.ndim != 2 + len(model.input_shape) or x.shape[2:] != model.input_shape:
                shape = ", ".join(map(str, model.input_shape))
                raise DataError(f"input has shape {x.shape}; the model takes (T, {shape}) for one sample or "
                                f"(B, T, {shape}) for a batch")
            if x.shape[1] != model.timesteps:
                raise DataError(f"input has {x.shape[1]} steps; this ONNX model is unrolled over "
                                f"T={model.timesteps} (export it again with --timesteps)")
            if model.direct and not np.all(x == x[:, :1]):
                raise DataError("this ONNX model was exported for direct encoding: its input must be held "
                                "constant over time (export with --encoder poisson for spike inputs)")
            return model
        return self._lowered(bool(np.all(x == x[:, :1])), x.shape[1], dt, membranes)

    def _lowered(self, direct: bool, timesteps: int, dt: float | None, membranes: bool) -> OnnxModel:
        """The graph lowered for this input mode, T, dt and membranes, and its
        session (once per key)."""
        key = (direct, timesteps, 1.0 if dt is None else float(dt), membranes)
        if key not in self._models:
            self._models[key] = OnnxModel(nir_to_onnx(self.graph, timesteps=timesteps, direct=direct, dt=key[2],
                                                      precision=self.arithmetic.value, membranes=membranes))
        return self._models[key]

    def prepare(self, *, direct: bool, dt: float | None, timesteps: int | None = None) -> None:
        """Lower the graph and open its session, as the first run does; with
        T unknown, over CHECK_STEPS steps: every step after the first is
        lowered alike (a back edge carries nothing at t = 0, its source's
        output after), so two meet every case. The lowering is kept for a
        run of that T. An .onnx file was checked when it was read."""
        if self.graph is not None:
            self._lowered(direct, timesteps or CHECK_STEPS, dt, False)

    def run(self, inputs, *, dt=None, record="spikes", record_states=False, batch_size=None,
            progress=False) -> Recording:
        if self.graph is not None:
            x = next(iter(prepare_inputs(flatten_graph(self.graph), inputs).values()))
        else:
            if isinstance(inputs, dict):
                if len(inputs) != 1:
                    raise DataError(f"this ONNX model has one input; got {len(inputs)} ({', '.join(inputs)})")
                inputs = next(iter(inputs.values()))
            x = as_input_array(inputs)
            if self.file.input_shape and x.ndim == 1 + len(self.file.input_shape):
                x = x[None]
        if record_states and not self.records_membranes:
            raise DataError("this ONNX model has no membrane outputs (export it with membranes to record them)")
        unknown = [n for n in (record if isinstance(record, (list, tuple)) else []) if n not in self.layers]
        if unknown:
            raise DataError(f"the {self.target} target records the spiking layers ({', '.join(self.layers)}); "
                            f"not {', '.join(unknown)}")
        model = self._model(x, dt, record_states)
        values = model.run(x, batch_size)
        outputs = {name: spike_counts(values[name]) for name in model.layers}
        for out, source in model.output_nodes.items():
            source = source or model.layers[-1]
            outputs[out] = outputs[source] if source in outputs else values[source].astype(np.float64)
        states = {name: values[name].astype(np.float64) for name in model.outputs
                  if name.endswith((".v", ".i"))}
        return Recording(outputs=outputs, spiking=model.layers, output_nodes=tuple(model.output_nodes),
                         dt=model.dt, states=states if record_states else {})


class OnnxTarget(Target):
    name = "onnx"
    arithmetic = Arithmetic.FLOAT64
    Options = OnnxOptions
    artifact = "an exported .onnx model"

    def accepts(self, path) -> bool:
        return str(path).endswith(".onnx")

    def open(self, source) -> OnnxProgram:
        if isinstance(source, nir.NIRGraph) or not isinstance(source, (str, Path, onnx.ModelProto)):
            self._check_source(source)          # a graph's parameters must be finite (as on every target)
        return OnnxProgram(self.name, source, self.options.precision)
