"""``fer2neuro visualize``: the paper's figures for a trained SNN.

- ``poisson_encoding.png``: one face as Poisson spike frames over 20 steps
  (paper Fig. 2);
- ``poisson_cumulative.png``: the accumulated spikes after 1, 128, 256, 384
  and 512 steps, converging to the image (Fig. 3);
- ``encoder_spikes.png``: cumulative spikes of encoder I (``if1``) and
  encoder II (``if2``), summed over channels, after the first and the last
  step, for a few faces (Figs. 9–10);
- ``curves.png`` (from the run's metrics.json, when it sits next to the
  checkpoint) and ``confusion.png`` (evaluated on the chosen split).
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fer2neuro.data import FERDataset
from fer2neuro.figures import save_figure
from fer2neuro.model.encoding import poisson_encode, poisson_generator
from fer2neuro.training.plots import plot_confusion, plot_curves, trained_loss

CUMULATIVE_STEPS = (1, 128, 256, 384, 512)


def plot_poisson_encoding(image: np.ndarray, path, steps: int = 20, seed: int = 0) -> None:
    x = torch.from_numpy(image).float()[None, None]
    spikes = poisson_encode(x, steps, poisson_generator(seed))[:, 0, 0].numpy()
    cols = 10
    fig, axes = plt.subplots(steps // cols + 1, cols, figsize=(cols * 1.2, (steps // cols + 1) * 1.35))
    axes = axes.ravel()
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=8)
    for t in range(steps):
        axes[t + 1].imshow(spikes[t], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[t + 1].set_title(f"t={t + 1}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"Poisson encoding over {steps} steps: each pixel spikes with probability = its value", fontsize=9)
    save_figure(fig, path)


def plot_poisson_cumulative(image: np.ndarray, path, seed: int = 0) -> None:
    x = torch.from_numpy(image).float()[None, None]
    spikes = poisson_encode(x, max(CUMULATIVE_STEPS), poisson_generator(seed))[:, 0, 0].numpy()
    total = np.cumsum(spikes, axis=0)
    fig, axes = plt.subplots(1, len(CUMULATIVE_STEPS) + 1, figsize=(2 * (len(CUMULATIVE_STEPS) + 1), 2.3))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=8)
    for ax, n in zip(axes[1:], CUMULATIVE_STEPS):
        ax.imshow(total[n - 1] / n, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"mean of {n} step{'s' if n > 1 else ''}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    save_figure(fig, path)


def plot_encoder_spikes(model, images: torch.Tensor, labels, class_names, path, seed: int = 0) -> None:
    """Cumulative spikes (summed over channels) of the first and the last
    convolutional IF layer after the first and the last step."""
    trace = model.record(images, generator=poisson_generator(seed))
    conv_ifs = [layer.name for layer in model.layers if layer.kind == "if" and len(layer.shape) == 3]
    first, last = conv_ifs[0], conv_ifs[-1]
    T = trace[first].shape[0]
    panels = [(first, 0), (first, T - 1), (last, 0), (last, T - 1)]
    fig, axes = plt.subplots(len(images), len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.1 * len(images)),
                             squeeze=False)
    for row, image in enumerate(images):
        axes[row, 0].imshow(image[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(class_names[int(labels[row])], fontsize=8)
        for col, (layer, t) in enumerate(panels, start=1):
            cumulative = trace[layer][:t + 1, row].sum(0).sum(0).cpu().numpy()   # steps, then channels
            axes[row, col].imshow(cumulative, cmap="magma")
            encoder = "encoder I" if layer == first else "encoder II"
            axes[row, col].set_title(f"{encoder} ({layer}), step {t + 1}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("cumulative spikes summed over channels", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def visualize(model, checkpoint: Path, dataset: FERDataset, out: Path, evaluation=None,
              samples: int = 3, seed: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    face = dataset.images[0].astype(np.float64) / 255.0
    plot_poisson_encoding(face, out / "poisson_encoding.png", seed=seed)
    plot_poisson_cumulative(face, out / "poisson_cumulative.png", seed=seed)
    written += [out / "poisson_encoding.png", out / "poisson_cumulative.png"]
    images, labels = dataset.subset(np.arange(min(samples, len(dataset)))).tensors()
    plot_encoder_spikes(model, images, labels, dataset.class_names, out / "encoder_spikes.png", seed=seed)
    written.append(out / "encoder_spikes.png")
    metrics = checkpoint.parent / "metrics.json"
    if metrics.is_file():
        saved = json.loads(metrics.read_text())
        history = saved.get("epochs", [])
        if history:
            plot_curves(history, out / "curves.png", title=str(checkpoint.parent), loss=trained_loss(saved))
            written.append(out / "curves.png")
    if evaluation is not None:
        plot_confusion(evaluation.confusion, dataset.class_names, out / "confusion.png",
                       title=f"{checkpoint.name}: accuracy {evaluation.accuracy:.1%}")
        written.append(out / "confusion.png")
    return written
