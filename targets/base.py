"""What every simulation target offers: run a NIR graph on a batch of input
sequences and return what each node emitted at each step.

A target is the interface (this module); how it computes is its own
business (numpy, Lava processes, integer arithmetic, ONNX Runtime), the way
Lava separates a Process from its ProcessModels.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import nir
import numpy as np

from fer2neuro.errors import DataError
from fer2neuro.nirgraph.flat import FlatGraph

# NIR nodes whose output is a spike train.
SPIKING_NODE_TYPES = (nir.IF, nir.LIF, nir.CubaLIF, nir.Threshold)


@dataclass
class Recording:
    """Per-node outputs, each shaped (B, T, *node_shape). Spike trains are
    uint8 (0/1); analog outputs float64."""

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


class Target(ABC):
    """A backend that executes NIR graphs."""

    name: str = ""
    precision: str = "float64"        # "float64" targets must match the float reference exactly

    @abstractmethod
    def run(self, graph: nir.NIRGraph, inputs, *, dt: float | None = None, record="spikes",
            record_states: bool = False, batch_size: int | None = None,
            progress: bool = False) -> Recording:
        """Simulate ``graph`` on ``inputs`` (one array (B, T, *input_shape), or
        a dict of them by Input node name). ``record``: "spikes" (spiking
        nodes and outputs), "all", or a list of node names."""


def input_shape(graph: FlatGraph, name: str) -> tuple[int, ...] | None:
    shape = graph.nodes[name].input_type.get("input")
    return None if shape is None else tuple(int(s) for s in np.asarray(shape).reshape(-1))


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
        x = np.asarray(inputs[name])
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"input {name!r} has dtype {x.dtype}, expected numbers")
        x = x.astype(np.float64)
        given = x.shape
        shape = input_shape(graph, name)
        if shape is not None:
            if x.ndim == len(shape) + 1:
                x = x[None]
            if x.ndim != len(shape) + 2 or x.shape[2:] != shape:
                raise DataError(
                    f"input {name!r} has shape {given}; the graph takes (T, {', '.join(map(str, shape))}) "
                    f"for one sample or (B, T, {', '.join(map(str, shape))}) for a batch")
        elif x.ndim < 3:
            raise DataError(f"input {name!r} has shape {x.shape}; expected (B, T, ...)")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"input {name!r} has shape {x.shape}: no samples or no time steps")
        if not np.isfinite(x).all():
            raise DataError(f"input {name!r} contains NaN or infinite values")
        prepared[name] = x
    steps = {x.shape[:2] for x in prepared.values()}
    if len(steps) > 1:
        raise DataError(f"inputs disagree on (samples, steps): {sorted(steps)}")
    return prepared
