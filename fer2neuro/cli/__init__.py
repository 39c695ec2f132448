"""The ``fer2neuro`` command line: a click group, one module per command."""
from __future__ import annotations

import click

from fer2neuro import __version__
from fer2neuro.cli.base import Fer2NeuroGroup
from fer2neuro.cli.evaluate import evaluate
from fer2neuro.cli.export import export
from fer2neuro.cli.finetune import finetune
from fer2neuro.cli.inspect import inspect
from fer2neuro.cli.interop import interop
from fer2neuro.cli.predict import predict
from fer2neuro.cli.report import report
from fer2neuro.cli.simulate import simulate
from fer2neuro.cli.summary import summary
from fer2neuro.cli.train import train
from fer2neuro.cli.verify import verify
from fer2neuro.cli.visualize import visualize


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
      fer2neuro export runs/demo/best.pt --target nir --out runs/demo/model.nir
      fer2neuro inspect runs/demo/model.nir
      fer2neuro verify runs/demo/best.pt --backends snntorch,nir
    """


for command in (summary, train, finetune, evaluate, predict, export, inspect, simulate, verify, interop, report,
                visualize):
    main.add_command(command)
