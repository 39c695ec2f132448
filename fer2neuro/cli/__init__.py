"""The ``fer2neuro`` command line: a click group, one module per command."""
from __future__ import annotations

import click

from fer2neuro import __version__
from fer2neuro.cli.base import Fer2NeuroGroup
from fer2neuro.cli.evaluate import evaluate
from fer2neuro.cli.summary import summary
from fer2neuro.cli.train import train


@click.group(cls=Fer2NeuroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fer2neuro")
def main() -> None:
    """Train a convolutional spiking network for facial expression recognition
    and deploy it to neuromorphic simulation targets.

    \b
    Typical flow:
      fer2neuro summary --preset paper
      fer2neuro train --data synthetic --preset small --epochs 5 --out runs/demo
      fer2neuro evaluate runs/demo/best.pt --data synthetic
    """


for command in (summary, train, evaluate):
    main.add_command(command)
