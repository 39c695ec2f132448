"""Data parallelism on ``torch.distributed``, started by ``torchrun`` (or
``fer2neuro train --nproc N``, which runs torch's own launcher).

One process per device: gloo on CPUs, nccl on CUDA GPUs (``cuda:LOCAL_RANK``).
What is synchronised, and why (docs/distributed.md has the long form):

- **The data.** Every rank draws the same per-epoch permutation, flips and
  augmentations from the same seeded generator, for the whole *global*
  batch (``--batch-size`` x ranks), and takes its own contiguous slice. So a
  run on N ranks sees, step for step, the global batches a one-process run
  with N times the batch size sees. An epoch's samples are padded (by
  wrapping around the permutation) to a multiple of the ranks, as
  ``DistributedSampler`` does, so every rank takes the same number of
  steps: DDP's all-reduce needs every rank at every step.
- **Gradients.** DistributedDataParallel averages them over the ranks; with
  a loss that is a mean over the batch, that is the gradient of the global
  batch. ``--sync-bn`` makes BatchNorm's training statistics those of the
  global batch too (SyncBatchNorm); without it each rank normalises by its
  own slice, as most DDP recipes do.
- **Parameters and buffers** start from rank 0's (DDP broadcasts them when
  it wraps the model), so a rate initialisation or a resumed checkpoint is
  the same everywhere.
- **STDP** (no gradients): each rank computes the weight change on its slice;
  the changes are all-reduced (averaged) before they are applied, so the
  head stays identical on every rank.
- **Metrics** (training loss and accuracy, validation, evaluation): sums
  and per-sample predictions are gathered, in sample order, so every rank
  holds the one-process figures.
- **Writing**: rank 0 only (checkpoints, metrics.json, figures, TensorBoard,
  logs, progress bars).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fer2neuro.errors import ConfigError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The rank that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, *values: float | int) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device_for_collectives())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank (a collective stop decision)."""
        return bool(self.sum(1.0 if flag else 0.0)[0] > 0)

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average ``tensor`` over the ranks, in place."""
        if self.active:
            dist.all_reduce(tensor)
            tensor /= self.world
        return tensor

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def device_for_collectives(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if dist.get_backend() == "nccl" else torch.device("cpu")

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (the first ranks take
        one more where ``n`` does not divide)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


SINGLE = Group()


def launched() -> bool:
    """Started by torchrun (or torch's launcher) with more than one process."""
    return all(k in os.environ for k in ENV_KEYS) and int(os.environ["WORLD_SIZE"]) > 1


def init_group(device_name: str = "auto") -> tuple[Group, str]:
    """Join the run torchrun started: (the group, the device name this rank
    uses). One process: (``SINGLE``, ``device_name``) unchanged."""
    if not launched():
        return SINGLE, device_name
    rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank}: LOCAL_RANK {local} but this machine has "
                              f"{torch.cuda.device_count()} CUDA devices (use --nproc-per-node <= that)")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Group(rank=rank, world=world, local_rank=local), (f"cuda:{local}" if cuda else "cpu")


def close_group(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()


def finish(group: Group) -> None:
    """The end of a command that succeeded on every rank: wait for the
    others before the connections go (a rank that tore its gloo connections
    down while another was still writing its files aborted now and then,
    "terminate called without an active exception", exit -6). Not on the
    way out of an error: a rank waiting here for one stuck in a collective
    would never exit, and torchrun stops the others only when one exits."""
    group.barrier()


def unwrap(model):
    """The module inside a DistributedDataParallel wrapper (or the model)."""
    return getattr(model, "module", model)


class SyncBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch,
    on any device. torch's ``nn.SyncBatchNorm`` refuses CPU tensors ("expected
    input tensor to be on GPU"), so on gloo this does the same: per-channel
    sums and sums of squares all-reduced (``torch.distributed.nn``'s
    all_reduce, which carries the gradient back to every rank), then the
    usual normalisation and running statistics (unbiased variance, as
    BatchNorm keeps). Outside training, or with one process, it is
    BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels, dims = x.shape[1], (0, 2, 3)
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels:2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / max(n.item() - 1, 1))
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``--sync-bn``: every BatchNorm2d computes the global batch's
    statistics: torch's SyncBatchNorm on CUDA, ``SyncBatchNorm2d`` on CPU."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is torch.nn.BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats).to(device)
            synced.load_state_dict(child.state_dict())
            setattr(model, name, synced)
        else:
            sync_batchnorm(child, device)
    return model
