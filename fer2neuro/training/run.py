"""A training run: data -> model -> RUN_DIR/{best.pt, last.pt, metrics.json,
curves.png, confusion.png, tensorboard/}.

``best.pt`` keeps the epoch with the best accuracy on a validation split held
out of Training; the test split (PublicTest) is evaluated once, at the end
(``select_on="test"`` is the paper's protocol instead: choose on PublicTest).
``last.pt`` also holds the optimizer and RNG state, so ``resume=True``
continues exactly. docs/training.md describes the recipes and the time budget.

``engine`` (how the neurons run) and ``device`` may change on ``--resume``:
they change speed, not the result. ``precision`` may not: bf16 rounds the
conv and linear layers' inputs, so a bf16 continuation of an fp32 run is a
different run.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from fer2neuro.atomic import remove_stale, write_text
from fer2neuro.data import load_splits
from fer2neuro.data.holdout import duplicates_of, validation_split
from fer2neuro.data.sanity import check_classes, copies_warning, count_copies
from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.model.checkpoint import load_checkpoint, save_checkpoint
from fer2neuro.model.config import ModelConfig, network_config
from fer2neuro.model.network import DEFAULT_ENGINE, build_model, check_engine
from fer2neuro.run_lock import run_folder_lock
from fer2neuro.training.device import check_precision, resolve_device, setup_device
from fer2neuro.training.distributed import SINGLE, Group, close_group, finish, init_group, sync_batchnorm
from fer2neuro.training.augment import Augment
from fer2neuro.training.distill import DistillOptions, load_teacher
from fer2neuro.training.feature_init import feature_initialise
from fer2neuro.training.init import rate_initialise
from fer2neuro.training.loop import TTA_MODES, Batches, evaluate_model, train_epoch
from fer2neuro.training.recipe import AUTO, RECIPES, Recipe, auto_recipe, recipe
from fer2neuro.training.optim import build_optimizer, implementation
from fer2neuro.training.stdp import STDPOptions, stdp_phase
from fer2neuro.training.plots import plot_confusion, plot_curves, trained_loss
from fer2neuro.training.tensorboard import ScalarLog

TRAIN_SPLIT, TEST_SPLIT = "Training", "PublicTest"
SELECT_ON = ("val", "test")
INIT_BATCH = 256                      # training images the rate initialisation looks at
FEATURE_INIT_IMAGES = 4096            # ... and the feature initialisation (fewer fit worse: docs/training.md)
RANK_SEED_STRIDE = 7919               # rank r's torch RNG: seed + 7919 r (Poisson spikes, dropout)


@dataclass
class TrainOptions:
    out: str
    data: str = "synthetic"
    ferplus: str | None = None
    preset: str = "small"
    arch: dict | None = None           # an architecture file's content (config.load_arch): replaces the preset
    model: str = "snn"
    epochs: int = 10
    timesteps: int = 4
    encoder: str = "direct"
    dropout: float | None = None
    batch_size: int = 16
    lr: float | None = None            # None: the recipe's
    label_smoothing: float = 0.1
    limit: int | None = None
    val_limit: int | None = None
    flip: bool = True
    device: str = "auto"
    engine: str = DEFAULT_ENGINE       # how the spiking neurons run (speed only; ignored by --model cnn)
    precision: str = "fp32"            # fp32 or bf16 autocast of the forward pass and the loss
    seed: int = 0
    progress: bool = True
    resume: bool = False
    stdp_every: int = 0                # STDP head fine-tuning every N epochs (0 = off)
    stdp_a_plus: float = 1e-4
    stdp_a_minus: float = 1.05e-4
    stdp_tau_plus: float = 2.0
    stdp_tau_minus: float = 2.0
    stdp_steps: int = 20
    stdp_batches: int = 10
    stdp_bound: float = 1.0
    recipe: str = "auto"               # training.recipe.RECIPES or auto; the options below override its parts
    init: str | None = None            # recipe.INITS
    augment: bool | None = None        # random shift / rotation / zoom
    weight_decay: float | None = None  # AdamW's decoupled decay (0 = Adam)
    schedule: str | None = None        # constant | cosine
    loss: str | None = None            # losses.LOSSES
    val_split: float = 0.1             # fraction of Training held out to choose the best epoch on
    select_on: str = "val"             # val (honest) | test (the paper's protocol: PublicTest)
    time_budget: float | None = None   # minutes of training, then stop, evaluate and write
    sync_bn: bool = False              # under several ranks: BatchNorm statistics of the global batch
    tta: str = "none"                  # tta.TTA_MODES: test-time augmentation of validation and test
    mixup: float | None = None         # mixup.py's alpha (0 = off) [default: the recipe's]
    teacher: str | None = None         # a checkpoint to distil from (distill.py)
    distill_weight: float = 0.5
    distill_temperature: float = 4.0

    # Options that may differ between a run and its --resume; the rest must match.
    RESUMABLE = ("out", "epochs", "device", "engine", "progress", "resume", "time_budget")

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        check_engine(self.engine)
        check_precision(self.precision)
        if self.stdp_every and self.model != "snn":
            raise ConfigError("--stdp-every fine-tunes a spiking head; it does not apply to --model cnn")
        self.stdp_options()                       # validates
        self.distill_options()
        if self.teacher is not None and self.stdp_every:
            raise ConfigError("--teacher and --stdp-every: distillation trains by gradient, STDP does not; "
                              "give one")
        self.recipe_options()
        self.model_config()                       # an architecture that cannot build fails here, not at epoch 1
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"unknown --select-on {self.select_on!r}: use one of {', '.join(SELECT_ON)}")
        if not 0.0 < self.val_split < 1.0:
            raise ConfigError(f"--val-split must be a fraction in (0, 1), got {self.val_split}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"unknown --tta {self.tta!r}: use one of {', '.join(TTA_MODES)}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ConfigError(f"--time-budget must be a positive number of minutes, got {self.time_budget}")
        for name in ("limit", "val_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    def stdp_options(self) -> STDPOptions:
        return STDPOptions(every=self.stdp_every, a_plus=self.stdp_a_plus, a_minus=self.stdp_a_minus,
                           tau_plus=self.stdp_tau_plus, tau_minus=self.stdp_tau_minus, steps=self.stdp_steps,
                           batches=self.stdp_batches, bound=self.stdp_bound)

    def distill_options(self) -> DistillOptions:
        return DistillOptions(weight=self.distill_weight, temperature=self.distill_temperature)

    def recipe_options(self, name: str | None = None) -> Recipe:
        """The recipe ``name`` (default: --recipe's; auto is checked as fast)
        with the options that override its parts."""
        name = name or (self.recipe if self.recipe != AUTO else "fast")
        augment = None if self.augment is None else (RECIPES["fer2neuro"].augment if self.augment
                                                     else Augment(0.0, 0.0, 0.0))
        return recipe(name, init=self.init, lr=self.lr, augment=augment, weight_decay=self.weight_decay,
                      schedule=self.schedule, loss=self.loss, mixup=self.mixup)

    def model_config(self, **overrides) -> ModelConfig:
        """The network these options train: ``--arch``'s, else ``--preset``'s."""
        options = dict(model=self.model, timesteps=self.timesteps, encoder=self.encoder, dropout=self.dropout,
                       **overrides)
        return network_config(self.preset, self.arch, **options)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Outcome:
    """What one call of :func:`train` did, for the command's last line (which
    must not guess it from file times)."""
    trained: list[int] = field(default_factory=list)   # the epochs this call trained
    last_epoch: int = 0                                 # the run's last epoch when the call ends
    best_written: bool = False                          # this call wrote best.pt
    rederived: bool = False                             # ... from last.pt, because best.pt was missing
    test_completed: bool = False                        # a resume evaluated the test split a killed run had not


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg: str) -> None:
    """What ranks other than 0 log: nothing (rank 0 speaks for the run)."""


def train(options: TrainOptions, outcome: Outcome | None = None) -> dict:
    """Run (or resume) training; returns the metrics written to metrics.json
    and fills ``outcome`` with what this call did. A resume completes what
    a killed run left missing: best.pt, the test evaluation.
    Under torchrun every rank runs this (distributed.py says what is
    synchronised); rank 0 writes and logs."""
    group, device_name = init_group(options.device)
    try:
        # rank 0 alone writes the run folder, so it alone holds its lock (one run per folder: run_lock.py)
        with run_folder_lock(options.out) if group.main else contextlib.nullcontext():
            metrics = _train(options, group, resolve_device(device_name), outcome if outcome is not None else Outcome())
        finish(group)
        return metrics
    finally:
        close_group(group)


def _train(options: TrainOptions, group: Group, device: torch.device, outcome: Outcome) -> dict:
    out = Path(options.out)
    remove_stale(out)                  # what a killed run left (fer2neuro/atomic.py)
    log = _log if group.main else _quiet
    progress = options.progress and group.main
    check_precision(options.precision, device)
    setup_device(device)
    torch.manual_seed(options.seed)

    if options.resume:
        resume_state = _resume_state(options, out)
    elif (out / "last.pt").exists():
        raise ConfigError(f"{out} already holds a training run: pass --resume to continue it, "
                          "or choose another --out")
    else:
        resume_state = None
    splits = load_splits(options.data, {TRAIN_SPLIT: options.limit, TEST_SPLIT: options.val_limit},
                         ferplus=options.ferplus, seed=options.seed)
    full_train, test_set = splits[TRAIN_SPLIT], splits[TEST_SPLIT]
    warning = check_classes(full_train)              # one class: a DataError (data/sanity.py)
    if warning:
        log(warning)
    if options.select_on == "val":
        # Choose the best epoch on a stratified part of Training; PublicTest is
        # only evaluated, once, at the end.
        train_set, val_set = validation_split(full_train, options.val_split, options.seed)
        if options.val_limit is not None:
            val_set = val_set.subset(range(min(options.val_limit, len(val_set))))
        selection = f"validation: {len(val_set)} images held out of Training ({options.val_split:g}, " \
                    f"stratified, seed {options.seed})"
    else:
        train_set, val_set = full_train, test_set
        selection = f"{TEST_SPLIT} (the paper's protocol: the best epoch is chosen on the test split, " \
                    "so its accuracy is optimistic)"
    copies = count_copies(val_set, train_set)
    warning = copies_warning(copies, val_set, "validation" if options.select_on == "val" else TEST_SPLIT)
    if warning:
        log(warning)
    config = options.model_config(num_classes=len(train_set.class_names), class_names=train_set.class_names)
    teacher = None if options.teacher is None else load_teacher(options.teacher, config, device,
                                                                  options.distill_options())
    chosen = choose_recipe(options, len(train_set), resume_state, log)
    plan = options.recipe_options(chosen["recipe"])
    net = build_model(config, engine=options.engine).to(device)     # the model itself (DDP wraps it below)
    generator = torch.Generator().manual_seed(options.seed)

    history: list[dict] = []
    best = {"accuracy": -1.0, "epoch": 0}
    start_epoch = 1
    init_report = None
    if resume_state is None and plan.init != "he" and config.model == "snn":
        init_report = _initialise(net, plan.init, train_set, device, options.seed, log)
    if group.active and resume_state is None:
        # Each rank draws its own Poisson spikes and dropout masks from here
        # on (the data order comes from ``generator``, the same everywhere).
        torch.manual_seed(options.seed + RANK_SEED_STRIDE * group.rank)
    model = _parallel(net, group, device, options.sync_bn)
    optimizer = build_optimizer(model.parameters(), plan.lr, device, weight_decay=plan.weight_decay)
    if resume_state is not None:
        ckpt = resume_state
        net.load_state_dict(ckpt.state_dict)
        optimizer.load_state_dict(ckpt.train_state["optimizer"])   # and the Adam it was saved with
        generator.set_state(ckpt.train_state["generator"])
        per_rank = ckpt.train_state.get("torch_rng_ranks")
        torch.set_rng_state(per_rank[group.rank] if per_rank and len(per_rank) == group.world
                            else ckpt.train_state["torch_rng"])
        history = list(ckpt.metrics.get("epochs", []))
        init_report = ckpt.metrics.get("init")
        best = dict(ckpt.metrics.get("best", best))
        start_epoch = ckpt.epoch + 1
        log(f"resuming {out} after epoch {ckpt.epoch}")

    engine = f"{options.engine} engine, " if config.model == "snn" else ""
    train_batches = Batches(train_set, options.batch_size, device, shuffle=True, flip=options.flip,
                            generator=generator, augment=plan.augment, group=group)
    ranks = f", {group.world} ranks x {options.batch_size} = batch {train_batches.global_batch}" \
        f"{' (SyncBatchNorm)' if options.sync_bn else ''}" if group.active else ""
    log(f"training {config.preset} {config.model} (T={config.timesteps}, {config.encoder}) on "
        f"{len(train_set)} {train_set.name} samples, validating on {len(val_set)}, device {device}, "
        f"{engine}{options.precision}, {implementation(optimizer)} Adam{ranks}")
    writer = _tensorboard(out / "tensorboard") if group.main else None
    started = time.perf_counter()       # the time budget counts from here: after the initialisation
    deadline = started + options.time_budget * 60 if options.time_budget else None
    planned_steps = options.epochs * len(train_batches)

    def lr_now(step: int) -> float:
        """The schedule's learning rate at optimizer step ``step`` of the run
        (with a time budget the run's progress is the budget spent)."""
        progress = step / planned_steps
        if deadline is not None:
            progress = max(progress, (time.perf_counter() - started) / (deadline - started))
        return plan.lr * plan.lr_factor(progress)

    metrics: dict = {}
    reserve = 0.0                       # seconds kept for validation and saving after an epoch
    context = dict(options=options, config=config, device=device, optimizer=optimizer, train_set=train_set,
                   val_set=val_set, selection=selection, plan=plan, chosen=chosen, init=init_report, copies=copies,
                   parallel={"ranks": group.world, "batch_per_rank": options.batch_size,
                             "effective_batch": train_batches.global_batch,
                             "backend": dist_backend(group), "sync_bn": bool(options.sync_bn and group.active)})
    if resume_state is None and init_report is not None and plan.init == "features":
        # The feature initialisation fits a classifier (its ridge readout), so
        # the initialised network is a candidate like any epoch: a run too
        # short to improve on it keeps it instead of ending worse (issue 26).
        start = evaluate_model(net, val_set, device=device, smoothing=options.label_smoothing, loss=plan.loss,
                               desc="validate the initialised network", precision=options.precision, group=group,
                               tta=options.tta)
        init_report["val_accuracy"] = start.accuracy
        best = _best_record(start, 0, after_stdp=False)
        metrics = _metrics(history=history, best=best, **context)
        if group.main:
            save_checkpoint(out / "best.pt", net, config, epoch=0, metrics=metrics)
            plot_confusion(start.confusion, start.class_names, out / "confusion.png",
                           title=f"{val_set.name}, the initialised network")
        outcome.best_written = True
        log(f"initialised network: val acc {start.accuracy:.4f} (epoch 0: the best until an epoch beats it)")
    if resume_state is not None and group.any(not (out / "best.pt").is_file()):
        best = _rederive_best(net, config, val_set, history, best, out, options, plan, group, log,
                              lambda b: _metrics(history=history, best=b, **context))
        metrics = _metrics(history=history, best=best, **context)
        outcome.best_written = outcome.rederived = True
    for epoch in range(start_epoch, options.epochs + 1):
        t0 = time.perf_counter()
        if deadline is not None and group.any(t0 + reserve >= deadline):     # every rank stops together
            log(f"time budget of {options.time_budget:g} min spent after epoch {epoch - 1}")
            break
        row = {"epoch": epoch}
        row.update(train_epoch(model, train_batches, optimizer, smoothing=options.label_smoothing, loss=plan.loss,
                               desc=f"epoch {epoch}/{options.epochs}", progress=progress,
                               precision=options.precision, lr_at=lr_now,
                               first_step=(epoch - 1) * len(train_batches),
                               deadline=None if deadline is None else deadline - reserve,
                               mixup=plan.mixup, teacher=teacher))
        train_seconds = time.perf_counter() - t0
        val = evaluate_model(net, val_set, device=device, smoothing=options.label_smoothing, loss=plan.loss,
                             progress=progress, desc="validate", precision=options.precision, group=group,
                             tta=options.tta)
        row.update(val_loss=val.loss, val_accuracy=val.accuracy, seconds=time.perf_counter() - t0,
                   train_samples_per_s=row["train_samples"] / train_seconds, lr=lr_now(epoch * len(train_batches)))
        history.append(row)
        is_best = False
        for stage, evaluation in (("", val), ("after STDP", None)):
            if stage:
                stdp = options.stdp_options()
                if not stdp.every or epoch % stdp.every:
                    break
                layers = stdp_phase(net, train_batches, stdp, group=group)
                evaluation = evaluate_model(net, val_set, device=device, smoothing=options.label_smoothing,
                                            loss=plan.loss, progress=progress,
                                            desc="validate after STDP", precision=options.precision, group=group,
                                            tta=options.tta)
                row["stdp"] = {"accuracy_before": val.accuracy, "accuracy_after": evaluation.accuracy,
                               "layers": layers}
                log(f"epoch {epoch}: STDP phase, val acc {val.accuracy:.4f} -> {evaluation.accuracy:.4f}")
            if evaluation.accuracy > best["accuracy"]:
                is_best = True
                best = _best_record(evaluation, epoch, after_stdp=bool(stage))
                metrics = _metrics(history=history, best=best, **context)
                if group.main:
                    save_checkpoint(out / "best.pt", net, config, epoch=epoch, metrics=metrics)
                    plot_confusion(evaluation.confusion, evaluation.class_names, out / "confusion.png",
                                   title=f"{val_set.name}, epoch {epoch} {stage}".strip())
                outcome.best_written = True
        metrics = _metrics(history=history, best=best, **context)
        train_state = {"optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                       "torch_rng": torch.get_rng_state(), "options": options.to_dict()}
        if group.active:                           # every rank's own stream, for --resume
            train_state["torch_rng_ranks"] = group.gather(torch.get_rng_state())
        if group.main:
            save_checkpoint(out / "last.pt", net, config, epoch=epoch, metrics=metrics, train_state=train_state)
            write_text(out / "metrics.json", json.dumps(metrics, indent=2))
            plot_curves(history, out / "curves.png",
                        title=f"{config.preset} {config.model.upper()} on {train_set.name}", loss=trained_loss(metrics))
        group.barrier()              # last.pt is whole before any rank goes on (a resume reads it)
        outcome.trained.append(epoch)
        if writer is not None:
            for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
                writer.add_scalar(key.replace("_", "/", 1), row[key], epoch)
            writer.flush()
        reserve = (time.perf_counter() - t0 - train_seconds) * 1.5
        log(f"epoch {epoch}/{options.epochs}: loss {row['train_loss']:.4f}, train acc "
             f"{row['train_accuracy']:.4f}, val acc {val.accuracy:.4f}"
             f"{' (best)' if is_best else ''}, {row['train_samples_per_s']:.1f} samples/s"
             f"{' (stopped early: time budget)' if row.get('partial') else ''}")
    if writer is not None:
        writer.close()
    if best["epoch"] == 0 and history:
        log(f"no epoch beat the initialised network on validation ({best['accuracy']:.4f}): "
            f"{len(history)} epoch(s) of {len(train_batches)} steps did not improve on it; keeping it "
            "(train longer, on more images, or with a lower --lr)")
    outcome.last_epoch = history[-1]["epoch"] if history else 0
    completing = False
    if resume_state is not None and not outcome.trained and not outcome.best_written:
        # A resume that trained nothing: the run had reached --epochs. It may
        # still lack what a kill during its end left unwritten (the test
        # evaluation, an up-to-date metrics.json): complete that, else say so.
        metrics = _metrics(history=history, best=best, **context)
        saved = _saved_metrics(out)
        if _is_complete(saved, metrics, options.select_on == "val"):
            log(f"nothing to do: {out} already trained for {outcome.last_epoch} epochs "
                f"(--epochs {options.epochs})" + (f" and evaluated on {TEST_SPLIT}" if "test" in saved else ""))
            return saved
        completing = True
        log(f"nothing to train: {out} already holds {outcome.last_epoch} epochs (--epochs {options.epochs}); "
            f"completing what its end left unwritten: " + (f"the {TEST_SPLIT} evaluation" if options.select_on == "val"
                                                            else "metrics.json"))
    if metrics and options.select_on == "val" and (out / "best.pt").is_file():
        metrics["test"] = _test_report(out / "best.pt", test_set, full_train, device, options, plan, group)
        outcome.test_completed = completing
        log(f"best epoch {best['epoch']} (chosen on validation) on {TEST_SPLIT}: "
             f"accuracy {metrics['test']['accuracy']:.4f} (95 % CI {metrics['test']['accuracy_ci95'][0]:.4f}-"
             f"{metrics['test']['accuracy_ci95'][1]:.4f}), macro-F1 {metrics['test']['macro_f1']:.4f}")
    if metrics and group.main and (completing or outcome.rederived or "test" in metrics):
        write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _saved_metrics(out: Path) -> dict | None:
    """The run folder's metrics.json, or None where it is missing or unreadable."""
    try:
        saved = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _is_complete(saved: dict | None, metrics: dict, needs_test: bool) -> bool:
    """Whether ``saved`` (metrics.json) is the finished form of ``metrics``
    (rebuilt from last.pt): the same epochs and best, and the test
    evaluation where the run makes one."""
    if saved is None:
        return False
    expected = json.loads(json.dumps({"epochs": metrics["epochs"], "best": metrics["best"]}))    # as JSON reads back
    return (saved.get("epochs") == expected["epochs"] and saved.get("best") == expected["best"]
            and (not needs_test or isinstance(saved.get("test"), dict)))


def _best_record(evaluation, epoch: int, *, after_stdp: bool, **extra) -> dict:
    """metrics.json's ``best``: the chosen epoch's validation figures."""
    return {"accuracy": evaluation.accuracy, "epoch": epoch, "per_class": evaluation.per_class(),
            "confusion": evaluation.confusion.tolist(), "after_stdp": after_stdp, **extra}


def _rederive_best(net, config, val_set, history: list, lost: dict, out: Path, options: TrainOptions, plan: Recipe,
                   group: Group, log, metrics_of) -> dict:
    """best.pt is missing at --resume (deleted, or lost): its weights cannot
    be had again, so last.pt's weights, evaluated on the validation split
    again, become the best so far and the epochs to come compete with them.
    Returns the new ``best``; writes best.pt (rank 0)."""
    device = next(net.parameters()).device
    # a Poisson encoder draws from the RNG: fork it, so the training that
    # follows draws exactly what it would have drawn (--resume stays exact)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        evaluation = evaluate_model(net, val_set, device=device, smoothing=options.label_smoothing, loss=plan.loss,
                                    desc="validate last.pt", precision=options.precision, group=group, tta=options.tta)
    epoch = history[-1]["epoch"] if history else 0
    best = _best_record(evaluation, epoch, after_stdp=bool(history and "stdp" in history[-1]),
                        rederived=f"best.pt was missing at --resume: chosen again from last.pt (epoch {epoch}); "
                                  f"the weights of epoch {lost['epoch']} (val acc {lost['accuracy']:.4f}) were lost")
    if group.main:
        save_checkpoint(out / "best.pt", net, config, epoch=epoch, metrics=metrics_of(best))
        plot_confusion(evaluation.confusion, evaluation.class_names, out / "confusion.png",
                       title=f"{val_set.name}, epoch {epoch}")
    group.barrier()                  # best.pt is whole before any rank reads it (the test evaluation)
    where = "it was the best epoch" if lost["epoch"] == epoch else \
        f"the best epoch {lost['epoch']}'s weights (val acc {lost['accuracy']:.4f}) are lost"
    log(f"{out / 'best.pt'} was missing: wrote it again from last.pt (epoch {epoch}, val acc "
        f"{evaluation.accuracy:.4f}; {where}); later epochs that beat it replace it")
    return best


def choose_recipe(options: TrainOptions, train_samples: int, resume_state, log) -> dict:
    """The recipe this run trains with, and why (metrics.json's
    ``config.recipe_choice``). ``auto`` decides once, when the run starts; a
    --resume keeps that decision even where --epochs or --time-budget change."""
    if options.recipe != AUTO:
        return {"recipe": options.recipe, "auto": False, "why": "--recipe " + options.recipe}
    if resume_state is not None:
        saved = resume_state.metrics.get("config", {}).get("recipe_choice")
        if isinstance(saved, dict) and saved.get("recipe") in RECIPES:
            return saved
    name, why = auto_recipe(options.epochs if options.time_budget is None else 0, train_samples, options.time_budget)
    log(f"recipe auto: {name} ({why}; docs/training.md)")
    return {"recipe": name, "auto": True, "why": why}


def _initialise(net, method: str, train_set, device: torch.device, seed: int, log) -> dict:
    """The data-driven initialisation ``method`` (rate or features) from the
    first training images; what it did, for metrics.json."""
    if method == "rate":
        images = train_set.subset(range(min(INIT_BATCH, len(train_set)))).tensors()[0]
        report = rate_initialise(net, images.to(device))
        log("rate initialisation: " + ", ".join(f"{k} {v['rate_before']:.3f}->{v['rate_after']:.3f}"
                                                   for k, v in report.items()))
        return report
    images, labels = train_set.subset(range(min(FEATURE_INIT_IMAGES, len(train_set)))).tensors()
    started = time.perf_counter()
    report = feature_initialise(net, images.to(device), labels.to(device), seed=seed)
    report["seconds"] = time.perf_counter() - started
    log(f"feature initialisation from {len(images)} training images ({report['seconds']:.1f} s): "
        + ", ".join(f"{name} {v['method']}" + (f" (rate {v['rate']:.2f})" if "rate" in v else
                                               f" (train acc {v['train_accuracy']:.2f})")
                    for name, v in report["layers"].items()))
    return report


def _resume_state(options: TrainOptions, out: Path):
    last = out / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"--resume: {last} does not exist (nothing to resume)")
    ckpt = load_checkpoint(last)
    saved = ckpt.train_state.get("options")
    if not saved or "optimizer" not in ckpt.train_state:
        raise CheckpointError(f"--resume: {last} holds no training state")
    # an option a run saved before it existed had its default value then
    defaults = TrainOptions(out=options.out).to_dict()
    differ = [k for k, v in options.to_dict().items()
              if k not in TrainOptions.RESUMABLE and saved.get(k, defaults[k]) != v]
    if differ:
        k = differ[0]
        raise ConfigError(f"--resume: option {k!r} was {saved.get(k)!r} in {last}, now {getattr(options, k)!r}")
    best = out / "best.pt"
    if best.is_file():               # damaged: say so now, not after the training, when it is read
        try:
            load_checkpoint(best)
        except CheckpointError as exc:
            raise CheckpointError(f"--resume: {exc}; delete it and --resume writes it again from last.pt") from None
    return ckpt


def _test_report(best_path: Path, test_set, full_train, device, options, plan: Recipe,
                 group: Group = SINGLE) -> dict:
    """The chosen checkpoint on the test split, evaluated once: all of it,
    and without the images that are copies of training images (sharded
    over the ranks)."""
    model = load_checkpoint(best_path).build(device)
    kwargs = dict(device=device, smoothing=options.label_smoothing, precision=options.precision,
                  loss=plan.loss, group=group, tta=options.tta)
    evaluation = evaluate_model(model, test_set, **kwargs)
    if group.main and evaluation.silence_warning():
        _log(f"{TEST_SPLIT}: {evaluation.silence_warning()}")
    result = evaluation.to_dict()
    result["tta"] = options.tta
    if options.tta != "none":       # what the test-time augmentation adds, measured on the same model
        single = evaluate_model(model, test_set, **{**kwargs, "tta": "none"})
        result["without_tta"] = {"accuracy": single.accuracy, "accuracy_ci95": list(single.accuracy_ci95),
                                 "macro_f1": single.macro_f1}
    copies = duplicates_of(test_set, full_train)
    result["split"] = TEST_SPLIT
    result["duplicates_of_training"] = int(copies.sum())
    if copies.any() and not copies.all():
        dedup = evaluate_model(model, test_set.subset(~copies), **kwargs)
        low, high = dedup.accuracy_ci95
        result["dedup"] = {"accuracy": dedup.accuracy, "accuracy_ci95": [low, high], "macro_f1": dedup.macro_f1,
                           "n": dedup.n}
    return result


def _metrics(options, config, device, optimizer, train_set, val_set, history, best, selection, plan, chosen,
             init, parallel, copies) -> dict:
    return {
        "config": {"model": config.to_dict(), "training": options.to_dict(), "recipe": plan.to_dict(),
                   "recipe_choice": chosen},
        "selection": selection,
        "init": init,
        "data": {"source": str(options.data), "name": train_set.name, "class_names": list(train_set.class_names),
                 "train_samples": len(train_set), "val_samples": len(val_set),
                 "val_copies_of_training": copies,            # exact pixel copies (data/sanity.py)
                 "train_class_counts": train_set.class_counts().tolist()},
        "device": str(device),
        "parallel": parallel,
        "optimizer": f"{type(optimizer).__name__} ({implementation(optimizer)})",
        "torch": str(torch.__version__),
        "epochs": history,
        "best_accuracy": best["accuracy"],
        "best_epoch": best["epoch"],
        "best": best,
    }


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but training must not die without it
        _log("tensorboard is not installed: no TensorBoard scalars will be written")
        return None
    return ScalarLog(path, SummaryWriter)       # disk errors name the folder


def _parallel(net, group: Group, device: torch.device, sync_bn: bool):
    """The model the optimizer steps: under several ranks DDP around ``net``
    (which broadcasts rank 0's parameters and buffers), with SyncBatchNorm
    if asked; else ``net`` itself."""
    if not group.active:
        return net
    if sync_bn:
        sync_batchnorm(net, device)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def dist_backend(group: Group) -> str | None:
    if not group.active:
        return None
    import torch.distributed as dist

    return dist.get_backend()

