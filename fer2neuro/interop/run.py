"""``fer2neuro interop``: one NIR graph, the same inputs, fer2neuro's targets
and each peer's own importer and simulator, compared spiking layer by
spiking layer with fer2neuro's ``nir`` target (float64, the reference).

Per peer: whether it loads the file and runs it, and per spiking layer the
share of neuron-steps equal to the reference, the spike counts, and the
first divergence (layer, sample, neuron, step). For the first layer that
diverges, the candidate causes are tested (causes.py), and the peer's whole
dialect (nirgraph/dialects) is tried on the whole graph: the report names
the causes that make the layer exact.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from fer2neuro.errors import Fer2NeuroError
from fer2neuro.interop import causes
from fer2neuro.interop.peers import PEERS, PeerResult, run_peer
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import GraphInfo, write_graph
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target
from fer2neuro.verification.graph import GRAPH_REFERENCE, GraphVerificationOptions, make_inputs
from fer2neuro.errors import one_line

DEFAULT_DT = 1.0


@dataclass
class InteropOptions:
    peers: list[str]
    targets: list[str] = field(default_factory=list)   # fer2neuro targets besides nir, each compared with it
    semantics: str = dialects.NIR.name  # how fer2neuro reads the graph (nirgraph/dialects), or "auto"
    inputs: np.ndarray | None = None
    input_path: str | None = None
    samples: int = 4
    seed: int = 0
    rate: float = 0.2
    dt: float | None = None
    timesteps: int | None = None
    encoder: str | None = None
    diagnose: bool = True


@dataclass
class LayerResult:
    layer: str
    shape: tuple[int, ...]
    equal: float | None                 # share of equal neuron-steps; None when the peer did not record it
    spikes_reference: int
    spikes_other: int | None
    first: dict | None = None           # {"sample", "neuron", "step", "reference", "other"}

    @property
    def exact(self) -> bool:
        return self.equal == 1.0

    def to_dict(self) -> dict:
        return {"layer": self.layer, "shape": list(self.shape), "equal": self.equal, "exact": self.exact,
                "spikes_reference": self.spikes_reference, "spikes_other": self.spikes_other,
                "first_divergence": self.first}


def compare_layers(layers: list[str], reference: dict[str, np.ndarray],
                   other: dict[str, np.ndarray]) -> list[LayerResult]:
    results = []
    for layer in layers:
        ref = np.asarray(reference[layer], dtype=np.float64)
        got = other.get(layer)
        if got is None or np.shape(got) != ref.shape:
            results.append(LayerResult(layer, ref.shape[2:], None, int(ref.sum()), None))
            continue
        got = np.asarray(got, dtype=np.float64)
        differ = got != ref
        first = None
        if differ.any():
            where = np.argwhere(differ)
            k = np.lexsort((where[:, 0], where[:, 1]))[0]        # earliest step, then lowest sample
            b, t, *neuron = (int(i) for i in where[k])
            first = {"sample": b, "step": t, "neuron": neuron,
                     "reference": float(ref[(b, t, *neuron)]), "other": float(got[(b, t, *neuron)])}
        results.append(LayerResult(layer, ref.shape[2:], float(1.0 - differ.mean()), int(ref.sum()),
                                   int(got.sum()), first))
    return results


def first_divergent(results: list[LayerResult]) -> LayerResult | None:
    return next((r for r in results if not r.exact), None)


@dataclass
class PeerComparison:
    peer: str
    result: PeerResult
    layers: list[LayerResult] = field(default_factory=list)
    tests: list[causes.CauseTest] = field(default_factory=list)
    dialect_equal: dict[str, float] | None = None      # per layer, the peer's dialect on the nir target
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.result.ran and bool(self.layers) and all(r.exact for r in self.layers)

    @property
    def likely_causes(self) -> list[str]:
        """The simplest tested explanation of the first divergent layer: the
        single conventions that make it exact, else the combination that
        does, else those that bring it closest (if they improve on NIR's
        equations at all). The whole dialect ("semantics") is reported on
        its own, not here."""
        if self.exact:
            return []
        if self.dropped:
            return ["unsupported"]
        tests = [t for t in self.tests if t.cause != "semantics"]
        if not tests:
            return []
        singles = [t.cause for t in tests if t.equal == 1.0 and " + " not in t.cause]
        combined = [t.cause for t in tests if t.equal == 1.0 and " + " in t.cause]
        if singles or combined:
            return singles or combined[:1]
        first = first_divergent(self.layers)
        base = first.equal if first and first.equal is not None else 0.0
        best = max(t.equal for t in tests)
        return [t.cause for t in tests if t.equal == best and best > base]

    @property
    def dropped(self) -> list[str]:
        """Spiking layers the peer's importer built no module for (its
        runner says so): the "unsupported" cause, seen, not tested."""
        modules = self.result.report.get("layers", {})
        return [x.layer for x in self.layers if x.equal is None
                and str(modules.get(x.layer, "")).startswith("(no module")]

    def verdict(self) -> str:
        """One line."""
        r = self.result
        if not r.installed:
            return f"not installed ({r.error})"
        if not r.loaded:
            return f"does not load: {r.error}"
        if not r.ran:
            return f"loads, does not run: {r.error}"
        if self.exact:
            return "exact in every spiking layer"
        missing = [x.layer for x in self.layers if x.equal is None]
        first = first_divergent(self.layers)
        words = []
        if first is not None and first.equal is not None:
            words.append(f"first divergence in {first.layer} ({100 * first.equal:.1f} % of neuron-steps equal)")
        if missing:
            words.append(f"no spikes recorded for {', '.join(missing)}")
        if self.dropped:
            words.append(f"cause: unsupported (the importer built no module for {', '.join(self.dropped)})")
        elif self.likely_causes:
            test = {t.cause: t for t in self.tests}
            words.append("cause: " + ", ".join(
                f"{c} ({test[c].change}: {100 * test[c].equal:.1f} % equal)" for c in self.likely_causes))
        if self.dialect_equal and all(v == 1.0 for v in self.dialect_equal.values()):
            words.append(f"read with --semantics {self.peer}, fer2neuro gives exactly its spikes")
        return "; ".join(words)

    def to_dict(self) -> dict:
        r = self.result
        return {"peer": self.peer, "tool": PEERS[self.peer], "version": r.version,
                "installed": r.installed, "loads": r.loaded, "runs": r.ran, "exact": self.exact,
                "error": r.error, "stage": r.report.get("stage"), "peer_dt": r.report.get("dt"),
                "modules": r.report.get("layers", {}), "notes": r.report.get("notes", []),
                "layers": [x.to_dict() for x in self.layers],
                "causes_tested": [t.to_dict() for t in self.tests], "likely_causes": self.likely_causes,
                "with_peer_semantics": self.dialect_equal, "verdict": self.verdict(),
                "seconds": round(self.seconds, 2)}


@dataclass
class InteropReport:
    source: str
    semantics: str
    dt: float
    dt_assumed: bool                    # the graph had no dt and none was given
    timesteps: int
    samples: int
    inputs_words: str
    layers: list[str]
    targets: dict[str, list[LayerResult] | str] = field(default_factory=dict)   # name -> layers, or why not
    peers: list[PeerComparison] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "semantics": self.semantics, "dt": self.dt, "dt_assumed": self.dt_assumed,
                "timesteps": self.timesteps, "samples": self.samples, "inputs": self.inputs_words,
                "reference": "nir (float64)", "layers": self.layers,
                "targets": {name: (v if isinstance(v, str) else [x.to_dict() for x in v])
                            for name, v in self.targets.items()},
                "peers": {p.peer: p.to_dict() for p in self.peers}}


def _spikes_only(recording) -> dict[str, np.ndarray]:
    return {name: recording.outputs[name] for name in recording.spiking}


def _diagnose(comparison: PeerComparison, graph: nir.NIRGraph, flat, outputs, x, dt, semantics: str) -> None:
    """Test the causes on the first divergent layer, and the peer's dialect
    on the whole graph (module docstring)."""
    first = first_divergent(comparison.layers)
    if first is None or first.equal is None:
        return
    peer_spikes = comparison.result.spikes[first.layer]
    dialect = dialects.named(comparison.peer)
    comparison.tests = causes.test_layer_causes(flat, first.layer, outputs, peer_spikes, dt, dialect.default_dt)
    reread = causes.channels_last_flatten(graph)
    if reread is not None:
        rec = get_target(GRAPH_REFERENCE).open(reread).run(x, dt=dt, record=[first.layer])
        comparison.tests.append(causes.CauseTest("flatten", "Affine after Flatten read channels last (H, W, C)",
                                                 causes.equal_fraction(rec.outputs[first.layer], peer_spikes)))
    if semantics == dialects.NIR.name and dialect is not dialects.NIR:
        try:
            peer_graph = dialects.apply(graph, dialect.name)
            rec = get_target(GRAPH_REFERENCE).open(peer_graph).run(x, dt=dt, record="spikes")
        except Fer2NeuroError:
            return
        ours = _spikes_only(rec)
        comparison.dialect_equal = {r.layer: r.equal for r in compare_layers(
            [layer for layer in ours if layer in comparison.result.spikes], ours, comparison.result.spikes)}
        if comparison.dialect_equal and all(v == 1.0 for v in comparison.dialect_equal.values()):
            comparison.tests.append(causes.CauseTest(
                "semantics", f"the whole graph run with --semantics {dialect.name} "
                             f"({'; '.join(f'{k}: {v}' for k, v in dialect.conventions.items())})", 1.0))


def graph_file(graph: nir.NIRGraph, source, tmp: Path) -> Path:
    """The file the peers read: the user's .nir file itself, or the graph
    written for them (a checkpoint exported on the fly)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".nir":
        return path
    out = tmp / "graph.nir"
    write_graph(graph, out)
    return out


def interop(source, graph: nir.NIRGraph, options: InteropOptions, progress=None) -> InteropReport:
    """``graph`` (read from ``source``) through fer2neuro's targets and the peers."""
    say = progress or (lambda message: None)
    semantics = dialects.detect(graph) if options.semantics == "auto" else options.semantics
    ours = dialects.apply(graph, semantics)
    info = GraphInfo.of(ours)
    dt_assumed = options.dt is None and info.dt is None
    dt = float(options.dt if options.dt is not None else (info.dt if info.dt is not None else DEFAULT_DT))
    verify_options = GraphVerificationOptions(targets=[], inputs=options.inputs, input_path=options.input_path,
                                              samples=options.samples, seed=options.seed, rate=options.rate)
    encoder = options.encoder or (info.encoder if info.encoder in ("direct", "poisson") else "poisson")
    timesteps = options.timesteps or info.timesteps or 20
    x = make_inputs(ours, source, verify_options, encoder, timesteps)
    if options.inputs is not None:
        words = f"{len(x)} samples from {options.input_path or 'the given array'}"
    elif encoder == "direct":
        words = f"{len(x)} uniform frames held over time, seed {options.seed}"
    else:
        words = f"{len(x)} Bernoulli spike trains at rate {options.rate:g}, seed {options.seed}"
    say(f"nir (reference): {len(x)} samples x {x.shape[1]} steps, dt {dt:g}")
    reference = get_target(GRAPH_REFERENCE).open(ours).run(x, dt=dt, record="all")
    spikes = _spikes_only(reference)
    layers = list(spikes)
    report = InteropReport(str(source), semantics, dt, dt_assumed, int(x.shape[1]), int(len(x)), words, layers)
    for name in options.targets:
        say(f"{name}: running")
        try:
            rec = get_target(name).open(ours).run(x, dt=dt, record="spikes")
            report.targets[name] = compare_layers(layers, spikes, _spikes_only(rec))
        except Fer2NeuroError as exc:
            report.targets[name] = one_line(exc)
    flat = flatten_graph(ours)
    with tempfile.TemporaryDirectory(prefix="fer2neuro-interop-") as tmp:
        path = graph_file(graph, source, Path(tmp))
        for peer in options.peers:
            say(f"{peer}: loading {path.name} with {PEERS[peer]}'s NIR importer")
            t0 = time.perf_counter()
            result = run_peer(peer, path, x, dt=dt)
            comparison = PeerComparison(peer, result)
            if result.ran:
                comparison.layers = compare_layers(layers, spikes, result.spikes)
                if options.diagnose:
                    _diagnose(comparison, ours, flat, reference.outputs, x, dt, semantics)
            comparison.seconds = time.perf_counter() - t0
            report.peers.append(comparison)
            say(f"{peer}: {comparison.verdict()}")
    return report


@dataclass
class PeerExport:
    """A network the peer built and exported itself, read back by fer2neuro
    with NIR's semantics and with the peer's, each compared with the peer's
    own simulation of the network it exported."""

    peer: str
    kind: str
    result: PeerResult
    detected: str | None = None                  # the writer fer2neuro's --semantics auto finds
    read_error: str | None = None                # fer2neuro could not read or run the file
    as_nir: list[LayerResult] = field(default_factory=list)
    as_peer: list[LayerResult] = field(default_factory=list)
    as_peer_error: str | None = None

    def to_dict(self) -> dict:
        r = self.result
        return {"peer": self.peer, "tool": PEERS[self.peer], "version": r.version, "kind": self.kind,
                "exported": r.ran, "error": r.error, "notes": r.report.get("notes", []),
                "detected": self.detected, "read_error": self.read_error,
                "semantics_nir": [x.to_dict() for x in self.as_nir],
                "semantics_peer": [x.to_dict() for x in self.as_peer], "semantics_peer_error": self.as_peer_error,
                "exact_with_peer_semantics": bool(self.as_peer) and all(x.exact for x in self.as_peer)}


def _read_back(path, semantics: str, x: np.ndarray, peer_spikes: dict) -> list[LayerResult]:
    read = dialects.read(path, semantics)
    dt = GraphInfo.of(read).dt or DEFAULT_DT
    rec = get_target(GRAPH_REFERENCE).open(read).run(x, dt=dt, record="spikes")
    ours = _spikes_only(rec)
    layers = [layer for layer in ours if layer in peer_spikes]
    return compare_layers(layers, peer_spikes, ours)


def peer_exports(peers: list[str], kinds: list[str], seed: int = 0, samples: int = 4, timesteps: int = 20,
                 progress=None) -> list[PeerExport]:
    """Each peer's own networks of ``kinds`` (runners/protocol.KINDS),
    exported with its defaults, read back by fer2neuro."""
    from fer2neuro.interop.peers import export_peer
    from fer2neuro.nirgraph.file import read_graph

    say = progress or (lambda message: None)
    results = []
    with tempfile.TemporaryDirectory(prefix="fer2neuro-interop-") as tmp:
        for peer in peers:
            for kind in kinds:
                path = Path(tmp) / f"{peer}-{kind}.nir"
                result, x = export_peer(peer, kind, path, seed=seed, samples=samples, timesteps=timesteps)
                entry = PeerExport(peer, kind, result)
                results.append(entry)
                if not result.ran:
                    say(f"{peer} {kind}: not exported ({result.error})")
                    continue
                try:
                    entry.detected = dialects.detect(read_graph(path, check=False))
                    entry.as_nir = _read_back(path, dialects.NIR.name, x, result.spikes)
                except Fer2NeuroError as exc:
                    entry.read_error = one_line(exc)
                try:
                    entry.as_peer = _read_back(path, peer, x, result.spikes)
                except Fer2NeuroError as exc:
                    entry.as_peer_error = one_line(exc)
                exact = bool(entry.as_peer) and all(r.exact for r in entry.as_peer)
                say(f"{peer} {kind}: read as nir {_share(entry.as_nir)}, as {peer} {_share(entry.as_peer)}"
                    + (" (exact)" if exact else ""))
    return results


def _share(layers: list[LayerResult]) -> str:
    values = [r.equal for r in layers if r.equal is not None]
    return f"{100 * min(values):.1f} % (worst layer)" if values else "-"
