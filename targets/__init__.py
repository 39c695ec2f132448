"""Simulation targets that execute NIR graphs. Each target is a class that
opens a NIR graph (or its own artifact) and runs it (see base.py); this
registry maps the names
the command line uses to them, importing a target only when it is asked for
(Lava's import alone takes seconds)."""
from __future__ import annotations

import importlib

from fer2neuro.errors import TargetError

# name -> "module:Class"
TARGETS = {
    "nir": "fer2neuro.targets.nir_reference:NIRReferenceTarget",
    "lava": "fer2neuro.targets.lava:LavaTarget",
    "lava-fixed": "fer2neuro.targets.lava:LavaFixedTarget",
    "loihi": "fer2neuro.targets.loihi:LoihiTarget",
    "onnx": "fer2neuro.targets.onnx_runtime:OnnxTarget",
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str, **options):
    """A new instance of the target called ``name``, with ``options`` (its
    ``Options`` fields; an option it does not have is a ConfigError)."""
    try:
        module, cls = TARGETS[name].split(":")
    except KeyError:
        raise TargetError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}") from None
    return getattr(importlib.import_module(module), cls)(**options)
