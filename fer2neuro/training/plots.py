"""Figures written next to a training run (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fer2neuro.figures import save_figure


LOSS_LABELS = {"rate-mse": "MSE loss (firing rate vs target)", "rate-ce": "cross-entropy on rates",
               "current-ce": "CE on output current + rate MSE", "cross-entropy": "cross-entropy loss"}


def trained_loss(metrics: dict) -> str:
    """The loss a run trained with, from its ``metrics.json``: the recipe's
    for the SNN (the paper's rate MSE in runs older than ``--loss``), the
    cross-entropy for the CNN baseline."""
    config = metrics.get("config", {})
    if config.get("model", {}).get("model") == "cnn":
        return "cross-entropy"
    return config.get("recipe", {}).get("loss", "rate-mse")


def plot_curves(history: list[dict], path: str | Path, title: str = "", loss: str = "rate-mse") -> None:
    """Loss and accuracy per epoch, train and validation; ``loss`` names the
    training loss (``losses.LOSSES``, or "cross-entropy" for the CNN)."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel=LOSS_LABELS.get(loss, loss), title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_runs(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> None:
    """Several runs' accuracy per epoch on one chart, a colour each:
    validation solid, training dashed (``histories``: label -> its
    ``metrics.json`` epochs)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (label, history), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [100 * h["val_accuracy"] for h in history], "-", color=colour, label=f"{label}: validation")
        ax.plot(epochs, [100 * h["train_accuracy"] for h in history], "--", color=colour, alpha=0.6,
                label=f"{label}: training")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title or "accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, class_names, path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts and percentages."""
    confusion = np.asarray(confusion)
    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 * k + 2.5, 1.0 * k + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}%\n{confusion[i, j]}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    ax.set_title(f"{title + ' - ' if title else ''}accuracy {100 * acc:.2f}%")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    save_figure(fig, path)
