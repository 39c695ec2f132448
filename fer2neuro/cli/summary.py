"""``fer2neuro summary``"""
from __future__ import annotations

import click

from fer2neuro.cli.base import Fer2NeuroCommand, emit_json, json_option
from fer2neuro.cli.options import DEFAULT_PRESET, MODEL_TIMESTEPS
from fer2neuro.model.architecture import describe
from fer2neuro.model.config import ENCODERS, PRESETS, load_arch, network_config
from fer2neuro.model.summary import summarize


@click.command(cls=Fer2NeuroCommand)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="The network (train's default too); paper is the published one.")
@click.option("--arch", type=click.Path(dir_okay=False), default=None, metavar="FILE.yaml|json",
              help="An architecture file instead of a preset (docs/model.md).")
@click.option("--timesteps", "-T", type=MODEL_TIMESTEPS, default=4, show_default=True)
@click.option("--encoder", type=click.Choice(ENCODERS), default="direct", show_default=True)
@click.option("--classes", "num_classes", type=click.IntRange(min=2), default=7, show_default=True,
              help="Output neurons (7 for FER2013, 8 for FER+).")
@json_option
def summary(preset, arch, timesteps, encoder, num_classes, as_json):
    """Layer table of the network (SPEC §1): output shapes, parameters, mult-adds.

    \b
    Examples:
      fer2neuro summary                      # small preset (train's default), T=4: 626,000 params
      fer2neuro summary --preset paper       # T=4: 21,531,136 params, 427.92 M mult-adds
      fer2neuro summary --preset small -T 8 --encoder poisson
      fer2neuro summary --arch my-net.yaml   # an architecture file (docs/model.md)
      fer2neuro summary --json | jq .total_params
    """
    options = dict(timesteps=timesteps, encoder=encoder, num_classes=num_classes)
    config = network_config(preset, load_arch(arch) if arch else None, **options)
    result = summarize(config)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(f"fer2neuro {config.preset} {'architecture' if arch else 'preset'}: {describe(config.blocks)}")
        click.echo(result.table())
