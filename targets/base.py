"""What every simulation target offers: open a source (a NIR graph always,
its own exported artifact where it has one) and run it on a batch of input
sequences, returning what each node emitted at each step.

A target is the interface (this module); how it computes is its own
business (numpy, Lava processes, integer arithmetic, ONNX Runtime), the way
Lava separates a Process from its ProcessModels. Each declares its options
(a small dataclass) and its arithmetic, so callers need no branches on
target names:

    target = get_target("loihi", emulate_overflow=True)
    program = target.open(graph)          # or target.open("runs/demo/lava")
    recording = program.run(x, record="spikes")
    program.arithmetic                    # Arithmetic.FIXED
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import ClassVar

import nir
import numpy as np

from fer2neuro.errors import ConfigError, DataError, Fer2NeuroError, TargetError, one_line
from fer2neuro.nirgraph.describe import declared_input_shape
from fer2neuro.nirgraph.describe import input_shape as sample_shape
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph.validate import check_graph
from fer2neuro.nirgraph.flat import FlatGraph



@dataclass
class Recording:
    """Per-node outputs, each shaped (B, T, *node_shape). Spike trains are
    uint8 (0/1; counts where a dialect's neurons spike several times a step,
    ``spike_counts``); analog outputs float64."""

    outputs: dict[str, np.ndarray]
    spiking: tuple[str, ...]           # names in ``outputs`` that hold spikes, in data-flow order
    output_nodes: tuple[str, ...]      # the graph's Output nodes
    dt: float
    states: dict[str, np.ndarray] = field(default_factory=dict)   # "<node>.v", "<node>.i"

    @property
    def output(self) -> np.ndarray:
        """The single Output node's array (B, T, ...)."""
        if len(self.output_nodes) != 1:
            raise DataError(f"the graph has {len(self.output_nodes)} Output nodes: "
                            f"pick one of {', '.join(self.output_nodes)}")
        return self.outputs[self.output_nodes[0]]


def spike_counts(values) -> np.ndarray:
    """Spikes per step as the narrowest unsigned integers that hold them:
    uint8 for NIR's 0/1 spikes, wider where a dialect's neurons emit many
    in a step (Sinabs, Rockpool: up to 2**16)."""
    a = np.asarray(values)
    top = a.max(initial=0)
    return a.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32)


class Arithmetic(str, Enum):
    """How a target computes, which decides what verification asks of it."""

    FLOAT64 = "float64"   # must equal the float64 reference spike for spike
    FLOAT32 = "float32"   # reported: float32 rounding flips threshold ties
    FIXED = "fixed"       # integer (Loihi) arithmetic: reported; fixed-point targets must agree bit for bit

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TargetOptions:
    """Options every target takes. A target with more subclasses this and
    names the subclass as its ``Options``."""


class Program(ABC):
    """A source opened by a target, ready to run batch after batch (the
    expensive work, quantising or building a session, happens once)."""

    target: str
    arithmetic: Arithmetic
    graph: nir.NIRGraph | None          # the NIR graph it runs, when it has one
    records_membranes: bool = True
    fixed_timesteps: bool = False       # runs only the T it was exported for (an unrolled .onnx file)

    @property
    @abstractmethod
    def layers(self) -> tuple[str, ...]:
        """The spiking nodes it records, in data-flow order."""

    @property
    def info(self) -> GraphInfo:
        """dt, T, encoder and class names, as the source's metadata gives them."""
        return GraphInfo.of(self.graph)

    @property
    def readout(self):
        """What the output-membrane rule of ``nirgraph/readout.py`` needs to
        break ties between classes, or None (the graph has no LIF output fed
        by one affine layer)."""
        from fer2neuro.nirgraph.readout import Readout

        return Readout.of_graph(self.graph) if self.graph is not None else None

    @abstractmethod
    def run(self, inputs, *, dt: float | None = None, record="spikes", record_states: bool = False,
            batch_size: int | None = None, progress: bool = False) -> Recording:
        """Simulate on ``inputs`` (one array (B, T, *input_shape), or a dict of
        them by Input node name). ``record``: "spikes" (spiking nodes and
        outputs), "all", or a list of node names."""

    def prepare(self, *, direct: bool, dt: float | None, timesteps: int | None = None) -> None:
        """Do now what a run on such inputs (constant or spikes, at ``dt``,
        over ``timesteps`` steps if known) does before it simulates: plan,
        quantise, lower, kept for that run; raise its error if that fails.
        A program that does nothing first needs nothing here."""


class GraphProgram(Program):
    """A NIR graph on a target that simulates graphs as they are: ``run``
    hands the graph to the target's ``simulate``."""

    def __init__(self, target: str, arithmetic: Arithmetic, graph: nir.NIRGraph, simulate,
                 layers: tuple[str, ...]) -> None:
        self.target, self.arithmetic, self.graph = target, arithmetic, graph
        self._simulate, self._layers = simulate, layers

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    def run(self, inputs, **kwargs) -> Recording:
        return self._simulate(self.graph, inputs, **kwargs)


class Target(ABC):
    """A backend that executes NIR graphs (and, where it has one, its own artifact)."""

    name: ClassVar[str] = ""
    arithmetic: ClassVar[Arithmetic] = Arithmetic.FLOAT64     # what a NIR graph runs in
    Options: ClassVar[type] = TargetOptions
    artifact: ClassVar[str | None] = None                       # its own artifact, in words

    def __init__(self, options: TargetOptions | None = None, **values) -> None:
        if options is None:
            known = {f.name for f in fields(self.Options)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"the {self.name} target has no option {', '.join(unknown)}"
                                  + (f" (it has {', '.join(sorted(known))})" if known else ""))
            options = self.Options(**values)
        self.options = options

    def accepts(self, path) -> bool:
        """Whether ``path`` is this target's own artifact (opened as it is,
        not as a NIR graph)."""
        return False

    @abstractmethod
    def open(self, source) -> Program:
        """A NIR graph, or the path of this target's artifact, ready to run."""

    def check(self, graph: nir.NIRGraph) -> None:
        """Raise the error (a TargetError, as a rule) that simulating
        ``graph`` would: opening it, then preparing its first run
        (``Program.prepare``) for the inputs simulate and verify give it
        (``checked_inputs``). ``inspect`` says a target runs a graph exactly
        when this passes, so it must take the run's own path, not a copy."""
        program = self.open(graph)
        for direct, dt in checked_inputs(graph):
            program.prepare(direct=direct, dt=dt)

    def run(self, source, inputs, **kwargs) -> Recording:
        """``open(source).run(inputs, ...)``: one call for every target."""
        return self.open(source).run(inputs, **kwargs)

    def _check_source(self, source) -> None:
        if isinstance(source, nir.NIRGraph):
            check_graph(source, TargetError)     # node types, shapes, strides, NaN/inf, taus <= 0
            return
        own = f" or {self.artifact}" if self.artifact else ""
        if isinstance(source, (str, Path)):
            raise TargetError(f"{source}: the {self.name} target runs a NIR graph{own}, and this is neither")
        raise TargetError(f"the {self.name} target runs a NIR graph{own}, not a {type(source).__name__}")


def input_shape(graph: FlatGraph, name: str) -> tuple[int, ...] | None:
    """One sample's frame at an Input node (a batch axis in its type left
    out: nirgraph.describe.input_shape), or None if it declares none."""
    return sample_shape(graph, name)


def checked_inputs(graph: nir.NIRGraph) -> list[tuple[bool, float]]:
    """The (direct, dt) a target's check prepares a graph for: spike inputs,
    and a constant input too when the graph's encoder is direct, at the
    graph's dt (what simulate and verify run it at)."""
    info = GraphInfo.of(graph)
    modes = (False, True) if info.encoder == "direct" else (False,)
    return [(direct, info.dt or 1.0) for direct in modes]


def unable_reason(exc: BaseException) -> str:
    """Why a target could not run, on one line: a user error's message; any
    other exception is a fault in the target, named with its type so that
    it does not read as something wrong with the graph."""
    message = one_line(exc)
    if isinstance(exc, Fer2NeuroError):
        return message
    return f"the target failed ({type(exc).__name__}: {message[:200] or 'no message'})"


def as_input_array(x, name: str = "input") -> np.ndarray:
    """The one check of an input array every target applies: real numbers
    (bool, integers, floats; not strings, objects or complex), at least one
    value, no axis of length 0, every value finite. Returns it as float64."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as exc:      # ragged nested lists
        raise DataError(f"input {name!r} is not a rectangular array of numbers "
                        f"({one_line(exc, 120)})") from None
    if not (x.dtype == bool or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        kind = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects",
                "V": "structured records", "M": "dates", "m": "time spans"}.get(x.dtype.kind, "not numbers")
        raise DataError(f"input {name!r} has dtype {x.dtype} ({kind}); expected real numbers "
                        f"(bool, integer or float)")
    if x.ndim == 0 or 0 in x.shape:
        raise DataError(f"input {name!r} has shape {x.shape}: no samples or no time steps (an empty axis "
                        f"holds no values)")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        counts = {"NaN": int(np.isnan(x).sum()), "+inf": int(np.isposinf(x).sum()),
                  "-inf": int(np.isneginf(x).sum())}
        found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        raise DataError(f"input {name!r} contains NaN or infinite values ({found} of {x.size}): "
                        f"inputs must be finite")
    return x


def prepare_inputs(graph: FlatGraph, inputs) -> dict[str, np.ndarray]:
    """Match ``inputs`` to the graph's Input nodes and check their shapes:
    each becomes a float64 array (B, T, *input_shape). A single sample
    (T, *input_shape) gets B = 1."""
    names = graph.inputs
    if not names:
        raise DataError("the graph has no Input node")
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise DataError(f"the graph has {len(names)} inputs ({', '.join(names)}): pass a dict by name")
        inputs = {names[0]: inputs}
    missing = sorted(set(names) - set(inputs))
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        raise DataError(f"inputs do not match the graph's Input nodes {names}: "
                        f"missing {missing}, unknown {extra}")
    prepared = {}
    for name in names:
        x = as_input_array(inputs[name], name)
        shape = input_shape(graph, name)
        if shape is not None:
            x = _batch_of_samples(x, name, shape, declared_input_shape(graph, name))
        elif x.ndim < 3:
            raise DataError(f"input {name!r} has shape {x.shape}; expected (B, T, ...)")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"input {name!r} has shape {x.shape}: no samples or no time steps")
        prepared[name] = x
    steps = {x.shape[:2] for x in prepared.values()}
    if len(steps) > 1:
        raise DataError(f"inputs disagree on (samples, steps): {sorted(steps)}")
    return prepared


def _batch_of_samples(x: np.ndarray, name: str, shape: tuple[int, ...], declared: tuple[int, ...]) -> np.ndarray:
    """x as (B, T, *shape): one sample (T, *shape) gets B = 1. Where the
    Input's type carries a batch axis (``declared`` is (1, *shape)), a batch
    written with it, (B, T, 1, ...), is taken too (the 1 is dropped)."""
    given, dims = x.shape, ", ".join(map(str, shape))
    if declared != shape and x.ndim == len(declared) + 2 and x.shape[2:] == declared:
        return x.reshape(*x.shape[:2], *shape)
    if x.ndim == len(shape) + 1:
        x = x[None]
    if x.ndim != len(shape) + 2 or x.shape[2:] != shape:
        raise DataError(f"input {name!r} has shape {given}; the graph takes (T, {dims}) for one sample or "
                        f"(B, T, {dims}) for a batch")
    return x
