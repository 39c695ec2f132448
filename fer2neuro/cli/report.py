"""``fer2neuro report``"""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from fer2neuro.cli.options import split_option
from fer2neuro.cli.base import Fer2NeuroCommand, data_option, emit_json, json_option


def _artifact_for(path: str, folder: Path):
    """An exported Lava folder as is, or a checkpoint / .nir exported to ``folder``."""
    from fer2neuro.lowering.lava_folder import LavaArtifact, write_artifact
    from fer2neuro.exporters.nir_export import graph_from_path

    if Path(path).is_dir():
        return LavaArtifact.load(path)
    write_artifact(graph_from_path(path), folder / "lava")
    return LavaArtifact.load(folder / "lava")


@click.command(cls=Fer2NeuroCommand)
@click.argument("source", type=click.Path(), metavar="CKPT|GRAPH|LAVA_DIR")
@click.option("--target", type=click.Choice(["loihi"]), default=None,
              help="loihi: the Loihi 2 resource estimate instead of the efficiency report.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="A second checkpoint (e.g. the CNN baseline) reported side by side.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples whose real spikes give the synaptic operations.")
@data_option
@split_option()
@click.option("--neurons-per-core", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--synapses-per-core", type=click.IntRange(min=1), default=937_500, show_default=True)
@click.option("--cores-per-chip", type=click.IntRange(min=1), default=128, show_default=True)
@json_option
def report(source, target, baseline, samples, data, split, neurons_per_core, synapses_per_core, cores_per_chip,
           as_json):
    """Efficiency of a checkpoint (paper Table 3): parameters, size,
    mult-adds, synaptic operations measured from real spikes per layer, an
    energy estimate for the SNN and for the same layers as an ANN (constants
    and source stated), and measured training and inference throughput;
    with --baseline, a second checkpoint side by side.

    With --target loihi: what the model needs on Loihi 2 (neurons, synapses,
    cores, chips; layers that do not fit; where a current could wrap),
    quantised as 'export --target lava'. Default limits: Intel's Loihi 2
    brief (128 cores, 1M neurons and 120M synapses per chip), spread evenly.

    \b
    Examples:
      fer2neuro report runs/demo/best.pt
      fer2neuro report runs/snn/best.pt --baseline runs/cnn/best.pt --json
      fer2neuro report runs/demo/best.pt --target loihi
      fer2neuro report runs/demo/lava --target loihi --synapses-per-core 500000 --json
    """
    if target is None:
        return _efficiency(source, baseline, samples, data, split, as_json)
    from fer2neuro.lowering.lava_plan import build_plan
    from fer2neuro.targets.loihi.network import load_netx
    from fer2neuro.targets.loihi.resources import CoreLimits, estimate, summary

    limits = CoreLimits(neurons_per_core, synapses_per_core, cores_per_chip)
    with tempfile.TemporaryDirectory(prefix="fer2neuro-report-") as tmp:
        artifact = _artifact_for(source, Path(tmp))
        layers, input_shape = load_netx(artifact.network_path)
        plan = build_plan(artifact.graph, direct=artifact.direct, target="loihi")
        names = [layer.name for layer in plan.layers]
        result = summary(estimate(layers, names, input_shape or tuple(plan.input_shape), limits), limits)
        result["quantisation"] = artifact.manifest["layers"]
    result.update({"source": str(source), "target": target, "encoder": artifact.manifest["encoder"],
                   "timesteps": artifact.manifest["timesteps"]})
    if as_json:
        emit_json(result)
        return
    click.echo(f"{source} on Loihi 2 ({result['encoder']} input, T={result['timesteps']}); limits per core: "
               f"{neurons_per_core:,} neurons, {synapses_per_core:,} synapses; {cores_per_chip} cores per chip")
    click.echo(f"  {'layer':<8} {'kind':<6} {'neurons':>9} {'fan-in':>7} {'synapses':>12} {'weights':>10} "
               f"{'cores':>6}  note")
    for r in result["layers"]:
        click.echo(f"  {r['name']:<8} {r['kind']:<6} {r['neurons']:>9,} {r['fan_in']:>7,} {r['synapses']:>12,} "
                   f"{r['weights_stored']:>10,} {r['cores']:>6}  {r['note']}")
    click.echo(f"total: {result['neurons']:,} neurons, {result['synapses']:,} synapses, "
               f"{result['weights_stored']:,} stored weights ({result['synaptic_memory_bytes'] / 1024:,.0f} KiB "
               f"at 8 bits), {result['cores']} cores = {result['chips']} chip(s)"
               + ("" if result["fits"] else f"; DOES NOT FIT: {', '.join(result['layers_that_do_not_fit'])}"))


def _efficiency(source, baseline, samples, data, split, as_json) -> None:
    from fer2neuro.data import load_split
    from fer2neuro.efficiency import efficiency_report
    from fer2neuro.model.checkpoint import load_model
    from fer2neuro.model.encoding import poisson_generator

    reports = {}
    for role, path in (("model", source), ("baseline", baseline)):
        if path is None:
            continue
        model, ckpt = load_model(path, "cpu")
        dataset = load_split(data, split, limit=samples)
        images, labels = dataset.tensors()
        reports[role] = {"checkpoint": str(path),
                         **efficiency_report(model, ckpt.config, images, labels, poisson_generator(0))}
    if as_json:
        emit_json(reports)
        return
    rows = [("parameters", "params", "{:,}"), ("size (MB, float32)", "size_mb", "{:.2f}"),
            ("mult-adds (paper convention)", "mult_adds", "{:,}"), ("ANN MACs (one pass)", "ann_macs", "{:,}"),
            ("SynOps per sample (measured)", "synops", "{:,.0f}"),
            ("energy SNN (uJ)", "snn_energy_uj", "{:.2f}"), ("energy as ANN (uJ)", "ann_energy_uj", "{:.2f}")]
    names = list(reports)
    click.echo(f"{'':<32}" + "".join(f"{reports[n]['model'] + ' (' + n + ')':>22}" for n in names))
    for label, key, fmt in rows:
        cells = "".join(f"{(fmt.format(reports[n][key]) if key in reports[n] else '-'):>22}" for n in names)
        click.echo(f"{label:<32}{cells}")
    for kind in ("inference_samples_per_s", "train_samples_per_s"):
        cells = "".join(f"{reports[n]['throughput'][kind]:>22.1f}" for n in names)
        click.echo(f"{kind.replace('_', ' '):<32}{cells}")
    first = reports[names[0]]
    if "synops_per_layer" in first:
        click.echo("SynOps per layer: " + ", ".join(f"{k} {v:,.0f}" for k, v in first["synops_per_layer"].items()))
        click.echo(f"energy ratio ANN / SNN: {first['energy_ratio_ann_over_snn']:.2f}x "
                   f"({first['energy_constants']['source']})")
