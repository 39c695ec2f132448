"""``fer2neuro export``"""
from __future__ import annotations

import click

from fer2neuro.cli.base import emit_json, json_option
from fer2neuro.exporters import exporter_names, get_exporter
from fer2neuro.model.config import ENCODERS


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--target", type=click.Choice(exporter_names()), default="nir", show_default=True,
              help="File format to write.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="File to write (atomically).")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None,
              help="Input encoding recorded in the graph (default: the checkpoint's).")
@click.option("--timesteps", "-T", type=click.IntRange(min=1), default=None,
              help="Steps per sample recorded in the graph (default: the checkpoint's).")
@json_option
def export(checkpoint, target, out, encoder, timesteps, as_json):
    """Export a trained checkpoint for deployment.

    NIR: BatchNorm folded into the convolutions, each max pool lowered to a
    sum pool feeding an IF neuron (threshold 0.5), dt = 1; T, the encoder and
    the class names go into the graph metadata.

    \b
    Examples:
      fer2neuro export runs/demo/best.pt --target nir --out runs/demo/model.nir
      fer2neuro simulate runs/demo/model.nir --target nir --input x.npy --out y.npz
    """
    info = get_exporter(target)(checkpoint, out, encoder=encoder, timesteps=timesteps)
    if as_json:
        emit_json({"checkpoint": str(checkpoint), **info})
        return
    click.echo(f"wrote {info['path']} ({info['bytes'] / 1e6:.2f} MB): {target.upper()} graph of "
               f"{len(info['nodes'])} nodes, {info['edges']} edges; dt={info['dt']}, T={info['timesteps']}, "
               f"{info['encoder']} encoding, classes {', '.join(info['class_names'])}")
