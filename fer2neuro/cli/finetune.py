"""``fer2neuro finetune``"""
from __future__ import annotations

import os

import click

from fer2neuro.cli.base import Fer2NeuroCommand, OutputDir, data_option, emit_json, ferplus_option, json_option
from fer2neuro.cli.options import SEED, SEED_RANGE, SPLIT_HELP, FiniteFloatRange
from fer2neuro.qat import QAT_TARGETS
from fer2neuro.run_lock import run_folder_lock
from fer2neuro.training.losses import LOSSES


def describe(entry: dict) -> str:
    fixed = "overflow" if entry["fixed_accuracy"] is None else f"{entry['fixed_accuracy']:.1%}"
    agreement = "-" if entry["agreement"] is None else f"{entry['agreement']:.1%}"
    return f"float {entry['float_accuracy']:.1%}, fixed point {fixed}, agreement {agreement}"


@click.command(cls=Fer2NeuroCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--qat", type=click.Choice(QAT_TARGETS), default="loihi", show_default=True,
              help="The fixed-point target whose integer network is trained through.")
@click.option("--out", type=OutputDir(), required=True,
              help="Folder for best.pt (the fine-tuned checkpoint) and metrics.json.")
@data_option
@ferplus_option
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0.0, min_open=True), default=1e-4, show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default="rate-mse", show_default=True,
              help="Task loss on the fixed-point output.")
@click.option("--agreement-weight", type=FiniteFloatRange(min=0.0), default=1.0, show_default=True,
              help="Weight of the fixed-point vs float output-rate difference.")
@click.option("--state-weight", type=FiniteFloatRange(min=0.0), default=1.0, show_default=True,
              help="Weight of the penalty on membranes beyond half of the 24-bit range.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Fine-tune on the first N training faces.")
@click.option("--eval-split", default="PublicTest", show_default=True,
              help="Split on which float and fixed-point accuracy are measured before and after (never used "
                   "to choose anything): " + SPLIT_HELP)
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N faces.")
@click.option("--seed", type=SEED, default=0, show_default=True, help=f"{SEED_RANGE}.")
@json_option
def finetune(checkpoint, qat, out, data, ferplus, epochs, batch_size, lr, loss, agreement_weight, state_weight,
             limit, eval_split, eval_limit, seed, as_json):
    """Quantisation-aware fine-tuning: train a float checkpoint through the
    integer network the fixed-point target runs (its exact spikes forward,
    straight-through and surrogate gradients backward), so that what is
    trained is what the chip runs. The checkpoint written exports to that
    integer network; 'verify --backends loihi' then requires bit-exact
    spikes against it.

    \b
    Examples:
      fer2neuro finetune runs/demo/best.pt --qat loihi --epochs 2 --out runs/demo-qat
      fer2neuro finetune runs/fer/best.pt --data fer2013.csv.gz --epochs 1 --out runs/fer-qat
    """
    from fer2neuro.qat.finetune import FinetuneOptions
    from fer2neuro.qat.finetune import finetune as run_finetune
    from fer2neuro.training.distributed import launched

    if launched() and int(os.environ["RANK"]) != 0:
        # The fine-tuning simulates the integer network with numpy on the CPU
        # and is not data-parallel: under torchrun rank 0 runs it, the rest end
        # (docs/distributed.md).
        return
    with run_folder_lock(out):          # one run per folder (fer2neuro/run_lock.py)
        metrics = run_finetune(FinetuneOptions(
            checkpoint=checkpoint, out=out, qat=qat, data=data, ferplus=ferplus, epochs=epochs,
            batch_size=batch_size, lr=lr, loss=loss, agreement_weight=agreement_weight, state_weight=state_weight,
            limit=limit, eval_split=eval_split, eval_limit=eval_limit, seed=seed, progress=not as_json))
    if as_json:
        emit_json(metrics)
        return
    for when in ("before", "after"):
        click.echo(f"{qat} QAT, {when}: {describe(metrics[when])} on {metrics[when]['samples']} "
                   f"{metrics['eval_split']} faces")
    click.echo(f"wrote {out}/best.pt and {out}/metrics.json")
