"""Writers that turn a trained checkpoint into a deployable file.

Each exporter is ``export(checkpoint, out, *, encoder, timesteps) -> dict``
(the dict describes what was written). The registry maps ``--target`` names
of ``fer2neuro export`` to them; modules load only when asked for.
"""
from __future__ import annotations

import importlib

from fer2neuro.errors import ConfigError

# target name -> "module:function"
EXPORTERS = {
    "nir": "fer2neuro.exporters.nir_export:export_checkpoint",
    "lava": "fer2neuro.exporters.lava_export:export_checkpoint",
    "onnx": "fer2neuro.exporters.onnx_export:export_checkpoint",
}


# what each writes at --out: a folder, or else a single file
WRITES_FOLDER = {"lava"}


def exporter_names() -> list[str]:
    return list(EXPORTERS)


def writes_folder(name: str) -> bool:
    """Whether the exporter writes a folder at ``--out`` (else one file)."""
    return name in WRITES_FOLDER


def get_exporter(name: str):
    try:
        module, func = EXPORTERS[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown export target {name!r}: use one of {', '.join(EXPORTERS)}") from None
    return getattr(importlib.import_module(module), func)
