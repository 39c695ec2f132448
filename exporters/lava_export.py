"""``fer2neuro export --target lava``: a folder that Lava runs (its layout
and the quantisation are in fer2neuro/lowering/lava_folder.py and
quantise.py, shared with the targets that read it)."""
from __future__ import annotations

from pathlib import Path

from fer2neuro.lowering.lava_folder import check_out, write_artifact


def export_checkpoint(checkpoint, out, *, encoder: str | None = None, timesteps: int | None = None) -> dict:
    """``fer2neuro export CKPT --target lava --out DIR``."""
    from fer2neuro.exporters.nir_export import model_to_nir
    from fer2neuro.model.checkpoint import load_model

    check_out(out)                      # before the work: --out is a folder an export may replace
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
