"""``fer2neuro verify``: a checkpoint (the snnTorch model is the reference)
or a bare NIR graph (the nir target is)."""
from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from fer2neuro.atomic import write_text
from fer2neuro.cli.options import (DT, DT_RANGE, SAMPLES, SEED, SEED_RANGE, TIMESTEPS, FiniteFloatRange,
                                   figure_suffix, split_option)
from fer2neuro.cli.base import (Fer2NeuroCommand, OutputDir, OutputFile, data_option, emit_json, ferplus_option,
                                json_option, to_json)
from fer2neuro.cli.simulate import load_input
from fer2neuro.errors import ConfigError, Fer2NeuroError, VerificationError
from fer2neuro.model.config import ENCODERS
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.file import is_hdf5
from fer2neuro.training.distributed import close_group, finish, init_group
from fer2neuro.verification.backends import REFERENCE, backend_names, parse_backends
from fer2neuro.verification.graph import DEFAULT_RATE, DEFAULT_TIMESTEPS, GRAPH_REFERENCE, \
    GraphVerificationOptions, verify_graph
from fer2neuro.verification.markdown import write_markdown_report
from fer2neuro.verification.plots import plot_count_agreement
from fer2neuro.verification.run import VerificationOptions, verify as run_verification

# options that only one kind of source takes
CHECKPOINT_ONLY = {"data": "--data", "ferplus": "--ferplus", "split": "--split", "poisson_seed": "--poisson-seed",
                   "graph": "--nir"}
GRAPH_ONLY = {"input_path": "--input", "rate": "--rate", "dt": "--dt", "semantics": "--semantics"}


def is_graph_file(path) -> bool:
    """A .nir file (even a missing or broken one: read_graph says what is
    wrong with it), or any HDF5 file (NIR's format)."""
    return Path(path).suffix.lower() == ".nir" or is_hdf5(path)


@click.command(cls=Fer2NeuroCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT|GRAPH.nir")
@click.option("--backends", "--targets", "backends", default=None,
              help=f"Comma-separated, or 'all' ({', '.join(backend_names())}). "
                   f"{REFERENCE} (the float64 model) is always a checkpoint's reference, "
                   f"{GRAPH_REFERENCE} a NIR graph's. Default: {REFERENCE},nir for a checkpoint, "
                   f"all for a graph.")
@click.option("--samples", "-n", type=SAMPLES, default=16, show_default=True,
              help="First N samples of the split; for a graph, N generated inputs.")
@data_option
@ferplus_option
@split_option()
@click.option("--seed", "data_seed", type=SEED, default=0, show_default=True,
              help=f"Seed of the synthetic data; for a graph, of the generated inputs ({SEED_RANGE}).")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None,
              help="Input encoding (default: the checkpoint's; for a graph its metadata's, else poisson: "
                   "spike trains; direct: a frame held constant).")
@click.option("--timesteps", "-T", type=TIMESTEPS, default=None,
              help=f"Steps per sample (default: the checkpoint's; for a graph its metadata's, "
                   f"else {DEFAULT_TIMESTEPS}).")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help="A graph only: .npy inputs (B, T, *input_shape) or (T, *input_shape), as simulate takes, "
                   "instead of generated ones.")
@click.option("--rate", type=FiniteFloatRange(0.0, 1.0), default=DEFAULT_RATE, show_default=True,
              help="A graph only: spike probability per input per step of the generated spike trains.")
@click.option("--dt", type=DT, default=None,
              help=f"GRAPH.nir only: the time step to run it at, finite, {DT_RANGE}. Default: the graph's "
                   f"metadata, else 1.0.")
@click.option("--semantics", type=click.Choice(dialects.CHOICES), default="nir", show_default=True,
              help="GRAPH.nir only: how to read it: nir (NIR's equations), a peer's conventions (the file as "
                   "that tool runs it; the Lava-style targets run only what Lava's LIF can express), or auto "
                   "(the writer the file shows, else nir).")
@click.option("--poisson-seed", type=SEED, default=0, show_default=True,
              help=f"Seed of the Poisson spikes every backend receives ({SEED_RANGE}).")
@click.option("--nir", "graph", type=click.Path(dir_okay=False), default=None,
              help="Verify this exported .nir file instead of exporting the checkpoint afresh.")
@click.option("--lava", "lava_folder", type=click.Path(file_okay=False), default=None,
              help="Run the lava / lava-fixed / loihi backends on this exported Lava folder.")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False), default=None,
              help="Run the onnx backend on this exported .onnx file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--report", type=OutputFile(), default=None,
              help="Also write the JSON report to this file.")
@click.option("--plot", type=OutputFile(), default=None, callback=figure_suffix,
              help="Also draw the per-layer count agreement (reference vs backend) to this PNG/PDF/SVG "
                   "(any format matplotlib writes; checked before verifying).")
@click.option("--markdown", type=OutputFile(), default=None,
              help="Also write a Markdown report (per-layer tables, first divergences with membrane values, "
                   "a raster PNG of each backend's first divergent layer next to it).")
@click.option("--out", "out_dir", type=OutputDir(), default=None,
              help="Write the reports into this folder: verify.json and verify.md (with its rasters).")
@json_option
@click.pass_context
def verify(ctx, checkpoint, backends, samples, data, ferplus, split, data_seed, encoder, timesteps, input_path,
           rate, dt, semantics, poisson_seed, graph, lava_folder, onnx_file, batch_size, report, plot, markdown,
           out_dir,
           as_json):
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

    GRAPH.nir instead of a checkpoint: a NIR graph from any tool, with no
    model and no data. Its inputs are --input, or --samples generated
    (seeded Bernoulli spike trains at --rate, or for --encoder direct a
    frame held constant), and the nir target (float64) is the reference:
    float64 targets must match it spike for spike, float32 and fixed-point
    ones are reported as agreement figures (per layer: spikes, counts and
    trains equal, spike count ratio; output classes), the fixed-point ones
    must agree bit for bit, and a target that cannot run the graph is
    reported as such.

    \b
    Examples:
      fer2neuro verify runs/demo/best.pt --backends snntorch,nir --samples 16
      fer2neuro verify runs/demo/best.pt --nir runs/demo/model.nir --encoder poisson -T 8 --plot v.png
      fer2neuro verify runs/demo/best.pt --backends all --samples 4
      fer2neuro verify runs/demo/best.pt --backends onnx --onnx runs/demo/model.onnx --samples 64
      fer2neuro verify runs/demo/best.pt --backends lava-fixed,loihi --lava runs/demo/lava --samples 8
      fer2neuro verify runs/demo/best.pt --backends loihi --lava runs/demo/lava --samples 1000
      fer2neuro verify runs/demo/best.pt --json | jq .backends.nir.layers.if1.match_fraction
      fer2neuro verify other_tool.nir --targets all --samples 8 -T 20 --out verify/
      fer2neuro verify other_tool.nir --targets lava,loihi --input x.npy --json
      fer2neuro verify braille.nir --targets nir,lava,lava-fixed,loihi --dt 1e-4 -T 50
      torchrun --standalone --nproc-per-node 8 -m fer2neuro verify runs/demo/best.pt --backends loihi -n 3589

    Under torchrun each process runs its share of the samples; the report
    (rank 0 prints and writes it) is the one process's, but for the seconds.
    """
    group, _ = init_group("cpu")
    try:
        run_verify(ctx, group, **ctx.params)
        finish(group)
    except Fer2NeuroError:
        if group.main:
            raise
        ctx.exit(1)             # rank 0 says why; every rank exits as it does
    finally:
        close_group(group)


def run_verify(ctx, group, *, checkpoint, backends, samples, data, ferplus, split, data_seed, encoder, timesteps,
               input_path, rate, dt, semantics, poisson_seed, graph, lava_folder, onnx_file, batch_size, report, plot,
               markdown, out_dir, as_json):
    """The command on this rank of ``group``."""
    graph_source = is_graph_file(checkpoint)
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    wrong = CHECKPOINT_ONLY if graph_source else GRAPH_ONLY
    misplaced = [flag for name, flag in wrong.items() if name in given]
    if misplaced:
        kind = "a checkpoint" if graph_source else "a NIR graph"
        raise ConfigError(f"{', '.join(misplaced)} applies to {kind} only, and {checkpoint} is "
                          f"{'a NIR graph' if graph_source else 'a checkpoint'}")
    if graph_source:
        if input_path and given & {"samples", "data_seed", "timesteps", "encoder"}:
            raise ConfigError("--input gives the samples and steps: drop --samples, --seed, --timesteps "
                              "and --encoder")
        options = GraphVerificationOptions(
            targets=parse_backends(backends or "all", reference=GRAPH_REFERENCE),
            inputs=load_input(input_path) if input_path else None, input_path=input_path, samples=samples,
            seed=data_seed, rate=rate, dt=dt, timesteps=timesteps, encoder=encoder, lava=lava_folder, onnx=onnx_file,
            batch_size=batch_size, progress=not as_json and group.main, semantics=semantics)
        result = verify_graph(checkpoint, options, group)
    else:
        options = VerificationOptions(
            backends=parse_backends(backends or f"{REFERENCE},nir"), samples=samples, data=data, split=split,
            ferplus=ferplus, data_seed=data_seed, encoder=encoder, timesteps=timesteps,
            poisson_seed=poisson_seed, graph=graph, lava=lava_folder, onnx=onnx_file, batch_size=batch_size,
            progress=not as_json and group.main)
        result = run_verification(checkpoint, options, group)
    if group.main:
        write_reports(result, report=report, plot=plot, markdown=markdown, out_dir=out_dir)
        if as_json:
            emit_json(result.to_dict())
        else:
            click.echo(result.table())
    if not result.comparisons:
        raise VerificationError(f"no target could run {checkpoint}: "
                                + "; ".join(f"{name}: {why}" for name, why in result.unavailable.items()))
    if not result.equivalent:
        raise VerificationError("; ".join(result.failures()))
    if not as_json and group.main:
        click.echo("\n" + result.verdict_line())


def write_reports(result, *, report=None, plot=None, markdown=None, out_dir=None) -> None:
    """Every report asked for, each written atomically."""
    if out_dir:
        report_json = Path(out_dir) / "verify.json"
        write_text(report_json, to_json(result.to_dict(), indent=1) + "\n")
        write_markdown_report(result, Path(out_dir) / "verify.md")
    if report:
        write_text(report, to_json(result.to_dict(), indent=1) + "\n")
    if plot and result.comparisons:
        plot_count_agreement(result, plot)
    if markdown:
        write_markdown_report(result, markdown)

