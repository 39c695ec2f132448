"""What an exported ``.onnx`` file says about itself, checked before use.

``lowering/onnx_graph.nir_to_onnx`` stores fer2neuro's facts as ONNX
metadata, every value a string: the encoder, T, dt, the precision, the
spiking layers, the Output nodes' sources, the class names and the
readout. A file is text anyone can edit, so ``OnnxMetadata.of`` parses each
one and checks its type and range, and ``nonfinite_tensor`` finds a weight
that is NaN or infinite: onnxruntime runs such a model without complaint
(NaN membranes, no spikes, exit 0). ``onnx_graph.read_onnx`` applies both,
the one place an ``.onnx`` file is read, and names the file and the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from fer2neuro.errors import DataError, GraphError
from fer2neuro.nirgraph.readout import Readout
from fer2neuro.shown import shown

ENCODERS = ("direct", "poisson")
PRECISIONS = ("float64", "float32")


def _json(meta: dict, key: str, default: str):
    text = meta.get(key, default)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise GraphError(f"metadata {key} is not valid JSON: {shown(text)}") from None


def _names(value, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphError(f"metadata {key} must be a JSON list of strings, got {shown(value)}")
    return tuple(value)


@dataclass(frozen=True)
class OnnxMetadata:
    """The metadata of a model ``nir_to_onnx`` made, typed and checked."""

    encoder: str
    timesteps: int
    dt: float
    precision: str
    layers: tuple[str, ...]
    output_nodes: dict                  # Output node -> the node whose values it carries (None: the last layer)
    class_names: tuple[str, ...]
    readout: Readout | None
    preset: str | None

    @classmethod
    def of(cls, proto: onnx.ModelProto) -> "OnnxMetadata":
        """GraphError naming the first field that is missing or wrong."""
        meta = {p.key: p.value for p in proto.metadata_props}
        encoder = meta.get("encoder")
        if encoder not in ENCODERS:
            raise GraphError(f"metadata encoder must be one of {', '.join(ENCODERS)}, got {shown(encoder)}")
        text = meta.get("timesteps", "")
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1):
            raise GraphError(f"metadata timesteps must be an integer >= 1, got {shown(text)}")
        try:
            dt = float(meta.get("dt", "1.0"))
        except ValueError:
            dt = math.nan
        if not (math.isfinite(dt) and dt > 0):
            raise GraphError(f"metadata dt must be a finite number > 0, got {shown(meta.get('dt'))}")
        precision = meta.get("precision", "float32")
        if precision not in PRECISIONS:
            raise GraphError(f"metadata precision must be one of {', '.join(PRECISIONS)}, got {shown(precision)}")
        if "layers" not in meta:
            raise GraphError("metadata layers (the spiking layers' names) is missing")
        layers = _names(_json(meta, "layers", "[]"), "layers")
        outputs = _json(meta, "output_nodes", '{"output": null}')
        if not isinstance(outputs, dict) or not all(v is None or isinstance(v, str) for v in outputs.values()):
            raise GraphError(f"metadata output_nodes must map Output nodes to node names, got {shown(outputs)}")
        # what the target looks up among the model's outputs by these names
        produced = {o.name for o in proto.graph.output}
        missing = [name for name in (*layers, *(v for v in outputs.values() if v)) if name not in produced]
        if not layers or missing:
            raise GraphError(f"metadata layers/output_nodes name {shown(missing[0]) if missing else 'no layer'}, "
                             f"which the model does not output")
        readout = None
        if "readout" in meta:
            try:
                readout = Readout.from_json(meta["readout"])
            except DataError as exc:
                raise GraphError(f"metadata readout: {exc}") from None
        preset = meta.get("preset")
        return cls(encoder=encoder, timesteps=int(text), dt=dt, precision=precision, layers=layers,
                   output_nodes=outputs, class_names=_names(_json(meta, "class_names", "[]"), "class_names"),
                   readout=readout, preset=preset)


def nonfinite_tensor(proto: onnx.ModelProto) -> str | None:
    """The first floating-point weight (an initializer, or a Constant
    node's value) that holds NaN or infinity, described; None if none."""
    tensors = [(t.name or "(unnamed)", t) for t in proto.graph.initializer]
    tensors += [(node.name or node.output[0], attr.t) for node in proto.graph.node if node.op_type == "Constant"
                for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR]
    for name, tensor in tensors:
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - the checker passed it; a type numpy cannot hold is no float weight
            continue
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            nan = int(np.isnan(values).sum())
            return (f"weight {name!r} holds non-finite values ({nan} NaN, "
                    f"{values.size - nan - int(np.isfinite(values).sum())} infinite of {values.size})")
    return None
