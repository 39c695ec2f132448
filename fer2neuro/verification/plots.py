"""The verification picture: for each backend and spiking layer, how often
each (reference count, backend count) pair occurs over all neurons and
samples. Equivalent backends are a pure diagonal; anything off it is a
neuron that spiked a different number of times."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from fer2neuro.errors import VerificationError
from fer2neuro.figures import save_figure

PLOT_BINS = 512       # a larger T is drawn with its counts binned (a picture has no more pixels)


def plot_count_agreement(report, path) -> None:
    if not report.comparisons:
        raise VerificationError("nothing to draw: no backend ran")
    backends = list(report.comparisons.values())
    layers = list(dict.fromkeys(name for c in backends for name in c.layers))
    fig, axes = plt.subplots(len(backends), len(layers), figsize=(2.2 * len(layers), 2.5 * len(backends)),
                             squeeze=False)
    top = report.timesteps
    for row, comparison in zip(axes, backends):
        for ax, name in zip(row, layers):
            if name not in comparison.layers:          # a layer this backend does not record
                ax.axis("off")
                continue
            layer = comparison.layers[name]
            pairs = np.ma.masked_equal(layer.count_pairs.dense(PLOT_BINS).astype(float), 0)
            vmax = max(pairs.max() if pairs.count() else 1.0, 1.0)
            ax.imshow(pairs, origin="lower", cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax),
                      extent=(-0.5, top + 0.5, -0.5, top + 0.5))
            ax.plot([0, top], [0, top], color="white", lw=0.6, ls=":")
            off = layer.pairs - layer.count_matches
            colour = "black" if off == 0 else "crimson"
            ax.set_title(f"{comparison.backend}: {name}\n{layer.match_fraction:.2%} equal"
                         + (f", {off} off" if off else ""), fontsize=8, color=colour)
            ax.set_xlabel(f"{comparison.backend} count", fontsize=7)
            ax.set_ylabel("reference count", fontsize=7)
            ax.tick_params(labelsize=6)
    verdict = "equivalent" if report.equivalent else "NOT equivalent"
    fig.suptitle(f"spike counts per neuron: {report.reference} (float64) vs backends, {report.samples} samples, "
                 f"{report.encoder}, T={report.timesteps}: {verdict}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
