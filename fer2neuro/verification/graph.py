"""``fer2neuro verify GRAPH.nir``: a NIR graph from any tool, with no
checkpoint and no data set, run on every target and compared with the
``nir`` target (float64 numpy, the reference).

The inputs are given (an array (B, T, *input_shape), as ``simulate`` takes)
or generated: seeded Bernoulli spike trains at a rate (``poisson``), or, for
a graph whose metadata says direct encoding, a seeded uniform frame held
over the T steps (``direct``). Every target runs the same inputs; each
spiking layer is compared with the reference's (compare.py), the same way a
checkpoint's verification compares them: float64 targets must be spike for
spike exact, float32 and fixed-point targets are reported as agreement
figures, and the fixed-point targets must agree with each other bit for bit.
A target that cannot run the graph is reported as such, not an error.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
from fer2neuro.nirgraph.readout import Readout, classify
from fer2neuro.progress import progress_bar

from fer2neuro.errors import ConfigError, DataError, GraphError, TargetError, one_line
from fer2neuro.memory import check_fits, checked_timesteps, graph_values, steps_bytes
from fer2neuro.model.config import ENCODERS
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target
from fer2neuro.targets.base import input_shape, prepare_inputs, unable_reason
from fer2neuro.training.distributed import SINGLE, Group
from fer2neuro.verification.backends import TargetBackend
from fer2neuro.verification.compare import BackendComparison
from fer2neuro.verification.report import Report, compare_batch, failing_together, shard_batches

GRAPH_REFERENCE = "nir"
DEFAULT_TIMESTEPS = 20
DEFAULT_RATE = 0.2


@dataclass
class GraphVerificationOptions:
    targets: list[str]                  # compared with the nir target (never listed itself)
    inputs: np.ndarray | None = None    # (B, T, *input_shape) or one sample (T, *input_shape); else generated
    input_path: str | None = None       # where ``inputs`` came from, for the report
    samples: int = 16                   # generated inputs: how many samples,
    seed: int = 0                       # from this seed,
    rate: float = DEFAULT_RATE          # spikes per input per step (poisson)
    dt: float | None = None             # the time step to run at; default: the graph's metadata, else 1
    timesteps: int | None = None        # default: the graph's metadata, else DEFAULT_TIMESTEPS
    encoder: str | None = None          # "poisson" or "direct"; default: the graph's metadata, else poisson
    lava: str | None = None             # an exported Lava folder for the lava / lava-fixed / loihi targets
    onnx: str | None = None             # an exported .onnx file for the onnx target
    batch_size: int = 16
    progress: bool = True
    semantics: str = "nir"              # how the graph is read (nirgraph/dialects): "nir", "auto" or a peer's


@dataclass(kw_only=True)
class GraphReport(Report):
    """A bare NIR graph's verification: the nir target is the reference."""

    graph_path: str
    options: GraphVerificationOptions
    dt: float
    dt_assumed: bool = False            # the graph gives no dt and none was given: dt = 1
    input_name: str
    output_layer: str | None            # the spiking layer whose most-spiking neuron is the output class
    reference: str = GRAPH_REFERENCE
    reference_program: object = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return self.graph_path

    def inputs_words(self) -> str:
        o = self.options
        if o.input_path or o.inputs is not None:
            given = o.input_path or "the given array"
            kind = "held constant" if self.encoder == "direct" else "varying over time"
            return f"{self.samples} samples from {given} ({kind})"
        if self.encoder == "direct":
            return f"{self.samples} uniform frames held over time, seed {o.seed}"
        return f"{self.samples} Bernoulli spike trains at rate {o.rate:g}, seed {o.seed}"

    def summary_line(self) -> str:
        assumed = " (assumed: the graph gives no dt; give --dt)" if self.dt_assumed else ""
        return (f"{self.graph_path}: {self.inputs_words()}, T={self.timesteps}, dt={self.dt:g}{assumed}; "
                f"reference {self.reference} (float64)")

    def markdown_header(self) -> list[str]:
        output = f"`{self.output_layer}` (most spikes)" if self.output_layer else \
            "none (the output is not a spiking layer of several neurons)"
        return [f"- inputs: {self.inputs_words()}, T={self.timesteps}, dt={self.dt:g}",
                f"- reference: the {self.reference} target in float64",
                f"- output class: {output}"]

    def reference_membranes(self, encoded, image, layer):
        inputs = encoded.transpose(0, 1).to(torch.float64).numpy()
        rec = self.reference_program.run(inputs, dt=self.dt, record=[layer], record_states=True)
        v = rec.states.get(f"{layer}.v")
        return None if v is None else v[0]

    def to_dict(self) -> dict:
        o = self.options
        generated = o.input_path is None and o.inputs is None
        return {
            "graph": self.graph_path, "reference": self.reference, "reference_dtype": "float64",
            "inputs": {"source": "generated" if generated else (o.input_path or "array"),
                       "encoder": self.encoder, "seed": o.seed if generated else None,
                       "rate": o.rate if generated and self.encoder == "poisson" else None},
            "samples": self.samples, "timesteps": self.timesteps, "dt": self.dt, "dt_assumed": self.dt_assumed,
            "output_layer": self.output_layer, "equivalent": self.equivalent,
            "reference_seconds": round(self.reference_seconds, 3),
            **self.comparison_dict(),
            "unavailable": dict(self.unavailable),
            "lava": o.lava, "onnx": o.onnx,
        }


def single_input(graph: nir.NIRGraph, path) -> tuple[str, tuple[int, ...] | None]:
    flat = flatten_graph(graph)
    names = flat.inputs
    if len(names) != 1:
        raise GraphError(f"{path}: verify takes a graph with one Input node, this one has {len(names)}"
                         + (f" ({', '.join(names)})" if names else ""))
    return names[0], input_shape(flat, names[0])


def output_layer(graph: nir.NIRGraph, layers: tuple[str, ...]) -> str | None:
    """The spiking layer feeding the graph's one Output node, when it has
    more than one neuron (its most-spiking neuron is then the class)."""
    flat = flatten_graph(graph)
    outputs = flat.outputs
    if len(outputs) != 1:
        return None
    sources = flat.predecessors(outputs[0])
    if len(sources) != 1 or sources[0] not in layers:
        return None
    threshold = getattr(flat.nodes[sources[0]], "v_threshold", None)
    return sources[0] if threshold is not None and np.asarray(threshold).size > 1 else None


def output_classes(layer: str, graph: nir.NIRGraph | None = None, dt: float = 1.0):
    """spikes -> each sample's class from ``layer`` by the rule of
    ``nirgraph/readout.py`` (most spikes, ties by the output membrane worked out
    from ``graph``'s readout where it has one, then the lowest index), or None
    when the layer was not recorded."""
    readout = Readout.of_graph(graph) if graph is not None else None
    if readout is not None and readout.neuron != layer:
        readout = None

    def predict(spikes: dict[str, np.ndarray]) -> np.ndarray | None:
        return classify(spikes[layer], readout, spikes, dt)[0] if layer in spikes else None
    return predict


def make_inputs(graph: nir.NIRGraph, path, options: GraphVerificationOptions,
                encoder: str, timesteps: int) -> np.ndarray:
    """The inputs every target gets, (B, T, *input_shape) float64."""
    name, shape = single_input(graph, path)
    if options.inputs is not None:
        where = options.input_path or "the input"
        try:
            return prepare_inputs(flatten_graph(graph), options.inputs)[name]
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
    if shape is None:
        raise GraphError(f"{path}: its Input node {name!r} has no shape: give the inputs (--input X.npy)")
    rng = np.random.default_rng(options.seed)
    if encoder == "direct":
        frames = rng.random((options.samples, 1, *shape))
        return np.repeat(frames, timesteps, axis=1)
    if not 0.0 <= options.rate <= 1.0:
        raise ConfigError(f"rate {options.rate}: a spike probability per step is between 0 and 1")
    return (rng.random((options.samples, timesteps, *shape)) < options.rate).astype(np.float64)


def check_memory(graph: nir.NIRGraph, samples: int, timesteps: int, input_values: int, batch_size: int) -> None:
    """Before any input is made: every sample's inputs (float64, and their
    copy in time-major order) and a batch of the reference's values of every
    node (float64) must fit (fer2neuro/memory.py)."""
    needed = steps_bytes(timesteps=timesteps, values=input_values, batch=samples, itemsize=8, copies=2) + \
        steps_bytes(timesteps=timesteps, values=graph_values(graph), batch=min(batch_size, samples), itemsize=8)
    check_fits(needed, f"verifying {samples} samples over T={timesteps}", "--samples, -T or --batch-size")


def open_backends(graph: nir.NIRGraph, options: GraphVerificationOptions, layers: tuple[str, ...],
                  encoder: str, timesteps: int, unavailable: dict[str, str]) -> list[TargetBackend]:
    """Each requested target that can run the graph, recording the
    reference's layers it has; the others go to ``unavailable`` with why
    (a fault inside a target too: the others are still compared)."""
    backends = []
    artifacts = (options.lava, options.onnx)
    for name in options.targets:
        try:
            backend = TargetBackend(name, graph, artifacts=artifacts, layers=None)
            backend.check_encoding(encoder, timesteps)
            if backend.source is None:      # the graph: prepared (planned, lowered) for this very run
                backend.program.prepare(direct=encoder == "direct", dt=backend.dt, timesteps=timesteps)
        except Exception as exc:        # noqa: BLE001 - its verdict, as inspect gives it (unable_reason)
            unavailable[name] = unable_reason(exc)
            continue
        common = [layer for layer in layers if layer in backend.layers]
        if not common:
            unavailable[name] = f"it records none of the graph's spiking layers ({', '.join(layers)})"
            continue
        backend.layers = common
        backends.append(backend)
    return backends


def verify_graph(path, options: GraphVerificationOptions, group: Group = SINGLE) -> GraphReport:
    """Under torchrun (``group`` of several ranks) every rank makes every
    input, runs only its shard of the samples, and ends with the report of
    all of them (Report.merge_shards)."""
    graph = dialects.read(path, options.semantics)
    dt_assumed = options.dt is None and GraphInfo.of(graph).dt is None
    if options.dt is not None:
        # every target (and its check) runs a graph at the dt its metadata gives
        graph.metadata = {**(getattr(graph, "metadata", None) or {}), "dt": float(options.dt)}
    info = GraphInfo.of(graph)
    try:
        get_target(GRAPH_REFERENCE).check(graph)
    except TargetError as exc:
        raise TargetError(f"{path}: the {GRAPH_REFERENCE} reference cannot run this graph: {one_line(exc)}") \
            from None
    reference = TargetBackend(GRAPH_REFERENCE, graph, layers=None)
    layers = tuple(reference.layers)
    if not layers:
        raise GraphError(f"{path}: the graph has no spiking layer to compare")
    input_name, shape = single_input(graph, path)
    if options.inputs is not None:
        x = make_inputs(graph, path, options, encoder="", timesteps=0)     # checked, (B, T, *input_shape)
        encoder = "direct" if np.all(x == x[:, :1]) else "poisson"
        timesteps = x.shape[1]
        check_memory(graph, len(x), timesteps, x[0, 0].size, options.batch_size)
    else:
        encoder = options.encoder or (info.encoder if info.encoder in ENCODERS else "poisson")
        if encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {encoder!r}: use one of {', '.join(ENCODERS)}")
        timesteps = options.timesteps or checked_timesteps(info.timesteps or DEFAULT_TIMESTEPS,
                                                           f"{path}'s metadata")
        check_memory(graph, options.samples, timesteps, int(np.prod(shape or (0,))), options.batch_size)
        x = make_inputs(graph, path, options, encoder, timesteps)
    report = GraphReport(graph_path=str(path), options=options, encoder=encoder, timesteps=timesteps,
                         samples=len(x), dt=reference.dt, dt_assumed=dt_assumed, input_name=input_name,
                         output_layer=output_layer(graph, layers), reference_program=reference.program)
    backends = open_backends(graph, options, layers, encoder, timesteps, report.unavailable)
    predict = output_classes(report.output_layer, graph, reference.dt) if report.output_layer else None
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, *range(2, x.ndim))))    # (T, B, ...)
    mine = [part for _, part in shard_batches(len(x), options.batch_size, group) if part is not None]
    with failing_together(group):
        for part in progress_bar(mine, desc="verify", unit="batch", disable=not options.progress, leave=False):
            encoded = inputs[:, part]
            t0 = time.perf_counter()
            ref = reference.run(None, encoded)
            report.reference_seconds += time.perf_counter() - t0
            if part is mine[0]:
                report.comparisons = {
                    b.name: BackendComparison.start(b.name, b.arithmetic, {n: ref[n].shape[2:] for n in b.layers},
                                                    timesteps)
                    for b in backends}
            compare_batch(report, backends, ref, encoded, None, part.start, predict=predict, tolerate=True)
    report.merge_shards(group)
    report.programs = {b.name: b.program for b in backends if b.name in report.comparisons}
    return report
