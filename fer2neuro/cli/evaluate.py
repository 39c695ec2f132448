"""``fer2neuro evaluate``"""
from __future__ import annotations

import click

from fer2neuro.cli.options import SEED, split_option
from fer2neuro.cli.base import Fer2NeuroCommand, data_option, device_option, emit_json, ferplus_option, json_option
from fer2neuro.data import canonical_split, load_split
from fer2neuro.data.holdout import duplicates_of
from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.model.checkpoint import load_model
from fer2neuro.training.device import PRECISIONS, check_precision, resolve_device
from fer2neuro.training.distributed import close_group, finish, init_group
from fer2neuro.training.loop import EVAL_BATCH_SIZE, TTA_MODES, evaluate_model


@click.command(cls=Fer2NeuroCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@data_option
@ferplus_option
@split_option()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N samples only.")
@click.option("--batch-size", type=click.IntRange(min=1), default=EVAL_BATCH_SIZE, show_default=True,
              help="Samples per forward pass (the default is fastest on CPU: larger batches thrash the cache).")
@device_option
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16: autocast as in a --precision bf16 training run (its validation figures); "
                   "the weights are float32 either way.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the synthetic data (must match training's).")
@click.option("--dedup", is_flag=True,
              help="Leave out the images whose pixels equal a Training image's (FER2013's PublicTest has 280).")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
              help="Test-time augmentation: flip adds the mirrored face's output spikes to the face's; "
                   "tencrop sums ten views (centre and corner crops, mirrored; docs/training.md).")
@json_option
def evaluate(checkpoint, data, ferplus, split, limit, batch_size, device, precision, seed, dedup, tta, as_json):
    """Accuracy with its 95 % confidence interval (Wilson), per-class recall,
    precision and F1, macro-F1 and the confusion matrix of a checkpoint.

    \b
    Examples:
      fer2neuro evaluate runs/demo/best.pt --data synthetic
      fer2neuro evaluate runs/fer/best.pt --data fer2013.csv.gz --split PublicTest --json
      fer2neuro evaluate runs/fer/best.pt --data fer2013.csv.gz --dedup    # without copies of training faces
      torchrun --nproc-per-node 4 -m fer2neuro evaluate runs/fer/best.pt --data big.csv --split Training

    Under torchrun each process evaluates a contiguous part of the samples
    (whole batches of the one-process order) and rank 0 reports the gathered
    result, the same as one process's.
    """
    group, device = init_group(device)            # under torchrun: this rank's part of the samples
    try:
        _evaluate(group, checkpoint, data, ferplus, split, limit, batch_size, device, precision, seed, dedup,
                  as_json, tta)
        finish(group)
    finally:
        close_group(group)


def _evaluate(group, checkpoint, data, ferplus, split, limit, batch_size, device, precision, seed, dedup,
              as_json, tta="none"):
    dev = resolve_device(device)
    check_precision(precision, dev)
    model, ckpt = load_model(checkpoint, dev)
    dataset = load_split(data, split, limit=limit, ferplus=ferplus, seed=seed)
    dropped = 0
    if dedup:
        if canonical_split(split) == "Training":
            raise ConfigError("--dedup leaves out copies of Training images: use it on a test split")
        training = load_split(data, "Training", ferplus=ferplus, seed=seed)
        copies = duplicates_of(dataset, training)
        dropped = int(copies.sum())
        if dropped == len(dataset):
            raise ConfigError(f"--dedup: all {dropped} images of {split} are copies of Training images")
        dataset = dataset.subset(~copies)
    if tuple(dataset.class_names) != tuple(ckpt.class_names):
        raise CheckpointError(
            f"{checkpoint} was trained on {len(ckpt.class_names)} classes ({', '.join(ckpt.class_names)}) "
            f"but the data has {len(dataset.class_names)} ({', '.join(dataset.class_names)})")
    result = evaluate_model(model, dataset, batch_size=batch_size, device=dev, progress=not as_json and group.main,
                            precision=precision, group=group, tta=tta)
    if not group.main:                            # rank 0 reports the gathered result
        return
    if result.silence_warning():
        click.echo(result.silence_warning(), err=True)
    if as_json:
        emit_json({"checkpoint": str(checkpoint), "data": str(data), "split": split,
                   "dedup": {"dropped": dropped} if dedup else None, "tta": tta, **result.to_dict()})
    else:
        note = (f" (without {dropped} copies of Training images)" if dedup else "") + (f", {tta} TTA" if tta != "none" else "")
        click.echo(f"{checkpoint} on {dataset.name} {split}{note}:")
        click.echo(result.table())
