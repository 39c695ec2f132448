"""``fer2neuro export --target lava``: a folder that Lava runs.

    DIR/network.net     lava-dl netx HDF5, integer (Loihi) parameters;
                        ``lava.lib.dl.netx.hdf5.Network`` loads it
    DIR/model.nir       the float graph it was quantised from (the ``lava``
                        float target runs it; with direct encoding the host
                        computes the first synapse from it per sample)
    DIR/manifest.json   T, encoder, class names, per-layer scales and delays

Quantisation, per layer (the layer's float weights W, bias b and threshold
theta already include SPEC §2's gains, see fer2neuro/lowering/lava_plan.py):

- one scale ``s`` maps float to integer units; the neuron compares in the
  units of the weights, so ``vth = round(theta * s)``;
- weights: ``w = 2 * round(W * s / 2)``, even integers in [-256, 254]
  (even for a second reason too, see ties below):
  Loihi's mixed-sign 8-bit synapse keeps 7 magnitude bits and a sign (Lava's
  bit-accurate Dense drops the LSB), so odd values would not survive;
  ``s = 254 / max|W|`` spends all of them on the largest weight; the
  rounding of each output neuron's weights is balanced so its errors cancel
  (``even_sum_preserving``), else an IF layer integrates a systematic error;
- biases: 13-bit signed mantissa with exponent 6 (netx's convention: the
  bias enters v at the same scale as a_in << 6), so ``bias = 2 * round(b * s / 2)``
  and ``s`` is lowered if a bias would exceed 4095;
- thresholds must fit 17 bits: ``s <= 131071 / theta``;
- no ties: the spike test is ``v > vth`` and integer sums often land exactly
  on an integer threshold, where the float sum, a little above or below,
  would decide. Rounded weights and biases to the nearest integer and
  ``vth = theta * s`` lose every spike whose float sum lies within half a
  unit above the threshold (measured: 0.4 % fewer spikes in if1). So ``s``
  is lowered until ``vth = theta * s`` is an odd integer, and weights and
  biases are rounded to even integers: sums are even, never equal to vth,
  and ``v > vth`` splits the grid exactly at the float threshold;
- decays out of 4096: IF ``vDecay = 0``, LIF ``vDecay = round(4096 * dt / tau)``
  (2048 for tau = 2), ``iDecay = 4096`` (u is this step's input, du = 1).

The first layer under direct encoding is netx's ``input`` layer: a neuron
population whose bias the runner sets per sample to the quantised first-conv
current; its scale bounds that current for inputs in [0, 1].
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import nir
import numpy as np

from fer2neuro.atomic import write_text
from fer2neuro.errors import GraphError, TargetError
from fer2neuro.nirgraph.file import GraphInfo, read_graph, write_graph
from fer2neuro.lowering.lava_plan import LavaLayer, LavaPlan, build_plan

FORMAT = "fer2neuro.lava"
NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE = "network.net", "model.nir", "manifest.json"
WEIGHT_MAX, BIAS_MAX, VTH_MAX, DECAY_UNITY = 254, 4095, 131071, 4096


@dataclass(frozen=True)
class QuantizedLayer:
    name: str
    scale: float
    vth: int
    v_decay: int
    i_decay: int
    weight: np.ndarray | None        # int, NIR layout
    bias: np.ndarray | None          # int, per neuron (C, H, W) / (N,), or None

    def manifest(self, layer: LavaLayer) -> dict:
        return {"name": self.name, "kind": layer.kind, "shape": list(layer.shape), "depth": layer.depth,
                "scale": self.scale, "vth": self.vth, "vDecay": self.v_decay, "iDecay": self.i_decay,
                "weight_min": None if self.weight is None else int(self.weight.min()),
                "weight_max": None if self.weight is None else int(self.weight.max()),
                "bias_max_abs": None if self.bias is None else int(np.abs(self.bias).max())}


def input_current_bound(plan: LavaPlan) -> float:
    """Largest |first-layer current| an input in [0, 1] can cause: per output
    channel, bias plus all positive or all negative weights."""
    node = plan.first_synapse
    weight = np.asarray(node.weight, dtype=np.float64)
    flat = weight.reshape(weight.shape[0], -1)
    bias = getattr(node, "bias", None)
    bias = np.zeros(len(flat)) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    high = bias + np.where(flat > 0, flat, 0).sum(1)
    low = bias + np.where(flat < 0, flat, 0).sum(1)
    reach = np.maximum(np.abs(high), np.abs(low))
    return float(reach.max() * np.abs(plan.first_gain).max() + np.abs(plan.layers[0].bias).max())


def even(x: np.ndarray) -> np.ndarray:
    """Nearest even integers."""
    return (2 * np.round(np.asarray(x) / 2)).astype(np.int32)


def even_sum_preserving(w: np.ndarray) -> np.ndarray:
    """Even integers near ``w`` (scaled weights), rounded so that each output
    neuron's (row's) rounding errors cancel: plain rounding leaves a row
    error whose sign depends on how the row's small weights happen to lean,
    and an IF layer integrates it on every step (measured in if2 of the demo
    model: mean current error -0.3 % of threshold, 0.7 % fewer spikes).
    Each weight still moves less than 2 units from ``w``; the row sum moves
    at most 1 unit."""
    rows = w.reshape(w.shape[0], -1)
    rounded = even(rows).astype(np.int64)
    residual = rows - rounded                                   # in (-1, 1]
    steps = np.round((rows.sum(1) - rounded.sum(1)) / 2).astype(np.int64)   # +-2-unit moves per row
    order = np.argsort(-residual, axis=1)                       # most under-rounded first
    for row in np.nonzero(steps)[0]:
        k = steps[row]
        idx = order[row, :k] if k > 0 else order[row, k:]
        rounded[row, idx] += 2 if k > 0 else -2
    return np.clip(rounded, -256, WEIGHT_MAX).reshape(w.shape).astype(np.int32)


def odd_threshold(limit: float) -> int:
    """The largest odd integer <= limit: the integer threshold."""
    n = int(np.floor(limit))
    return max(1, n if n % 2 else n - 1)


def quantize_layer(layer: LavaLayer, plan: LavaPlan) -> QuantizedLayer:
    limits = [VTH_MAX / layer.vth] if layer.vth > 0 else []
    if layer.kind == "bias":
        limits.append(BIAS_MAX / max(input_current_bound(plan), 1e-12))
    else:
        limits.append(WEIGHT_MAX / max(np.abs(layer.weight).max(), 1e-12))
        if layer.bias is not None and np.abs(layer.bias).max() > 0:
            limits.append(BIAS_MAX / np.abs(layer.bias).max())
    scale = float(min(limits))
    if layer.vth > 0:
        scale = odd_threshold(layer.vth * scale) / layer.vth
    weight = None if layer.weight is None else \
        even_sum_preserving(layer.weight * scale)
    bias = None
    if layer.kind != "bias" and layer.bias is not None and np.any(layer.bias != 0):
        bias = even(np.broadcast_to(layer.bias, layer.shape) * scale)
    if layer.vth * scale < 0.5:
        raise TargetError(f"layer {layer.name}: threshold {layer.vth} rounds to 0 at scale {scale:.3g}")
    return QuantizedLayer(name=layer.name, scale=scale, vth=int(round(layer.vth * scale)),
                          v_decay=int(round(DECAY_UNITY * layer.dv)), i_decay=DECAY_UNITY,
                          weight=weight, bias=bias)


def _write_neuron(group: h5py.Group, q: QuantizedLayer) -> None:
    n = group.create_group("neuron")
    n.create_dataset("type", data=b"CUBA")
    for key, value in (("iDecay", q.i_decay), ("vDecay", q.v_decay), ("vThMant", q.vth), ("refDelay", 1)):
        n.create_dataset(key, data=np.int64(value))
    n.create_dataset("gradedSpike", data=False)


def _channel_bias(q: QuantizedLayer, layer: LavaLayer) -> np.ndarray | None:
    """netx broadcasts a conv bias per channel; per-neuron biases it takes whole."""
    if q.bias is None:
        return None
    if layer.kind == "conv":
        per_channel = q.bias.reshape(q.bias.shape[0], -1)
        if np.all(per_channel == per_channel[:, :1]):
            return per_channel[:, 0]
        raise TargetError(f"layer {layer.name}: netx takes one bias per conv channel")
    return q.bias


def write_netx(plan: LavaPlan, quantized: list[QuantizedLayer], path: str | Path) -> None:
    """The plan as a lava-dl netx HDF5 network (layer order = data flow)."""
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        index = 0

        def group():
            nonlocal index
            g = layers.create_group(str(index))
            index += 1
            return g

        if not plan.direct:
            g = group()
            g.create_dataset("type", data=b"input")
            g.create_dataset("shape", data=np.array(plan.input_shape))
        for layer, q in zip(plan.layers, quantized):
            if layer.flatten_input:
                group().create_dataset("type", data=b"flatten")
            g = group()
            g.create_dataset("shape", data=np.array(layer.shape))
            _write_neuron(g, q)
            if layer.kind == "bias":
                g.create_dataset("type", data=b"input")
                continue
            g.create_dataset("type", data=layer.kind.encode())
            g.create_dataset("weight", data=q.weight)
            bias = _channel_bias(q, layer)
            if bias is not None:
                g.create_dataset("bias", data=bias)
            if layer.kind == "conv":
                for key in ("stride", "padding", "dilation"):
                    g.create_dataset(key, data=np.array(layer.conv[key]))
                g.create_dataset("groups", data=np.int64(layer.conv["groups"]))


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

    def layer_scales(self) -> dict[str, float]:
        return {entry["name"]: entry["scale"] for entry in self.manifest["layers"]}

    @classmethod
    def load(cls, folder: str | Path) -> "LavaArtifact":
        folder = Path(folder)
        if not folder.is_dir():
            raise GraphError(f"{folder}: no such Lava export folder (make one with "
                             f"'fer2neuro export CKPT --target lava --out {folder}')")
        for name in (NETWORK_FILE, GRAPH_FILE, MANIFEST_FILE):
            if not (folder / name).is_file():
                raise GraphError(f"{folder}: incomplete Lava export, {name} is missing")
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise GraphError(f"{folder / MANIFEST_FILE}: not valid JSON ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise GraphError(f"{folder / MANIFEST_FILE}: not a fer2neuro Lava manifest")
        return cls(folder=folder, manifest=manifest, graph=read_graph(folder / GRAPH_FILE))


@contextmanager
def quantised_artifact(graph: nir.NIRGraph, *, direct: bool, dt: float | None):
    """``graph`` exported to a temporary Lava folder, loaded; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fer2neuro-lava-") as tmp:
        write_artifact(graph, Path(tmp) / "export", direct=direct, dt=dt)
        yield LavaArtifact.load(Path(tmp) / "export")


def write_artifact(graph: nir.NIRGraph, out: str | Path, *, direct: bool | None = None,
                   dt: float | None = None) -> dict:
    """Quantise ``graph`` and write the Lava folder ``out`` (atomically: the
    folder appears complete or not at all). ``direct`` defaults to the
    graph's encoder metadata, ``dt`` to its dt metadata, else 1."""
    info = GraphInfo.of(graph)
    if direct is None:
        direct = (info.encoder or "direct") == "direct"
    plan = build_plan(graph, direct=direct, dt=dt or info.dt or 1.0, target="lava")
    quantized = [quantize_layer(layer, plan) for layer in plan.layers]
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST_FILE).is_file())):
        raise GraphError(f"{out}: exists and is not a Lava export folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_netx(plan, quantized, staging / NETWORK_FILE)
        write_graph(graph, staging / GRAPH_FILE)
        manifest = {
            "format": FORMAT, "format_version": 1, "timesteps": info.timesteps, "dt": plan.dt,
            "encoder": "direct" if direct else "poisson", "class_names": list(info.class_names),
            "input": "bias" if direct else "spikes", "input_shape": list(plan.input_shape),
            "run_steps_extra": plan.max_depth,
            "layers": [q.manifest(layer) for layer, q in zip(plan.layers, quantized)],
        }
        write_text(staging / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def quantized_input_bias(artifact: "LavaArtifact", plan: LavaPlan, frame: np.ndarray) -> np.ndarray:
    """Direct encoding: the first layer's integer bias for one input frame,
    (C, H, W), or for a batch of frames. A value beyond the 13-bit mantissa
    is an error, not a wrap."""
    scale = artifact.layer_scales()[plan.layers[0].name]
    bias = even(plan.input_bias(frame) * scale)
    worst = np.abs(bias).max()
    if worst > BIAS_MAX:
        raise TargetError(f"layer {plan.layers[0].name}: input current {worst / scale:.4g} overflows the "
                          f"13-bit bias mantissa at scale {scale:.4g} (|bias| {int(worst)} > {BIAS_MAX}); "
                          f"inputs must lie in [0, 1]")
    return bias


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None) -> dict:
    """``fer2neuro export CKPT --target lava --out DIR``."""
    from fer2neuro.exporters.nir_export import model_to_nir
    from fer2neuro.model.checkpoint import load_model

    model, _ = load_model(checkpoint, "cpu")
    graph = model_to_nir(model, encoder=encoder, timesteps=timesteps)
    manifest = write_artifact(graph, out)
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    return {"target": "lava", "path": str(out), "bytes": size, "files": sorted(p.name for p in Path(out).iterdir()),
            "dt": manifest["dt"], "timesteps": manifest["timesteps"], "encoder": manifest["encoder"],
            "class_names": manifest["class_names"],
            "nodes": {entry["name"]: entry["kind"] for entry in manifest["layers"]},
            "edges": len(manifest["layers"]), "layers": manifest["layers"],
            "summary": f"lava-dl netx network of {len(manifest['layers'])} layers (+ model.nir, manifest.json), "
                       f"{manifest['encoder']} input, T={manifest['timesteps']}, "
                       f"weights {min(e['weight_min'] for e in manifest['layers'] if e['weight_min'] is not None)}.."
                       f"{max(e['weight_max'] for e in manifest['layers'] if e['weight_max'] is not None)}"}
