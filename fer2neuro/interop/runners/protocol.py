"""The file protocol between fer2neuro and a peer runner.

A runner is a script run with a peer's own Python (``.peers/<peer>/bin/python
fer2neuro/interop/runners/<peer>.py ...``). That environment has the peer, its
pinned ``nir`` and numpy, and nothing of fer2neuro: this module imports only
the standard library and numpy (the peer's nir inside ``spiking_nodes``), and
each runner imports it as a sibling file, as it imports the others it shares
(torch_peer.py, nir104.py, samna_guard.py), then leaves the folder
(``leave_folder``).

Commands (every runner takes the same ones)::

    <peer>.py version
        prints {"peer": ..., "version": ..., "nir": ...} as JSON

    <peer>.py run GRAPH.nir INPUTS.npy OUT.npz [--dt DT]
        loads GRAPH with the peer's own documented NIR importer, runs the
        peer's own simulation on INPUTS (B, T, *input_shape), float64, and
        writes OUT.npz: one array (B, T, *shape) per spiking node of GRAPH,
        keyed by the node's name in GRAPH, spike counts per step as float64.
        --dt: the dt handed to an importer that takes one (else its default).

    <peer>.py export KIND OUT.nir INPUTS.npy RECORD.npz [--seed S]
        builds the peer's own small network of KIND (see KINDS), with the
        peer's default settings and seeded weights, exports it with the peer's
        own NIR exporter to OUT.nir, draws seeded inputs (saved to INPUTS.npy,
        (B, T, *input_shape) float64), runs the peer's own simulation and
        writes RECORD.npz keyed by the exported file's node names, as ``run``.

Whatever happens, the last line on stdout is one JSON report (``Report``):
which stage was reached (``loaded``, ``ran``), the error and its stage where
one stopped it, one line per layer saying which peer module produced it, and
notes. The exit status is 0 when the report was written, whatever it says; a
non-zero status means the runner itself broke.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

KINDS = {
    "dense": "Input -> Linear/Affine -> LIF -> Linear/Affine -> LIF -> Output (feed-forward)",
    "conv": "Input -> Conv2d -> LIF (or IF) -> pool -> Flatten -> Linear/Affine -> LIF -> Output",
    "recurrent": "Input -> Linear/Affine -> LIF with a recurrent weight -> Linear/Affine -> LIF -> Output",
}
REPORT_PREFIX = "FER2NEURO-RUNNER-REPORT "   # the report line starts with this
SPIKING = ("IF", "LIF", "CubaLIF", "Threshold")      # NIR node types whose output is spikes


def leave_folder(script: str) -> None:
    """Take the runners' folder off ``sys.path`` once runner ``script`` has
    imported its siblings. A runner is named like its peer (snntorch.py): its
    folder, which Python puts first on sys.path for a script, must not
    shadow the real package."""
    here = os.path.dirname(os.path.abspath(script))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    sys.modules.pop(os.path.splitext(os.path.basename(script))[0], None)


def spiking_nodes(graph, prefix: str = "") -> dict:
    """NIR name -> node, for every spiking node of a graph the peer's nir
    read, subgraphs inlined as ``sub.node``: the names a record is keyed by
    (those fer2neuro's nir target records)."""
    import nir

    found = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            found.update(spiking_nodes(node, f"{prefix}{name}."))
        elif type(node).__name__ in SPIKING:
            found[prefix + name] = node
    return found


@dataclass
class Report:
    peer: str
    version: str = ""
    nir_version: str = ""
    command: str = ""
    loaded: bool = False
    ran: bool = False
    stage: str | None = None            # "load", "run", "export", where an error stopped it
    error: str | None = None            # one line
    layers: dict = field(default_factory=dict)    # NIR node name -> the peer module that produced it
    notes: list = field(default_factory=list)
    dt: float | None = None             # the dt the peer simulated at, where it has one

    def fail(self, stage: str, exc: BaseException) -> None:
        self.stage = stage
        self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if os.environ.get("FER2NEURO_RUNNER_TRACEBACK"):
            traceback.print_exc(file=sys.stderr)

    def emit(self) -> None:
        sys.stdout.flush()
        print(REPORT_PREFIX + json.dumps(asdict(self)), flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version")
    run = sub.add_parser("run")
    run.add_argument("graph")
    run.add_argument("inputs")
    run.add_argument("out")
    run.add_argument("--dt", type=float, default=None)
    export = sub.add_parser("export")
    export.add_argument("kind", choices=sorted(KINDS))
    export.add_argument("graph")
    export.add_argument("inputs")
    export.add_argument("out")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--samples", type=int, default=4)
    export.add_argument("--timesteps", type=int, default=20)
    return parser.parse_args(argv)


def load_inputs(path) -> np.ndarray:
    x = np.load(path, allow_pickle=False)
    return np.asarray(x, dtype=np.float64)


def save_record(path, spikes: dict) -> None:
    """Spike counts per node, written through a temporary file."""
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in spikes.items()}
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def seeded_spikes(seed: int, samples: int, timesteps: int, shape, rate: float = 0.3) -> np.ndarray:
    """Bernoulli spike trains (B, T, *shape) as float64, as verify draws them."""
    rng = np.random.default_rng(seed)
    return (rng.random((samples, timesteps, *shape)) < rate).astype(np.float64)


def main(peer: str, version, run, export, argv=None) -> int:
    """The runner's entry point: ``version() -> (peer version, nir version)``,
    ``run(report, graph_path, x, dt) -> {node: (B, T, ...)}`` and
    ``export(report, kind, graph_path, seed, samples, timesteps) -> (x, {node:
    (B, T, ...)})``; each fills ``report`` as it goes and raises on failure."""
    args = parse(argv)
    report = Report(peer=peer, command=args.command)
    try:
        report.version, report.nir_version = version()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report.fail("import", exc)
        report.emit()
        return 0
    if args.command == "run":
        try:
            x = load_inputs(args.inputs)
            spikes = run(report, args.graph, x, args.dt)
            save_record(args.out, spikes)
            report.ran = True
        except Exception as exc:  # noqa: BLE001
            report.fail(report.stage or ("run" if report.loaded else "load"), exc)
    elif args.command == "export":
        try:
            x, spikes = export(report, args.kind, args.graph, args.seed, args.samples, args.timesteps)
            np.save(args.inputs, np.asarray(x, dtype=np.float64))
            save_record(args.out, spikes)
            report.loaded = report.ran = True
        except Exception as exc:  # noqa: BLE001
            report.fail(report.stage or "export", exc)
    report.emit()
    return 0
