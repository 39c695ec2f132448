"""Data-driven initialisation from the training images (``--init features``).

A He-initialised network learns slowly at first: its random conv filters give
features a linear readout can barely use, and its fully connected head
throws most of what they carry away (measured in docs/training.md, "The fast
start"). This module starts every layer from the data instead, one layer at a
time in data-flow order, with forward passes and closed-form fits only:

1. **Conv layers: spherical k-means on patches.** Each filter is a cluster
   centre of the layer's input patches (the images, then the pooled spike
   rates of the layer before), with each patch's mean removed so brightness
   does not decide the clusters (Coates & Ng, 2011). It is the batch form of
   what winner-take-all STDP learns online (Kheradpisheh et al., 2018): each
   filter moves to the mean of the patches it wins.
2. **Then the BatchNorm scale** so the layer's IF neurons fire sparsely
   (``conv_rate``): sparse features separate the classes better than dense
   ones (a linear readout of pool2 on the synthetic faces: 63 % at rate 0.05,
   54 % at 0.2).
3. **Hidden fully connected layers: principal components.** Half the neurons
   take the leading principal directions of their input rates (whitened), the
   other half the same directions negated, since a neuron only signals one
   sign. Then the weights are scaled so the layer fires at ``hidden_rate``.
4. **The output layer: a ridge regression** of the last hidden layer's rates
   onto the labels (a linear probe), so the output currents start out
   discriminative instead of equal.

It reads only training images and their labels (``train`` passes the first
``run.FEATURE_INIT_IMAGES`` of the training part; the validation split is
never seen). The rate steps use
:func:`fer2neuro.training.init.rate_initialise`. Every figure it measures goes
into metrics.json under "init".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fer2neuro.errors import ConfigError
from fer2neuro.model.layers import INPUT, NEURON_KINDS, Conv, Linear
from fer2neuro.training.init import RateInit, measuring, rate_initialise

RATE_IMAGES = 256        # images the rate balancing looks at (ten forward passes per layer)


@dataclass(frozen=True)
class FeatureInit:
    conv_rate: float = 0.05          # target firing rate of the conv layers' IF neurons
    hidden_rate: float = 0.1         # ... of the hidden fully connected layers' LIF neurons
    patches: int = 200_000           # patches k-means clusters, drawn at random
    kmeans_iterations: int = 20
    ridge: float = 0.2               # ridge penalty, as a fraction of the mean diagonal of H^T H
    target_current: float = 1.2      # the correct class's output current the readout is fitted to

    def to_dict(self) -> dict:
        return {"method": "features", **asdict(self)}


def input_patches(x: torch.Tensor, conv: Conv) -> torch.Tensor:
    """Every ``kernel_size`` x ``kernel_size`` patch the convolution sees,
    (N*H*W, C*k*k), in the order of the conv weight's flattened rows."""
    patches = F.unfold(x, conv.kernel_size, padding=conv.padding)      # (N, C*k*k, L)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def spherical_kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` unit-norm centres of unit-norm ``points`` (N, D), assigned by
    cosine similarity. A centre that wins no point keeps its place."""
    start = torch.randperm(len(points), generator=generator)[:k].to(points.device)
    centres = points[start].clone()
    for _ in range(iterations):
        winner = (points @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, winner, points)
        won = torch.bincount(winner, minlength=k) > 0
        centres[won] = F.normalize(sums[won], dim=1)
    return centres


def kmeans_filters(x: torch.Tensor, conv: Conv, options: FeatureInit, generator: torch.Generator) -> torch.Tensor:
    """Conv weights (out, in, k, k): k-means centres of ``x``'s mean-removed patches."""
    per_image = options.patches // len(x) + 1        # drawn image by image: all patches at once can be GBs
    patches = []
    for batch in x.split(32):
        chunk = input_patches(batch, conv)
        rows = chunk.shape[0] // len(batch)                 # patches per image
        pick = torch.randint(rows, (len(batch), min(per_image, rows)), generator=generator)
        pick = (pick + rows * torch.arange(len(batch))[:, None]).flatten().to(chunk.device)
        patches.append(chunk[pick])
    patches = torch.cat(patches)
    patches = patches - patches.mean(1, keepdim=True)
    norms = patches.norm(dim=1)
    patches = patches[norms > 1e-3 * norms.max()]       # flat patches say nothing about shape
    if len(patches) < conv.out_channels:
        raise ConfigError(f"the feature initialisation found too few non-flat patches in {conv.name}'s input "
                          f"({len(patches)}, need {conv.out_channels}): no contrast in the images, or a silent layer "
                          "before it; use --init he")
    centres = spherical_kmeans(F.normalize(patches, dim=1), conv.out_channels, options.kmeans_iterations,
                               generator)
    return centres.reshape(conv.out_channels, conv.in_channels, conv.kernel_size, conv.kernel_size)


def principal_weights(rates: torch.Tensor, out_features: int) -> torch.Tensor:
    """Linear weights (out, in): the leading principal directions of ``rates``
    (N, in), whitened, half of them negated. With fewer directions than
    neurons per half (few samples, or a silent input), the remaining neurons
    get random directions of the same norm (of He-normal rows', sqrt 2, if
    there is no direction at all); the rate balancing scales them after."""
    half = out_features - out_features // 2
    centred = rates.double() - rates.double().mean(0)
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
    n = min(half, int((singular > 1e-6 * singular.max()).sum()))
    whitened = directions[:n] / (singular[:n, None] / len(rates) ** 0.5)
    if n < half:
        extra = torch.randn(half - n, rates.shape[1], dtype=whitened.dtype, device=whitened.device)
        norm = whitened.norm(dim=1).mean() if n else torch.tensor(2.0, dtype=whitened.dtype).sqrt()
        whitened = torch.cat([whitened, extra * norm / extra.norm(dim=1, keepdim=True)])
    weights = torch.cat([whitened, -whitened])[:out_features]
    return weights.to(rates.dtype)


def ridge_readout(rates: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  options: FeatureInit) -> tuple[torch.Tensor, float]:
    """Weights (classes, in) fitting ``rates`` to ``target_current`` on the
    label's class and 0 elsewhere, and the fit's training accuracy."""
    h = rates.double()
    target = torch.zeros(len(h), num_classes, dtype=h.dtype, device=h.device)
    target[torch.arange(len(h)), labels] = options.target_current
    gram = h.T @ h
    penalty = options.ridge * gram.diagonal().mean().clamp_min(1e-12)
    weights = torch.linalg.solve(gram + penalty * torch.eye(len(gram), dtype=h.dtype, device=h.device), h.T @ target)
    accuracy = float(((h @ weights).argmax(1) == labels).double().mean())
    return weights.T.to(rates.dtype), accuracy


@torch.no_grad()
def _rates(model, images: torch.Tensor, layer: str, chunk: int = 256) -> torch.Tensor:
    """``layer``'s spikes averaged over time, one row per image (flattened
    for a linear layer, (N, C, H, W) for a conv one)."""
    return torch.cat([model.record(images[i:i + chunk], until=layer)[layer].mean(0)
                      for i in range(0, len(images), chunk)])


def _neuron_after(layers, index: int) -> str:
    return next(layer.name for layer in layers[index:] if layer.kind in NEURON_KINDS)


@torch.no_grad()
def feature_initialise(model, images: torch.Tensor, labels: torch.Tensor, options: FeatureInit = FeatureInit(),
                       seed: int = 0) -> dict:
    """Initialise ``model`` (a ConvSNN) in place from training ``images``
    (N, 1, H, W) and their ``labels``, on the model's device. Returns what it
    did per layer, for metrics.json. BatchNorm normalises with the batch's
    statistics, as in training; the running statistics are left as they were,
    and dropout is off while it looks (``init.measuring``).

    Two stages, each fitted layer by layer and then rate-balanced together:
    first the conv layers, then the hidden linear ones. Each layer is fitted
    to its input as the stage found it, before any balancing: measured on the
    synthetic faces, k-means on the denser pool1 rates of an unbalanced if1
    and principal components of an unbalanced lif1 learn faster
    (docs/training.md)."""
    generator = torch.Generator().manual_seed(seed)
    report: dict = {**options.to_dict(), "images": len(images), "layers": {}}
    linears = [layer for layer in model.layers if isinstance(layer, Linear)]
    balance_on = images[:RATE_IMAGES]
    with measuring(model):
        for stage, rate in ((Conv, options.conv_rate), (Linear, options.hidden_rate)):
            targets = {}
            for index, layer in enumerate(model.layers):
                if not isinstance(layer, stage) or layer is linears[-1]:
                    continue
                source = images if layer.source == INPUT else _rates(model, images, layer.source)
                weight = getattr(model, layer.name).weight
                if stage is Conv:
                    weight.copy_(kmeans_filters(source, layer, options, generator))
                else:
                    weight.copy_(principal_weights(source.flatten(1), layer.out_features))
                neuron = _neuron_after(model.layers, index)
                targets[neuron] = rate
                report["layers"][layer.name] = {"method": "k-means" if stage is Conv else "principal components",
                                                "neuron": neuron}
            balanced = rate_initialise(model, balance_on, RateInit(targets))
            for entry in report["layers"].values():
                if entry.get("neuron") in balanced:
                    entry.update(rate=balanced[entry["neuron"]]["rate_after"],
                                 factor=balanced[entry["neuron"]]["factor"])
        readout = linears[-1]
        weights, accuracy = ridge_readout(_rates(model, images, readout.source).flatten(1), labels,
                                          readout.out_features, options)
        getattr(model, readout.name).weight.copy_(weights)
        report["layers"][readout.name] = {"method": "ridge readout", "train_accuracy": accuracy}
    report["batchnorm"] = calibrate_batchnorm(model, images)
    return report


@torch.no_grad()
def calibrate_batchnorm(model, images: torch.Tensor, chunk: int = 256) -> int:
    """Set every BatchNorm's running statistics to the statistics of
    ``images`` as the initialised network sees them (train-mode forward
    passes, dropout off; the mean over chunks of ``chunk`` images).

    The fits above balance the layers with batch statistics, as training
    normalises, but evaluation and every exported target normalise with the
    running ones. Left at BatchNorm's (0, 1), they made the initialised
    network near silent in eval mode (if1 at 0.1 % instead of 5 %, the
    output layer at 0), and a run too short for the running averages to
    catch up predicted one class for every face (issue 26: 400 synthetic
    images, one epoch, 14.3 %). Returns the number of layers calibrated."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with measuring(model):
        saved = {name: value.clone() for name, value in model.named_buffers()}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                       # a cumulative average over the chunks
    try:
        with measuring(model):
            for i in range(0, len(images), chunk):
                model(images[i:i + chunk])
            stats = {m: (m.running_mean.clone(), m.running_var.clone()) for m in norms}
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    del saved
    for m, (mean, var) in stats.items():        # measuring() put the old ones back: now the new ones
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.zero_()
    return len(norms)
