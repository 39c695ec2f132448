"""The exported Lava folder (``fer2neuro export --target lava``):

    DIR/network.net     lava-dl netx HDF5, integer (Loihi) parameters
                        (quantise.py, netx_file.py);
                        ``lava.lib.dl.netx.hdf5.Network`` loads it
    DIR/model.nir       the float graph it was quantised from (the ``lava``
                        float target runs it; with direct encoding the host
                        computes the first synapse from it per sample)
    DIR/manifest.json   T, encoder, class names, per-layer scales and delays

The exporter writes it with ``write_artifact``; the targets read it with
``LavaArtifact.load``, which checks the manifest against its versioned
schema (lava_manifest.py) and the network when a run opens it
(netx_file.py ``open_netx``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nir

from fer2neuro.atomic import atomic_folder, check_folder, write_text
from fer2neuro.errors import GraphError, TargetError
from fer2neuro.lowering.lava_manifest import FORMAT, FORMAT_VERSION, read_manifest
from fer2neuro.lowering.lava_plan import build_plan
from fer2neuro.lowering.netx_file import NetxNetwork, write_netx
from fer2neuro.lowering.quantise import quantise
from fer2neuro.nirgraph.file import GraphInfo, read_graph, write_graph

NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE = "network.net", "model.nir", "manifest.json"


def is_lava_folder(path) -> bool:
    """A folder with a manifest: what ``LavaArtifact.load`` opens (or names
    what is missing)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST_FILE).is_file()


@dataclass
class LavaArtifact:
    """An exported Lava folder, loaded."""

    folder: Path
    manifest: dict
    graph: nir.NIRGraph

    @property
    def network_path(self) -> Path:
        return self.folder / NETWORK_FILE

    def check_input_mode(self, direct: bool) -> None:
        """The folder was exported for this kind of input (bias-driven or spikes)."""
        if self.direct != direct:
            want = "constant (direct-encoded)" if self.direct else "spike"
            raise TargetError(f"{self.folder} was exported for {want} inputs; export it again with the "
                              f"other --encoder to run these")

    @property
    def direct(self) -> bool:
        return self.manifest["input"] == "bias"

    @property
    def dt(self) -> float:
        return float(self.manifest["dt"])

    def layer_scales(self) -> dict[str, float]:
        return {entry["name"]: entry["scale"] for entry in self.manifest["layers"]}

    def network(self, target: str = "lava") -> NetxNetwork:
        """The folder's integer network, with the plan of its own graph."""
        plan = build_plan(self.graph, direct=self.direct, dt=self.dt, target=target)
        if [layer.name for layer in plan.layers] != [entry["name"] for entry in self.manifest["layers"]]:
            raise GraphError(f"{self.folder}: {MANIFEST_FILE} and {GRAPH_FILE} disagree on the layers")
        return NetxNetwork(plan=plan, scales=self.layer_scales(), netx=self.network_path)

    @classmethod
    def load(cls, folder: str | Path) -> "LavaArtifact":
        folder = Path(folder)
        if not folder.is_dir():
            raise GraphError(f"{folder}: no such Lava export folder (make one with "
                             f"'fer2neuro export CKPT --target lava --out {folder}')")
        for name in (NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE):
            if not (folder / name).is_file():
                raise GraphError(f"{folder}: incomplete Lava export, {name} is missing")
        manifest = read_manifest(folder / MANIFEST_FILE)     # every field checked (lava_manifest.py)
        return cls(folder=folder, manifest=manifest, graph=read_graph(folder / GRAPH_FILE))


def write_artifact(graph: nir.NIRGraph, out: str | Path, *, direct: bool | None = None,
                   dt: float | None = None) -> dict:
    """Quantise ``graph`` and write the Lava folder ``out`` (atomically: the
    folder appears complete or not at all). ``direct`` defaults to the
    graph's encoder metadata, ``dt`` to its dt metadata, else 1."""
    check_out(out)
    info = GraphInfo.of(graph)
    if direct is None:
        direct = (info.encoder or "direct") == "direct"
    network = quantise(graph, direct=direct, dt=dt or info.dt or 1.0)
    plan = network.plan
    out = Path(out)
    with atomic_folder(out, not_ours, f"--out {out}", ADVICE) as staging:
        write_netx(network, staging / NETWORK_FILE)
        write_graph(graph, staging / GRAPH_FILE)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "timesteps": info.timesteps, "dt": plan.dt,
            "encoder": "direct" if direct else "poisson", "class_names": list(info.class_names),
            "input": "bias" if direct else "spikes", "input_shape": list(plan.input_shape),
            "run_steps_extra": plan.max_depth,
            "layers": [q.manifest(layer) for layer, q in zip(plan.layers, network.layers)],
        }
        write_text(staging / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return manifest


ADVICE = "choose another --out (fer2neuro replaces only a folder it exported, or an empty one)"


def not_ours(folder: Path) -> list[str]:
    """What in ``folder`` an export did not write: its manifest, with our
    format, is the marker; without it nothing there is ours. ``--out`` onto a
    folder replaces it only when this is empty (docs/reliability.md)."""
    names = sorted(os.listdir(folder))
    try:
        marker = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        marker = None
    if not (isinstance(marker, dict) and marker.get("format") == FORMAT):
        return names
    return [name for name in names
            if name not in (NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE) or not (folder / name).is_file()]


def check_out(out: str | Path) -> None:
    """Refuse, before any work, an ``out`` that an export may not replace: a
    file, a device, a folder holding what fer2neuro did not write or what
    this command reads."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise GraphError(f"{out}: exists and is not a Lava export folder; {ADVICE}")
    check_folder(path, not_ours, f"--out {out}", ADVICE)
