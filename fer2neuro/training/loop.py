"""One epoch of surrogate-gradient training and batched evaluation.

Loss (paper §2.4, SPEC §3): mean squared error between the output layer's
firing rate over T steps and the label-smoothed one-hot target.

On CUDA the loop never waits for the GPU inside an epoch except to refresh
the progress bar every ``SYNC_EVERY`` batches: loss and accuracy add up in
device tensors and are read once at the end (``.item()`` per batch would
stall the queue of kernels). On the CPU reading them costs nothing, and the
bar shows every batch.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from fer2neuro.data.dataset import FERDataset
from fer2neuro.model.network import firing_rate, is_spiking_output, predict
from fer2neuro.training.device import autocast
from fer2neuro.training.metrics import Evaluation

SYNC_EVERY = 50                  # CUDA: progress-bar refresh (a host-device sync), in batches
RESIDENT_BYTES = 2 << 30         # CUDA: datasets up to this size live on the GPU


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(1 - eps) * one_hot + eps / K."""
    one_hot = F.one_hot(labels, num_classes).to(torch.get_default_dtype())
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def output_loss(output: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The SNN's rate MSE for spike outputs, label-smoothed cross-entropy
    for the CNN baseline's logits. Always in float32 or wider: under bf16
    autocast the outputs may be bfloat16, the loss is not."""
    if output.dtype in (torch.bfloat16, torch.float16):
        output = output.float()
    if is_spiking_output(output):
        return rate_mse_loss(output, labels, smoothing)
    return torch.nn.functional.cross_entropy(output, labels, label_smoothing=smoothing)


def rate_mse_loss(output_spikes: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    rates = firing_rate(output_spikes)
    return F.mse_loss(rates, smoothed_targets(labels, rates.shape[-1], smoothing).to(rates))


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
                 augment=None):
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

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

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
        for start in range(0, n, self.batch_size):
            images, labels = self._take(order[start:start + self.batch_size])
            x = images.unsqueeze(1).float().div_(255.0)
            if self.flip:
                # Horizontal flip of a random half: faces are left-right symmetric.
                # (torch.where, not a boolean index: no host-device sync on CUDA)
                mirror = torch.rand(len(labels), generator=self.generator) < 0.5
                mirror = mirror.to(self.device, non_blocking=True).view(-1, 1, 1, 1)
                x = torch.where(mirror, x.flip(-1), x)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            yield x, labels


def train_epoch(model, batches: Batches, optimizer, *, smoothing: float, desc: str = "train",
                progress: bool = True, precision: str = "fp32", lr_at=None, first_step: int = 0,
                deadline: float | None = None) -> dict:
    """One pass over ``batches``; the forward pass and the loss run under
    ``precision``'s autocast, the backward pass and the update in float32.
    ``lr_at(step)`` sets the learning rate before each optimizer step (steps
    count from ``first_step``); past ``deadline`` (``time.perf_counter()``)
    the epoch stops early and says so (``partial``)."""
    model.train()
    device = batches.device
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True)
    partial = False
    for i, (x, y) in enumerate(bar, 1):
        if deadline is not None and time.perf_counter() >= deadline:
            partial = True
            break
        if lr_at is not None:
            lr = lr_at(first_step + i - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        with autocast(device, precision):
            out = model(x)
            loss = output_loss(out, y, smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach().double() * len(y)
        correct += (predict(out) == y).sum()
        seen += len(y)
        if progress and (i % sync_every == 0 or i == len(batches)):
            bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}")
    bar.close()
    result = {"train_loss": total_loss.item() / max(seen, 1), "train_accuracy": correct.item() / max(seen, 1),
              "train_samples": seen}
    if partial:
        result["partial"] = True
    return result


# Forward-only batch size: on CPU 64 ran at 467 samples/s, 256 at 286 (T x B
# activations of a conv layer no longer fit in cache).
EVAL_BATCH_SIZE = 64


@torch.no_grad()
def evaluate_model(model, dataset: FERDataset, *, batch_size: int = EVAL_BATCH_SIZE, device="cpu",
                   smoothing: float = 0.0, progress: bool = False, desc: str = "evaluate",
                   precision: str = "fp32") -> Evaluation:
    """Accuracy of ``model`` on ``dataset`` (prediction = most output spikes,
    lowest index on ties); loss as in training."""
    model.eval()
    device = torch.device(device)
    labels, preds = [], []
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in tqdm(Batches(dataset, batch_size, device), desc=desc, leave=False,
                     disable=not progress, unit="batch", dynamic_ncols=True):
        with autocast(device, precision):
            out = model(x)
            total_loss += output_loss(out, y, smoothing).double() * len(y)
        labels.append(y)
        preds.append(predict(out))
    labels_t, preds_t = torch.cat(labels).cpu(), torch.cat(preds).cpu()
    return Evaluation.from_predictions(labels_t.numpy(), preds_t.numpy(), dataset.class_names,
                                       loss=total_loss.item() / max(len(labels_t), 1))
