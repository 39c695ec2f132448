"""``fer2neuro verify``"""
from __future__ import annotations

from pathlib import Path

import click

from fer2neuro.atomic import write_text
from fer2neuro.cli.base import data_option, emit_json, ferplus_option, json_option, to_json
from fer2neuro.errors import VerificationError
from fer2neuro.model.config import ENCODERS
from fer2neuro.verification.backends import REFERENCE, backend_names, parse_backends
from fer2neuro.verification.markdown import membranes_at, plot_divergence_raster, write_markdown
from fer2neuro.verification.plots import plot_count_agreement
from fer2neuro.verification.run import VerificationOptions, verify as run_verification


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--backends", default=f"{REFERENCE},nir", show_default=True,
              help=f"Comma-separated, or 'all' ({', '.join(backend_names())}). "
                   f"{REFERENCE} (the float64 model) is always the reference.")
@click.option("--samples", "-n", type=click.IntRange(min=1), default=16, show_default=True,
              help="First N samples of the split.")
@data_option
@ferplus_option
@click.option("--split", default="PublicTest", show_default=True)
@click.option("--seed", "data_seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic data.")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None,
              help="Input encoding (default: the checkpoint's).")
@click.option("--timesteps", "-T", type=click.IntRange(min=1), default=None,
              help="Steps per sample (default: the checkpoint's).")
@click.option("--poisson-seed", type=int, default=0, show_default=True,
              help="Seed of the Poisson spikes every backend receives.")
@click.option("--nir", "graph", type=click.Path(dir_okay=False), default=None,
              help="Verify this exported .nir file instead of exporting the checkpoint afresh.")
@click.option("--lava", "lava_folder", type=click.Path(file_okay=False), default=None,
              help="Run the lava / lava-fixed / loihi backends on this exported Lava folder.")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False), default=None,
              help="Run the onnx backend on this exported .onnx file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON report to this file.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw the per-layer count agreement (reference vs backend) to this PNG/PDF.")
@click.option("--markdown", type=click.Path(dir_okay=False), default=None,
              help="Also write a Markdown report (per-layer tables, first divergences with membrane values, "
                   "a raster PNG of each backend's first divergent layer next to it).")
@json_option
def verify(checkpoint, backends, samples, data, ferplus, split, data_seed, encoder, timesteps,
           poisson_seed, graph, lava_folder, onnx_file, batch_size, report, plot, markdown, as_json):
    """Prove that every backend produces the same spikes as the trained model.

    The same samples (the same Poisson spikes) run through the snnTorch model
    in float64 and through each backend. For every spiking layer the spike
    count of every neuron is compared. Exit status 0 only when every float64
    backend (nir, lava, onnx) matches the reference exactly; otherwise the first
    divergence (layer, sample, neuron, step) is named. Fixed-point backends
    (lava-fixed, loihi) are compared with the float model and their
    differences reported; with both, they must agree bit for bit. A
    checkpoint fine-tuned with 'fer2neuro finetune --qat loihi' must also
    give, on every fixed-point backend, exactly the spikes of the integer
    network it was fine-tuned through.

    \b
    Examples:
      fer2neuro verify runs/demo/best.pt --backends snntorch,nir --samples 16
      fer2neuro verify runs/demo/best.pt --nir runs/demo/model.nir --encoder poisson -T 8 --plot v.png
      fer2neuro verify runs/demo/best.pt --backends all --samples 4
      fer2neuro verify runs/demo/best.pt --backends onnx --onnx runs/demo/model.onnx --samples 64
      fer2neuro verify runs/demo/best.pt --backends lava-fixed,loihi --lava runs/demo/lava --samples 8
      fer2neuro verify runs/demo/best.pt --backends loihi --lava runs/demo/lava --samples 1000
      fer2neuro verify runs/demo/best.pt --json | jq .backends.nir.layers.if1.match_fraction
    """
    options = VerificationOptions(
        backends=parse_backends(backends), samples=samples, data=data, split=split, ferplus=ferplus,
        data_seed=data_seed, encoder=encoder, timesteps=timesteps, poisson_seed=poisson_seed,
        graph=graph, lava=lava_folder, onnx=onnx_file, batch_size=batch_size, progress=not as_json)
    result = run_verification(checkpoint, options)
    if report:
        write_text(report, to_json(result.to_dict(), indent=1) + "\n")
    if plot:
        plot_count_agreement(result, plot)
    if markdown:
        write_markdown_report(result, markdown)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(result.table())
    if not result.equivalent:
        raise VerificationError("; ".join(result.failures()))
    if not as_json:
        click.echo(f"\nequivalent: every float64 backend matches {REFERENCE} spike for spike"
                   + ("; the fixed-point backends agree bit for bit" if result.fixed_agreement else "")
                   + (f"; they equal the {result.qat} QAT model bit for bit" if result.quantised else ""))


def write_markdown_report(result, path) -> None:
    """The Markdown report, with a raster PNG per divergent backend beside it."""
    path = Path(path)
    details = {}
    for name, c in result.comparisons.items():
        d = c.first_divergence
        if d is None:
            continue
        encoded, image = result.divergence_inputs[name]
        raster = f"{path.stem}-{name}-divergence.png"
        plot_divergence_raster(*c.divergence_trains, d, name, path.parent / raster)
        details[name] = {"raster": raster,
                         "membranes": membranes_at(result.model, result.programs[name], encoded, image,
                                                   result.encoder, d)}
    write_markdown(result, path, details)
