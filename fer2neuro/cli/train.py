"""``fer2neuro train``"""
from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import click

from fer2neuro.cli.options import DEFAULT_PRESET, MODEL_TIMESTEPS, SEED, SEED_RANGE, FiniteFloat, FiniteFloatRange
from fer2neuro.cli.base import Fer2NeuroCommand, OutputDir, data_option, device_option, ferplus_option
from fer2neuro.errors import ConfigError
from fer2neuro.memory import check_fits, model_values, steps_bytes
from fer2neuro.model.config import ENCODERS, MODEL_KINDS, PRESETS, load_arch
from fer2neuro.model.network import DEFAULT_ENGINE, ENGINES
from fer2neuro.qat import QAT_TARGETS
from fer2neuro.training.device import PRECISIONS, resolve_device
from fer2neuro.training.distributed import launched
from fer2neuro.training.recipe import AUTO, AUTO_LONG_MINUTES, AUTO_LONG_SAMPLES, INITS, RECIPES, SCHEDULES
from fer2neuro.training.losses import LOSSES
from fer2neuro.training.loop import TTA_MODES
from fer2neuro.training.run import SELECT_ON, Outcome, TrainOptions
from fer2neuro.training.run import train as run_training


@click.command(cls=Fer2NeuroCommand)
@data_option
@ferplus_option
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="paper: SPEC §1 (21.5 M parameters, needs a GPU); small: 16 channels for CPUs; medium: 32; "
                   "deep: five conv layers, for an hour of FER2013 on a CPU (docs/model.md).")
@click.option("--arch", type=click.Path(dir_okay=False), default=None, metavar="FILE.yaml|json",
              help="Train this architecture instead of a preset: a list of conv and dense blocks "
                   "(docs/model.md, 'Architectures').")
@click.option("--model", type=click.Choice(MODEL_KINDS), default="snn", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs to train [default: 10; with --time-budget, as many as fit].")
@click.option("--timesteps", "-T", type=MODEL_TIMESTEPS, default=4, show_default=True)
@click.option("--encoder", type=click.Choice(ENCODERS), default="direct", show_default=True)
@click.option("--dropout", type=FiniteFloatRange(0.0, 1.0, max_open=True), default=None,
              help="Dropout before fc1 and fc2 (default: the preset's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=FiniteFloatRange(min=0.0, min_open=True), default=None,
              help="Learning rate [default: the recipe's: 5e-3 for fast, 1e-3 for paper and fer2neuro].")
@click.option("--label-smoothing", type=FiniteFloatRange(0.0, 1.0, max_open=True), default=0.1,
              show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training samples only.")
@click.option("--val-limit", type=click.IntRange(min=1), default=None,
              help="Validate on the first N validation samples only.")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Random horizontal flips of training images.")
@device_option
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="How the spiking neurons run: fused (fast multi-step kernels) or snntorch "
                   "(snnTorch's Leaky, step by step). Same spikes and gradients; may change on --resume.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16: autocast conv and linear layers to bfloat16 (faster on GPUs and BF16 CPUs); "
                   "weights, optimizer state and checkpoints stay float32.")
@click.option("--seed", type=SEED, default=0, show_default=True, help=f"{SEED_RANGE}.")
@click.option("--stdp-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="STDP fine-tuning of the fully connected head every N epochs (paper: 10; 0 = off).")
@click.option("--stdp-a-plus", type=FiniteFloat(), default=1e-4, show_default=True, help="STDP potentiation amplitude.")
@click.option("--stdp-a-minus", type=FiniteFloat(), default=1.05e-4, show_default=True, help="STDP depression amplitude.")
@click.option("--stdp-tau-plus", type=FiniteFloat(), default=2.0, show_default=True, help="Potentiation time constant (steps).")
@click.option("--stdp-tau-minus", type=FiniteFloat(), default=2.0, show_default=True, help="Depression time constant (steps).")
@click.option("--stdp-steps", type=MODEL_TIMESTEPS, default=20, show_default=True,
              help="T_STDP: steps per sample in an STDP phase.")
@click.option("--stdp-batches", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training batches per STDP phase.")
@click.option("--stdp-bound", type=FiniteFloat(), default=1.0, show_default=True,
              help="Clip head weights to this x their largest magnitude before the phase.")
@click.option("--recipe", type=click.Choice([AUTO, *RECIPES]), default=AUTO, show_default=True,
              help="auto: fast for short runs and small data, fer2neuro for long ones (at least "
                   f"{AUTO_LONG_SAMPLES:,} training samples, or --time-budget {AUTO_LONG_MINUTES:g} or more; "
                   "printed and recorded in metrics.json); fast: the feature initialisation, lr 5e-3 after a 10 % warm-up, current-ce loss, no "
                   "augmentation (learns most in a few epochs); paper: SPEC §3 exactly (He init, Adam at 1e-3, "
                   "constant lr, no augmentation, rate-MSE loss); fer2neuro: for long real-data runs: shift/rotation/zoom augmentation, AdamW, "
                   "cosine schedule with warm-up, current-ce loss.")
@click.option("--init", type=click.Choice(list(INITS)), default=None,
              help="he: He-normal; rate: then scale each layer so it fires at a target rate on a first batch; "
                   "features: k-means conv filters, principal-component hidden layers and a ridge readout, "
                   "fitted to the training images [default: the recipe's].")
@click.option("--augment/--no-augment", default=None,
              help="Random shift (4 px), rotation (10 deg) and zoom (10 %) of training images "
                   "[default: the recipe's].")
@click.option("--weight-decay", type=FiniteFloatRange(min=0.0), default=None,
              help="AdamW's decoupled weight decay; 0 = Adam [default: the recipe's].")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help="Learning rate: constant, or cosine after a warm-up [default: the recipe's].")
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help="rate-mse: the paper's MSE of output rates; rate-ce: cross-entropy on rates; current-ce: "
                   "cross-entropy on the output layer's mean input current plus the rate MSE "
                   "[default: the recipe's].")
@click.option("--mixup", type=FiniteFloatRange(min=0.0), default=None, metavar="ALPHA",
              help="Train on blends of two faces, weight ~ Beta(ALPHA, ALPHA), the loss blended alike; "
                   "0 = off [default: the recipe's].")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None, metavar="CKPT",
              help="Distil from this trained model (e.g. a --model cnn run's best.pt): the loss adds the "
                   "KL divergence to its softened outputs.")
@click.option("--distill-weight", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="The distillation term's share of the loss (with --teacher).")
@click.option("--distill-temperature", type=FiniteFloatRange(min=0.0, min_open=True), default=4.0,
              show_default=True, help="Softmax temperature of teacher and student (with --teacher).")
@click.option("--val-split", type=FiniteFloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Fraction of Training held out (stratified, seeded) to choose the best "
                                      "epoch on.")
@click.option("--select-on", type=click.Choice(SELECT_ON), default="val", show_default=True,
              help="val: choose the best epoch on the held-out part of Training, then evaluate PublicTest once; "
                   "test: choose on PublicTest, the paper's protocol (optimistic, labelled so in metrics.json).")
@click.option("--time-budget", type=FiniteFloatRange(min=0.0, min_open=True), default=None, metavar="MINUTES",
              help="Train until MINUTES are spent (the epoch under way stops if it would not fit), "
                   "then evaluate and write the usual outputs.")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
              help="Test-time augmentation of validation and PublicTest: flip adds the mirrored face's output "
                   "spikes to the face's; tencrop sums ten views (centre and corner crops, mirrored). "
                   "metrics.json gives PublicTest without it too.")
@click.option("--qat", type=click.Choice(QAT_TARGETS), default=None,
              help="Then fine-tune best.pt through this fixed-point target's integer network "
                   "(as 'fer2neuro finetune --qat'), into RUN_DIR/qat/.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Epochs of that fine-tuning.")
@click.option("--sync-bn", is_flag=True,
              help="Under several processes: BatchNorm statistics of the global batch (SyncBatchNorm).")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Start this run on N processes of this machine (torch's launcher, as torchrun "
                   "--standalone --nproc-per-node N): CPU processes on gloo, one per GPU on nccl. "
                   "--batch-size is per process.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--no-progress", is_flag=True, help="No progress bars (e.g. in logs).")
@click.option("--out", required=True, type=OutputDir(), metavar="RUN_DIR",
              help="Run folder: best.pt, last.pt, metrics.json, curves.png, confusion.png, tensorboard/.")
def train(no_progress, epochs, qat, qat_epochs, nproc, **kwargs):
    """Train the SNN with surrogate gradients, keeping the
    checkpoint with the best accuracy on a validation split held out of
    Training; PublicTest is evaluated once, at the end (metrics.json "test").

    \b
    Examples:
      fer2neuro train --data synthetic --epochs 5 --out runs/synthetic
      fer2neuro train --data $FER2NEURO_DATA/fer2013.csv.gz --epochs 1 --limit 4000 --out runs/fer
      fer2neuro train --data fer2013.csv --ferplus fer2013new.csv --preset paper -T 8 \\
          --encoder poisson --epochs 100 --device cuda --out runs/ferplus-t8
      fer2neuro train --data fer2013.csv --preset paper --device cuda --precision bf16 --out runs/fer-bf16
      fer2neuro train ... --epochs 20 --resume --out runs/fer     # continue to epoch 20
      fer2neuro train --data fer2013.csv --preset paper -T 8 --encoder poisson --stdp-every 10 --out runs/t8-stdp
      fer2neuro train --data fer2013.csv.gz --preset deep --recipe fer2neuro --precision bf16 --tta flip \\
          --time-budget 60 --out runs/fer-1h        # 65.3 % on PublicTest (docs/training.md)
      fer2neuro train --data synthetic --arch my-net.yaml --epochs 3 --out runs/mine   # docs/model.md
      fer2neuro train --data synthetic --epochs 2 --limit 2000 --out runs/fast-start   # about 64 %
      fer2neuro train --data fer2013.csv --recipe paper --select-on test --epochs 100 --out runs/table6-t4
      fer2neuro train --data synthetic --epochs 10 --qat loihi --out runs/demo   # + runs/demo/qat/best.pt
      fer2neuro train --data fer2013.csv --preset paper --device cuda --nproc 4 --sync-bn --out runs/ddp
      torchrun --nproc-per-node 8 --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
          -m fer2neuro train --data fer2013.csv --preset paper --out runs/ddp16      # docs/distributed.md
    """
    if nproc is not None and nproc > 1 and not launched():
        raise SystemExit(launch_local(nproc))
    if epochs is None:
        epochs = 10 if kwargs["time_budget"] is None else 10_000
    if kwargs["arch"] is not None:
        if click.get_current_context().get_parameter_source("preset") is not click.core.ParameterSource.DEFAULT:
            raise ConfigError("--arch and --preset both name the network: give one")
        kwargs["arch"] = load_arch(kwargs["arch"])
    best_pt = Path(kwargs["out"]) / "best.pt"
    outcome = Outcome()
    options = TrainOptions(progress=not no_progress, epochs=epochs, **kwargs)
    check_memory(options)
    metrics = run_training(options, outcome)
    if int(os.environ.get("RANK", "0")) != 0:          # rank 0 reports (and runs --qat)
        return
    if metrics:
        chosen_on = "PublicTest (paper protocol)" if kwargs["select_on"] == "test" else "validation"
        test = metrics.get("test")
        tail = f"; PublicTest accuracy {test['accuracy']:.4f}" if test else ""
        click.echo(f"best {chosen_on} accuracy {metrics['best_accuracy']:.4f} (epoch {metrics['best_epoch']})"
                   f"{tail}; {_what_happened(outcome, metrics, best_pt, epochs)}")
    if qat and metrics:
        from fer2neuro.cli.finetune import describe
        from fer2neuro.qat.finetune import FinetuneOptions
        from fer2neuro.qat.finetune import finetune as run_finetune

        from fer2neuro.run_lock import run_folder_lock

        out = f"{kwargs['out']}/qat"
        with run_folder_lock(out):
            tuned = run_finetune(FinetuneOptions(checkpoint=f"{kwargs['out']}/best.pt", out=out, qat=qat,
                                                 data=kwargs["data"], ferplus=kwargs["ferplus"], epochs=qat_epochs,
                                                 limit=kwargs["limit"], seed=kwargs["seed"],
                                                 progress=not no_progress))
        for when in ("before", "after"):
            click.echo(f"{qat} QAT, {when}: {describe(tuned[when])} on {tuned[when]['samples']} "
                       f"{tuned['eval_split']} faces")
        click.echo(f"wrote {out}/best.pt")


def _what_happened(outcome: Outcome, metrics: dict, best_pt: Path, epochs: int) -> str:
    """The end of the last line: what this command did to best.pt, from the
    run's own account (``Outcome``)."""
    which = ""
    if outcome.trained:
        first, last = outcome.trained[0], outcome.trained[-1]
        which = f"epoch {first}" if first == last else f"epochs {first}-{last}"
    if outcome.rederived:
        return f"wrote {best_pt} (it was missing: chosen again among last.pt{' and ' + which if which else ''})"
    if outcome.best_written:
        return f"wrote {best_pt}"
    if outcome.trained:
        return f"no better epoch: {which} did not beat epoch {metrics['best_epoch']}; {best_pt} unchanged"
    if outcome.test_completed:
        return (f"nothing to train ({outcome.last_epoch} epochs, --epochs {epochs}); evaluated PublicTest, which "
                f"the run had not finished; {best_pt} unchanged")
    if outcome.last_epoch < epochs:
        return f"no epoch trained (the time budget was spent); {best_pt} unchanged"
    return f"nothing to train: {best_pt.parent} already holds {outcome.last_epoch} epochs (--epochs {epochs}); " \
        f"{best_pt} unchanged"


def check_memory(options: TrainOptions) -> None:
    """Before the run folder exists: a batch's activations, one float32
    value per neuron and step that autograd keeps for the backward pass,
    must fit on the device (fer2neuro/memory.py; CPU processes that
    torchrun started on this machine share its memory)."""
    device = str(resolve_device(options.device))
    steps = max(options.timesteps, options.stdp_steps if options.stdp_every else 1) if options.model == "snn" else 1
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device == "cpu" else 1
    needed = steps_bytes(timesteps=steps, values=model_values(options.model_config()), batch=options.batch_size,
                         itemsize=4, copies=processes)
    check_fits(needed, f"training batches of {options.batch_size} over T={steps}", "-T or --batch-size", device)


def launch_local(nproc: int) -> int:
    """``--nproc N``: this same command on N processes of this machine,
    through torch's own launcher (what ``torchrun --standalone
    --nproc-per-node N`` runs); returns its exit status."""
    args = sys.argv[1:]
    if "train" not in args:
        raise ConfigError("--nproc: run it as 'fer2neuro train ... --nproc N'")
    args = args[args.index("train"):]
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if not arg.startswith("--nproc="):
            kept.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "fer2neuro", *kept]
    click.echo(f"starting {nproc} processes: {' '.join(command[1:])}", err=True)
    return subprocess.run(command, check=False).returncode

