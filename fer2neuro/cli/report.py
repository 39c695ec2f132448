"""``fer2neuro report``"""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from fer2neuro.cli.base import emit_json, json_option
from fer2neuro.errors import ConfigError


def _artifact_for(path: str, folder: Path):
    """An exported Lava folder as is, or a checkpoint / .nir exported to ``folder``."""
    from fer2neuro.exporters.lava_export import LavaArtifact, write_artifact
    from fer2neuro.exporters.nir_export import graph_from_path

    if Path(path).is_dir():
        return LavaArtifact.load(path)
    write_artifact(graph_from_path(path), folder / "lava")
    return LavaArtifact.load(folder / "lava")


@click.command()
@click.argument("source", type=click.Path(), metavar="CKPT|GRAPH|LAVA_DIR")
@click.option("--target", type=click.Choice(["loihi"]), default="loihi", show_default=True)
@click.option("--neurons-per-core", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--synapses-per-core", type=click.IntRange(min=1), default=937_500, show_default=True)
@click.option("--cores-per-chip", type=click.IntRange(min=1), default=128, show_default=True)
@json_option
def report(source, target, neurons_per_core, synapses_per_core, cores_per_chip, as_json):
    """What the model needs on Loihi 2: per layer neurons, synapses (a
    convolution's connections and its shared kernel), synaptic memory, cores;
    in total cores and chips; layers that do not fit, and where an input
    current could wrap. Quantised exactly as 'export --target lava'.

    Default limits: Intel's Loihi 2 brief (128 cores, 1M neurons and 120M
    synapses per chip), spread evenly over the cores.

    \b
    Examples:
      fer2neuro report runs/demo/best.pt --target loihi
      fer2neuro report runs/demo/lava --synapses-per-core 500000 --json
    """
    from fer2neuro.targets.lava.plan import build_plan
    from fer2neuro.targets.loihi.network import load_netx
    from fer2neuro.targets.loihi.resources import CoreLimits, estimate, summary

    if target != "loihi":
        raise ConfigError(f"no resource model for target {target!r}")
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
