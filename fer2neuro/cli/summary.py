"""``fer2neuro summary``"""
from __future__ import annotations

import click

from fer2neuro.cli.base import emit_json, json_option
from fer2neuro.cli.options import DEFAULT_PRESET
from fer2neuro.model.config import ENCODERS, PRESETS, preset_config
from fer2neuro.model.summary import summarize


@click.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="The network (train's default too); paper is the published one.")
@click.option("--timesteps", "-T", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--encoder", type=click.Choice(ENCODERS), default="direct", show_default=True)
@click.option("--classes", "num_classes", type=click.IntRange(min=2), default=7, show_default=True,
              help="Output neurons (7 for FER2013, 8 for FER+).")
@json_option
def summary(preset, timesteps, encoder, num_classes, as_json):
    """Layer table of the network (SPEC §1): output shapes, parameters, mult-adds.

    \b
    Examples:
      fer2neuro summary                      # small preset (train's default), T=4: 626,000 params
      fer2neuro summary --preset paper       # T=4: 21,531,136 params, 427.92 M mult-adds
      fer2neuro summary --preset small -T 8 --encoder poisson
      fer2neuro summary --json | jq .total_params
    """
    result = summarize(preset_config(preset, timesteps=timesteps, encoder=encoder, num_classes=num_classes))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(f"fer2neuro {preset} preset")
        click.echo(result.table())
