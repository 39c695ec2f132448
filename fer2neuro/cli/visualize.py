"""``fer2neuro visualize``"""
from __future__ import annotations

from pathlib import Path

import click

from fer2neuro.cli.base import Fer2NeuroCommand, OutputDir, data_option, ferplus_option
from fer2neuro.cli.options import SEED, split_option
from fer2neuro.data import load_split
from fer2neuro.errors import CheckpointError
from fer2neuro.model.checkpoint import load_model
from fer2neuro.training.loop import evaluate_model


@click.command(cls=Fer2NeuroCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--out", type=OutputDir(), required=True, help="Folder for the PNG figures.")
@data_option
@ferplus_option
@split_option()
@click.option("--limit", type=click.IntRange(min=1), default=700, show_default=True,
              help="Samples evaluated for the confusion matrix.")
@click.option("--samples", type=click.IntRange(min=1, max=12), default=3, show_default=True,
              help="Faces shown in the encoder figure.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the Poisson spikes and synthetic data.")
def visualize(checkpoint, out, data, ferplus, split, limit, samples, seed):
    """The paper's figures: Poisson encoding of a face over 20 steps and its
    cumulative image after 1/128/256/384/512 steps (Figs. 2-3), cumulative
    spikes of encoder I and II at the first and last step (Figs. 9-10),
    training curves and the confusion matrix.

    \b
    Examples:
      fer2neuro visualize runs/demo/best.pt --out runs/demo/figures
      fer2neuro visualize runs/fer/best.pt --data fer2013.csv.gz --out figs --samples 6
    """
    from fer2neuro.model.network import ConvSNN
    from fer2neuro.visualize import visualize as draw

    model, ckpt = load_model(checkpoint, "cpu")
    if not isinstance(model, ConvSNN):
        raise CheckpointError(f"{checkpoint}: visualize draws the spiking network's figures; this is a "
                              f"{ckpt.config.model} checkpoint")
    dataset = load_split(data, split, limit=limit, ferplus=ferplus, seed=seed)
    if tuple(dataset.class_names) != tuple(ckpt.class_names):
        raise CheckpointError(f"{checkpoint} was trained on other classes than {data} has")
    evaluation = evaluate_model(model, dataset)
    for path in draw(model, Path(checkpoint), dataset, Path(out), evaluation, samples=samples, seed=seed):
        click.echo(f"wrote {path}")
