"""One epoch of surrogate-gradient training and batched evaluation.

The loss is one of ``losses.py`` (the paper's rate MSE by default).

On CUDA the loop never waits for the GPU inside an epoch except to refresh
the progress bar every ``SYNC_EVERY`` batches: loss and accuracy add up in
device tensors and are read once at the end (``.item()`` per batch would
stall the queue of kernels). On the CPU reading them costs nothing, and the
bar shows every batch.

Divergence: a non-finite loss stops the epoch with a TrainingError before
anything is saved. On the CPU the loss is checked at every batch, before its
backward pass, so the first non-finite loss stops training before it
touches a weight. On CUDA that check would stall the queue, so each batch
only folds ``isfinite(loss)`` into a device flag (and the index of the first
bad batch into another); the flag is read every ``SYNC_EVERY`` batches
(before that batch's backward pass) and at the end of the epoch. There
"first" is the first bad batch as recorded, reported exactly, but the stop
comes up to ``SYNC_EVERY - 1`` optimizer steps later, so the weights in
memory may already be NaN: what matters is that nothing is saved. Under
several ranks the decision is ``ranks.any`` at the same batches on every
rank, so all stop together. After the epoch every parameter and buffer must
be finite too (``check_finite_model``).
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from fer2neuro.progress import progress_bar

from fer2neuro.data.dataset import FERDataset
from fer2neuro.errors import TrainingError
from fer2neuro.nirgraph.readout import decide, output_membrane
from fer2neuro.model.network import ConvSNN, predict
from fer2neuro.training.device import autocast
from fer2neuro.training.distill import Teacher
from fer2neuro.training.mixup import Mixed, mix
from fer2neuro.training.distributed import SINGLE, Group, unwrap
from fer2neuro.training.losses import needs_currents, output_loss
from fer2neuro.training.metrics import Evaluation
from fer2neuro.training.tta import TTA_MODES, check_tta, views  # noqa: F401  (TTA_MODES: the CLI's choices)

SYNC_EVERY = 50                  # CUDA: progress-bar refresh and loss check (a host-device sync), in batches
RESIDENT_BYTES = 2 << 30         # CUDA: datasets up to this size live on the GPU


def forward_loss(model, x: torch.Tensor, y: torch.Tensor, smoothing: float, loss: str = "rate-mse", *,
                 mixed: Mixed | None = None, teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output on ``x`` and its ``loss`` (``losses.py``), with the
    output layer's currents asked for only where something reads them. With
    ``mixed`` (``mixup.py``) the loss is blended over both labels; with
    ``teacher`` (``distill.py``) with the teacher's softened outputs."""
    spiking = isinstance(unwrap(model), ConvSNN)                      # (DDP wraps the model)
    if spiking and (needs_currents(loss) or teacher is not None):
        out, currents = model(x, with_currents=True)
    else:
        out, currents = model(x), None
    value = output_loss(out, y, smoothing, loss, currents)
    if mixed is not None:
        value = mixed.lam * value + (1 - mixed.lam) * output_loss(out, mixed.labels, smoothing, loss, currents)
    if teacher is not None:
        value = teacher.blend(value, currents.float().mean(0) if spiking else out, x)
    return out, value


class Batches:
    """Mini-batches straight from a dataset's uint8 array (no DataLoader
    workers: the images are in memory and converting a batch is cheap).

    On CUDA the uint8 array is copied to the GPU once (from pinned memory,
    asynchronously): FER2013's Training split is 66 MB, and indexing it there
    costs no host work and no per-batch transfer. A dataset larger than
    ``RESIDENT_BYTES`` stays on the host, pinned; each batch is gathered into
    pinned memory and copied with ``non_blocking=True``. Shuffling and flips
    draw from ``generator`` on the CPU either way, so a run shuffles the
    same on every device and ``--resume`` restores it exactly.
    """

    def __init__(self, dataset: FERDataset, batch_size: int, device: torch.device, *,
                 shuffle: bool = False, flip: bool = False, generator: torch.Generator | None = None,
                 augment=None, group: Group = SINGLE):
        self.device = torch.device(device)
        images = torch.from_numpy(dataset.images)
        labels = torch.from_numpy(dataset.labels.astype("int64"))
        self.resident = self.device.type != "cuda" or images.nbytes <= RESIDENT_BYTES
        if self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
            if self.resident:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.flip, self.generator = shuffle, flip, generator
        self.augment = augment if augment is not None and augment.enabled else None
        self.group = group

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all ranks (the effective batch size)."""
        return self.batch_size * self.group.world

    def _epoch_samples(self) -> int:
        """An epoch's samples, padded to a multiple of the ranks (every rank
        must take the same number of steps)."""
        world = self.group.world
        return -(-len(self.labels) // world) * world

    def __len__(self) -> int:
        return -(-self._epoch_samples() // self.global_batch)

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:                      # CPU, or the whole set on the GPU
            idx = idx.to(self.device, non_blocking=True)
            return self.images[idx], self.labels[idx]
        images = torch.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True)
        labels = torch.empty(len(idx), dtype=self.labels.dtype, pin_memory=True)
        torch.index_select(self.images, 0, idx, out=images)
        torch.index_select(self.labels, 0, idx, out=labels)
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        padded = self._epoch_samples()
        if padded > n:                          # wrap around, as DistributedSampler pads
            order = torch.cat([order, order.repeat(-(-(padded - n) // n))[:padded - n]])
        for start in range(0, padded, self.global_batch):
            # Every rank draws the whole global batch (the same permutation,
            # flips and augmentations as one process with the global batch
            # size) and keeps its own contiguous part.
            images, labels = self._take(order[start:start + self.global_batch])
            x = images.unsqueeze(1).float().div_(255.0)
            if self.flip:
                # Horizontal flip of a random half: faces are left-right symmetric.
                # (torch.where, not a boolean index: no host-device sync on CUDA)
                mirror = torch.rand(len(labels), generator=self.generator) < 0.5
                mirror = mirror.to(self.device, non_blocking=True).view(-1, 1, 1, 1)
                x = torch.where(mirror, x.flip(-1), x)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            part = self.group.shard(len(labels))
            yield x[part], labels[part]


def train_epoch(model, batches: Batches, optimizer, *, smoothing: float, loss: str = "rate-mse",
                desc: str = "train", progress: bool = True, precision: str = "fp32", lr_at=None,
                first_step: int = 0, deadline: float | None = None, mixup: float = 0.0,
                teacher: Teacher | None = None) -> dict:
    """One pass over ``batches``; the forward pass and the loss run under
    ``precision``'s autocast, the backward pass and the update in float32.
    ``mixup``: Beta(alpha, alpha) blends of pairs of faces (0: off);
    ``teacher``: distillation from it. Training accuracy counts a blended
    face as right by the blend's weights.
    ``lr_at(step)`` sets the learning rate before each optimizer step (steps
    count from ``first_step``); past ``deadline`` (``time.perf_counter()``)
    the epoch stops early and says so (``partial``)."""
    model.train()
    device, ranks = batches.device, batches.group
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    bar = progress_bar(batches, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True)
    partial = False
    bad = torch.zeros((), dtype=torch.bool, device=device)            # a non-finite loss seen this epoch
    first_bad = torch.zeros((), dtype=torch.int64, device=device)     # its batch (1-based), 0: none
    values = torch.zeros((), dtype=torch.float64, device=device)      # that loss

    def stop_if_diverged(i: int) -> None:
        if ranks.any(bool(bad.item())):                                # every rank decides together
            where = f"batch {int(first_bad.item())}" if bool(bad.item()) else "another rank"
            what = f" ({values.item()})" if bool(bad.item()) else ""
            raise TrainingError(f"training stopped: the loss became non-finite{what} at {desc}, {where} "
                                f"(checked at batch {i}); nothing of this epoch was saved, last.pt and "
                                "best.pt keep the last good epoch (try a lower --lr)")

    i = 0
    for i, (x, y) in enumerate(bar, 1):
        if deadline is not None and ranks.any(time.perf_counter() >= deadline):   # every rank stops together
            partial = True
            break
        if lr_at is not None:
            lr = lr_at(first_step + i - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        mixed = None
        if mixup:
            x, mixed = mix(x, y, mixup, batches.generator)
        with autocast(device, precision):
            out, value = forward_loss(model, x, y, smoothing, loss, mixed=mixed, teacher=teacher)
        now_bad = ~torch.isfinite(value.detach())                      # no host sync
        first = now_bad & ~bad
        first_bad = torch.where(first, i, first_bad)
        values = torch.where(first, value.detach().double(), values)
        bad = bad | now_bad
        if i % sync_every == 0 or i == len(batches):                   # CPU: every batch, before backward
            stop_if_diverged(i)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        total_loss += value.detach().double() * len(y)
        hits = predict(out) == y
        if mixed is not None:
            hits = hits * mixed.lam + (predict(out) == mixed.labels) * (1 - mixed.lam)
        correct += hits.sum()
        seen += len(y)
        if progress and (i % sync_every == 0 or i == len(batches)):
            bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}")
    bar.close()
    stop_if_diverged(i)                           # batches after the last check (a deadline break)
    check_finite_model(unwrap(model), ranks, f"after {desc}")
    total, right, seen = ranks.sum(total_loss.item(), correct.item(), seen)     # over all ranks
    result = {"train_loss": total / max(seen, 1), "train_accuracy": right / max(seen, 1),
              "train_samples": int(seen)}
    if partial:
        result["partial"] = True
    return result


def nonfinite_tensor(model) -> str | None:
    """The name of the first parameter or buffer holding NaN or infinity, or
    None (one host sync for the whole model)."""
    named = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers())
             if t.is_floating_point() or t.is_complex()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu()
    for (name, _), ok in zip(named, finite.tolist()):
        if not ok:
            return name
    return None


def check_finite_model(model, ranks: Group = SINGLE, when: str = "") -> None:
    """TrainingError naming the first non-finite weight (on any rank: the
    decision is collective, so every rank raises)."""
    name = nonfinite_tensor(model)
    if ranks.any(name is not None):
        where = f"{name!r}" if name is not None else "a tensor on another rank"
        raise TrainingError(f"training stopped: {where} holds NaN or infinite values {when}".rstrip()
                            + "; nothing was saved of it, last.pt and best.pt keep the last good epoch")


# Forward-only batch size: on CPU 64 ran at 467 samples/s, 256 at 286 (T x B
# activations of a conv layer no longer fit in cache).
EVAL_BATCH_SIZE = 64


@torch.no_grad()
def evaluate_model(model, dataset: FERDataset, *, batch_size: int = EVAL_BATCH_SIZE, device="cpu",
                   smoothing: float = 0.0, loss: str = "rate-mse", progress: bool = False,
                   desc: str = "evaluate", precision: str = "fp32", group: Group = SINGLE,
                   tta: str = "none") -> Evaluation:
    """Accuracy of ``model`` on ``dataset`` (prediction = most output spikes,
    lowest index on ties; with ``tta`` summed over the views of ``tta.py``);
    loss as in training, of the face alone. Under several ranks each
    evaluates its contiguous shard in the same batches one process would
    (the shards start on batch boundaries) and the predictions are gathered
    in sample order, so every rank returns the one-process result."""
    check_tta(tta)
    model.eval()
    device = torch.device(device)
    shard = _batch_aligned_shard(len(dataset), batch_size, group)
    part = dataset if not group.active else dataset.subset(np.arange(shard.start, shard.stop, dtype=np.int64))
    labels, preds = [torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, dtype=torch.int64)]
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    silent = 0
    net = unwrap(model)
    spiking = isinstance(net, ConvSNN)
    if len(part):
        for x, y in progress_bar(Batches(part, batch_size, device), desc=desc, leave=False,
                         disable=not progress, unit="batch", dynamic_ncols=True):
            with autocast(device, precision):
                counts, membrane = 0, 0
                for i, view in enumerate(views(x, tta)):
                    if spiking:
                        out, currents = model(view, with_currents=True)
                        counts = counts + out.sum(0)
                        membrane = membrane + output_membrane(currents.double(), out, net.config.tau)
                    else:
                        out, currents = model(view), None
                        counts = counts + out.float()
                    if i == 0:                                   # the loss: of the face alone
                        total_loss += output_loss(out, y, smoothing, loss, currents).double() * len(y)
            if spiking:
                silent += int((counts.sum(-1) == 0).sum())
                chosen = decide(counts, membrane)
            else:
                chosen = counts.argmax(-1)
            labels.append(y.cpu())
            preds.append(chosen.cpu())
    mine = (torch.cat(labels).numpy(), torch.cat(preds).numpy(), total_loss.item(), silent)
    gathered = group.gather(mine)
    labels_all = np.concatenate([g[0] for g in gathered])
    preds_all = np.concatenate([g[1] for g in gathered])
    result = Evaluation.from_predictions(labels_all, preds_all, dataset.class_names,
                                         loss=sum(g[2] for g in gathered) / max(len(labels_all), 1))
    result.silent = sum(g[3] for g in gathered) if spiking else None
    return result


def _batch_aligned_shard(n: int, batch_size: int, group: Group) -> slice:
    """This rank's samples: whole batches of the one-process order, so a
    sample meets the same batch (and the same rounding) either way."""
    if not group.active:
        return slice(0, n)
    batches = group.shard(-(-n // batch_size))
    return slice(min(batches.start * batch_size, n), min(batches.stop * batch_size, n))
