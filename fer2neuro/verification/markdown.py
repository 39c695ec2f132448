"""The verification report as Markdown, with a raster picture of each
backend's first divergent layer.

The report is the same for a checkpoint (the snnTorch model is the
reference) and a bare NIR graph (the nir target is). At a divergence it
shows the membrane potential on both sides where
the backend can give it (every target program that records membranes: the
NIR target, ONNX lowered with membrane outputs, and loihi, whose integer v
is scaled back to the float model's units; the Lava runs report spikes only): the value after the
previous step and after the divergent step, so a near-threshold tie is
visible at a glance.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fer2neuro.atomic import write_text
from fer2neuro.figures import save_figure
from fer2neuro.targets.base import Arithmetic
from fer2neuro.verification.backends import REFERENCE
from fer2neuro.verification.report import format_ratio


def membranes_at(report, program, encoded_sample: torch.Tensor, images_sample: torch.Tensor | None,
                 divergence) -> dict:
    """Membrane values (after step t-1, after step t) at the divergence, for
    the reference (the report's) and, where the backend's program records
    membranes, the backend."""
    layer, t = divergence.layer, divergence.time_step
    index = tuple(divergence.neuron)
    trace = report.reference_membranes(encoded_sample, images_sample, layer)
    out = {"reference": None, "backend": None}
    if trace is not None:
        ref = np.asarray(trace)[(slice(None), *index)]
        out["reference"] = [float(ref[t - 1]) if t else 0.0, float(ref[t])]
    if not program.records_membranes:          # the Lava runs: spikes only
        return out
    inputs = encoded_sample.transpose(0, 1).to(torch.float64).numpy()
    rec = program.run(inputs, dt=program.info.dt or 1.0, record=[layer], record_states=True)
    if f"{layer}.v" not in rec.states:
        return out
    v = rec.states[f"{layer}.v"][0][(slice(None), *index)]
    out["backend"] = [float(v[t - 1]) if t else 0.0, float(v[t])]
    return out


def plot_divergence_raster(reference_spikes: np.ndarray, backend: np.ndarray, divergence, name: str, path,
                           reference: str = REFERENCE) -> None:
    """reference_spikes/backend: one sample's spikes (T, *layer_shape) of the
    divergent layer; shows up to 64 neurons around the divergent one."""
    ref = reference_spikes.reshape(reference_spikes.shape[0], -1)
    out = backend.reshape(backend.shape[0], -1)
    centre = divergence.neuron_flat
    lo = max(0, min(centre - 32, ref.shape[1] - 64))
    hi = min(ref.shape[1], lo + 64)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
    for ax, data, title in ((axes[0], ref, f"{reference} (reference)"), (axes[1], out, name),
                            (axes[2], out.astype(int) - ref.astype(int), f"{name} − reference")):
        cmap = "bwr" if "−" in title else "Greys"
        ax.imshow(data[:, lo:hi].T, aspect="auto", interpolation="nearest", cmap=cmap,
                  vmin=-1 if cmap == "bwr" else 0, vmax=1, extent=(-0.5, data.shape[0] - 0.5, hi - 0.5, lo - 0.5))
        ax.set(title=title, xlabel="time step")
        ax.scatter([divergence.time_step], [centre], marker="o", s=80, facecolors="none", edgecolors="orange")
    axes[0].set_ylabel(f"{divergence.layer} neuron (flat index)")
    fig.suptitle(f"first divergence of {name}: layer {divergence.layer}, sample {divergence.sample}, "
                 f"neuron {tuple(divergence.neuron)}, step {divergence.time_step}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def write_markdown_report(report, path) -> None:
    """The Markdown report, with a raster PNG per divergent backend beside it."""
    path = Path(path)
    details = {}
    for name, c in report.comparisons.items():
        d = c.first_divergence
        if d is None:
            continue
        encoded, image = report.divergence_inputs[name]
        raster = f"{path.stem}-{name}-divergence.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_divergence_raster(*c.divergence_trains, d, name, path.parent / raster, reference=report.reference)
        details[name] = {"raster": raster,
                         "membranes": membranes_at(report, report.programs[name], encoded, image, d)}
    write_markdown(report, path, details)


def percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def write_markdown(report, path, details: dict) -> None:
    """``details``: backend -> {"membranes": ..., "raster": file name}."""
    path = Path(path)
    lines = [f"# fer2neuro verification: {report.title}", "", *report.markdown_header(),
             f"- verdict: **{'EQUIVALENT' if report.equivalent else 'NOT EQUIVALENT'}** (every float64 backend "
             f"spike for spike; fixed-point backends bit for bit with each other)", ""]
    lines += ["| backend | precision | must match | verdict | prediction agreement | accuracy | seconds |",
              "|---|---|---|---|---|---|---|"]
    for name, c in report.comparisons.items():
        verdict = "equal" if c.counts_equal else ("DIFFERS" if c.exact_required else "reported")
        agreement = f"{c.prediction_matches}/{c.predicted} ({c.prediction_agreement:.1%})" if c.predicted else "—"
        lines.append(f"| {name} | {c.precision} | {'yes' if c.exact_required else 'no'} | {verdict} | "
                     f"{agreement} | {percent(c.accuracy)} | {c.seconds:.2f} |")
    for name, reason in report.unavailable.items():
        lines.append(f"| {name} | — | — | cannot run: {reason.replace('|', '/')} | — | — | — |")
    for name, c in report.comparisons.items():
        lines += ["", f"## {name} ({c.precision})", "",
                  "| layer | neurons | reference spikes | rate | spikes equal | counts equal | trains equal | "
                  "count ratio | Δ spikes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for layer in c.layers.values():
            lines.append(f"| {layer.name} | {layer.neurons} | {layer.reference_spikes} | "
                         f"{layer.reference_rate:.3f} | {layer.spike_agreement:.4%} | {layer.match_fraction:.4%} | "
                         f"{layer.identical_trains:.4%} | {format_ratio(layer.count_ratio)} | "
                         f"{layer.count_difference:+d} |")
        d = c.first_divergence
        if d is None:
            lines += ["", "No divergence: every spike of every layer is identical."]
            continue
        lines += ["", f"**First divergence:** {d.describe()}."]
        info = details.get(name, {})
        m = info.get("membranes")
        if m:
            ref = m["reference"]
            if ref:
                lines.append(f"Reference membrane after step {d.time_step - 1}: {ref[0]:.17g}; after step "
                             f"{d.time_step}: {ref[1]:.17g}.")
            if m["backend"]:
                lines.append(f"{name} membrane: {m['backend'][0]:.17g}, then {m['backend'][1]:.17g}.")
            else:
                lines.append(f"({name} reports spikes only, not membranes.)")
            if c.precision == Arithmetic.FIXED:
                lines.append("(Fixed-point membranes are the integer state divided by the layer's scale × 64.)")
        if info.get("raster"):
            lines += ["", f"![first divergence of {name}]({info['raster']})"]
    for pair, c in report.fixed_agreement.items():
        exact = c.counts_equal and c.first_divergence is None
        lines += ["", f"## Fixed point: {pair}", "",
                  "Bit-exact: every spike of every layer and step is identical." if exact else
                  f"**They differ.** First divergence: {c.first_divergence.describe()}."]
    if report.unavailable:
        lines += ["", "## Cannot run", ""]
        lines += [f"- {name}: {reason}" for name, reason in report.unavailable.items()]
    write_text(path, "\n".join(lines) + "\n")
