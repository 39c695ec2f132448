"""The schema of an exported Lava folder's ``manifest.json``, with its
versions: every field's type and range checked when a folder is loaded
(``LavaArtifact.load``), so that an edited or foreign manifest is one line
of error naming the file and the field, never a traceback or a NaN
membrane later (the fixed-point targets divide integer membranes by each
layer's ``scale``).

A manifest carries ``format_version``; this fer2neuro reads the versions in
READABLE_VERSIONS and refuses any other, a newer one included, saying which
it reads. A change to the fields that an older reader would misread gets a
new version here, with its fields in SCHEMAS.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from fer2neuro.errors import GraphError, one_line
from fer2neuro.lowering.quantise import DECAY_UNITY, VTH_MAX

FORMAT = "fer2neuro.lava"
FORMAT_VERSION = 1                      # what write_artifact writes
READABLE_VERSIONS = (1,)
MAX_BYTES = 1 << 24                     # a manifest is a few kB: one entry per layer


class _Field:
    """One field's rule: ``check(value, where)`` raises GraphError or returns the value."""

    def __init__(self, describe: str, test, optional: bool = False) -> None:
        self.describe, self.test, self.optional = describe, test, optional

    def check(self, value, where: str):
        if value is None and self.optional:
            return None
        if not self.test(value):
            raise GraphError(f"{where} is {_show(value)}; expected {self.describe}")
        return value


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    """A finite JSON number (Python's json reads NaN, Infinity and 1e400 as floats)."""
    return _int(value) or (isinstance(value, float) and math.isfinite(value))


def _int_in(low, high=None):
    return lambda v: _int(v) and v >= low and (high is None or v <= high)


def _positive_number(value) -> bool:
    return _number(value) and value > 0


def _text(value) -> bool:
    return isinstance(value, str) and value != ""


def _shape(value) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= 3 and all(_int(s) and s >= 1 for s in value)


def _one_of(*choices):
    return lambda v: isinstance(v, str) and v in choices


# format_version 1: the manifest's fields, and each entry of its "layers"
LAYER_FIELDS_1 = {
    "name": _Field("the NIR node's name (text)", _text),
    "kind": _Field("a layer kind (text)", _text),
    "shape": _Field("a list of 1 to 3 positive integers", _shape),
    "depth": _Field("an integer >= 0", _int_in(0)),
    "scale": _Field("a finite number > 0 (the layer's weight scale)", _positive_number),
    "vth": _Field(f"an integer in 0..{VTH_MAX}", _int_in(0, VTH_MAX)),
    "vDecay": _Field(f"an integer in 0..{DECAY_UNITY}", _int_in(0, DECAY_UNITY)),
    "iDecay": _Field(f"an integer in 0..{DECAY_UNITY}", _int_in(0, DECAY_UNITY)),
    "weight_min": _Field("an integer or null", _int, optional=True),
    "weight_max": _Field("an integer or null", _int, optional=True),
    "bias_max_abs": _Field("an integer >= 0 or null", _int_in(0), optional=True),
}

FIELDS_1 = {
    "timesteps": _Field("an integer >= 1 or null", _int_in(1), optional=True),
    "dt": _Field("a finite number > 0", _positive_number),
    "encoder": _Field('"direct" or "poisson"', _one_of("direct", "poisson")),
    "class_names": _Field("a list of class names (text)",
                          lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)),
    "input": _Field('"bias" or "spikes"', _one_of("bias", "spikes")),
    "input_shape": _Field("a list of 1 to 3 positive integers", _shape),
    "run_steps_extra": _Field("an integer >= 0", _int_in(0)),
    "layers": _Field("a non-empty list of layers", lambda v: isinstance(v, list) and len(v) > 0),
}

SCHEMAS = {1: (FIELDS_1, LAYER_FIELDS_1)}        # format_version -> (fields, fields of each layer)


def read_manifest(path: str | Path) -> dict:
    """``manifest.json`` parsed and checked against the schema of its
    format_version; GraphError (one line naming the file and the field)
    for anything else."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise GraphError(f"{path}: {path.stat().st_size} bytes; a manifest is a few kB (at most {MAX_BYTES} read)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise GraphError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except (ValueError, RecursionError) as exc:      # JSONDecodeError, an integer of 5000 digits, deep nesting
        raise GraphError(f"{path}: not valid JSON ({one_line(exc, 120) or 'nested too deep'})") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GraphError(f"{path}: not a fer2neuro Lava manifest (a JSON object with \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    readable = ", ".join(map(str, READABLE_VERSIONS))
    if version not in READABLE_VERSIONS or not _int(version):
        newer = " (written by a newer fer2neuro)" if _int(version) and version > max(READABLE_VERSIONS) else ""
        raise GraphError(f"{path}: format_version {_show(version)}{newer}; this fer2neuro reads format_version "
                         f"{readable}: export the folder again with it")
    check_manifest(manifest, *SCHEMAS[version], str(path))
    return manifest


def check_manifest(manifest: dict, fields: dict, layer_fields: dict, name: str) -> None:
    """Each field of ``fields`` present and valid, and each layer's of
    ``layer_fields``; fields not in the schema are ignored."""
    for key, rule in fields.items():
        if key not in manifest:
            raise GraphError(f"{name}: no \"{key}\" (expected {rule.describe})")
        rule.check(manifest[key], f"{name}: \"{key}\"")
    if (manifest["encoder"] == "direct") != (manifest["input"] == "bias"):
        raise GraphError(f"{name}: encoder \"{manifest['encoder']}\" with input \"{manifest['input']}\" (a direct "
                         f"encoder drives the first layer's bias, a poisson one sends spikes)")
    names = set()
    for i, layer in enumerate(manifest["layers"]):
        where = f"{name}: layers[{i}]"
        if not isinstance(layer, dict):
            raise GraphError(f"{where} is {_show(layer)}; expected an object")
        for key, rule in layer_fields.items():
            if key not in layer:
                raise GraphError(f"{where} has no \"{key}\" (expected {rule.describe})")
            rule.check(layer[key], f"{where}.{key}")
        if layer["name"] in names:
            raise GraphError(f"{where}.name \"{layer['name']}\" names two layers")
        names.add(layer["name"])
