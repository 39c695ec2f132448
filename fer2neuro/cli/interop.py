"""``fer2neuro interop``"""
from __future__ import annotations

from pathlib import Path

import click

from fer2neuro.atomic import write_text
from fer2neuro.cli.base import Fer2NeuroCommand, OutputDir, OutputFile, emit_json, json_option, to_json
from fer2neuro.cli.options import DT, DT_RANGE, SEED, TIMESTEPS, FiniteFloatRange
from fer2neuro.cli.simulate import load_input
from fer2neuro.errors import ConfigError, VerificationError
from fer2neuro.exporters.nir_export import graph_from_path
from fer2neuro.interop.markdown import exports_markdown, exports_table, markdown, table
from fer2neuro.interop.peers import PEERS, parse_peers
from fer2neuro.interop.run import InteropOptions, interop as run_interop, peer_exports
from fer2neuro.interop.runners.protocol import KINDS
from fer2neuro.model.config import ENCODERS
from fer2neuro.nirgraph import dialects
from fer2neuro.targets import target_names
from fer2neuro.verification.graph import DEFAULT_RATE, GRAPH_REFERENCE

SEMANTICS_HELP = ("How fer2neuro reads the graph: nir (NIR's equations, SPEC §2), a peer's conventions "
                  f"({', '.join(dialects.PEERS)}: the file as that tool runs it), or auto (the writer the "
                  "file shows, else nir).")


def parse_targets(value: str) -> list[str]:
    """fer2neuro targets to run beside the nir reference (never listed itself)."""
    names = target_names() if value.strip() == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in target_names()]
    if unknown:
        raise ConfigError(f"unknown target {', '.join(unknown)}: use any of {', '.join(target_names())} or all")
    return [n for n in dict.fromkeys(names) if n != GRAPH_REFERENCE]


@click.command(cls=Fer2NeuroCommand)
@click.argument("source", type=click.Path(dir_okay=False), metavar="GRAPH.nir|CKPT", required=False)
@click.option("--peers", default="installed", show_default=True,
              help=f"Comma-separated peers ({', '.join(PEERS)}), 'installed' or 'all' (missing ones are "
                   f"reported as such). Each runs in its own environment: make peers.")
@click.option("--targets", default="nir", show_default=True,
              help="fer2neuro targets to run beside the peers (nir is the reference; e.g. nir,onnx,lava).")
@click.option("--semantics", type=click.Choice(dialects.CHOICES), default="nir", show_default=True,
              help=SEMANTICS_HELP)
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help=".npy inputs (B, T, *input_shape), as simulate takes; default: generated as verify does.")
@click.option("--samples", "-n", type=click.IntRange(min=1, max=4096), default=4, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the generated inputs.")
@click.option("--rate", type=FiniteFloatRange(0.0, 1.0), default=DEFAULT_RATE, show_default=True,
              help="Spike probability per input per step of generated spike trains.")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None,
              help="Generated inputs: poisson (spike trains) or direct (a frame held); default: the graph's.")
@click.option("--timesteps", "-T", type=TIMESTEPS, default=None,
              help="Steps per sample; default: the graph's metadata, else 20.")
@click.option("--dt", type=DT, default=None,
              help=f"The time step, {DT_RANGE}, handed to every peer whose importer takes one. Default: the "
                   f"graph's metadata, else the semantics' own, else 1 (said in the report).")
@click.option("--report", type=OutputFile(), default=None, help="Also write the JSON report here.")
@click.option("--markdown", "markdown_path", type=OutputFile(), default=None,
              help="Also write the Markdown report here.")
@click.option("--out", "out_dir", type=OutputDir(), default=None,
              help="Write interop.json and interop.md into this folder.")
@click.option("--from-peers", "from_peers", default=None, metavar="KINDS",
              help=f"The other direction, with no GRAPH: each peer builds its own small networks of these kinds "
                   f"({', '.join(KINDS)}, or all), exports them with its own NIR exporter and default settings, "
                   f"and fer2neuro reads each file with NIR's semantics and with the peer's, compared with the "
                   f"peer's own simulation of the network.")
@click.option("--strict", is_flag=True, help="Exit 1 unless every requested peer is exact in every layer.")
@json_option
def interop(source, peers, targets, semantics, input_path, samples, seed, rate, encoder, timesteps, dt, report,
            markdown_path, out_dir, from_peers, strict, as_json):
    """Run a NIR graph in the other NIR tools, each with its own importer
    and its own simulator, and say where they disagree with fer2neuro.

    The same inputs go through fer2neuro's nir target (float64, the
    reference), the other --targets, and each peer: snnTorch, Norse, Sinabs,
    Rockpool and Spyx, each in its own virtual environment (make peers). Per
    peer and per spiking layer the report gives whether the peer loads and
    runs the file, the share of neuron-steps whose spike count equals the
    reference's, and the first divergence (layer, sample, neuron, step).
    Where a peer diverges, the likely causes are tested on the first
    divergent layer, each on its own (dt, reset mode, reset delay, spikes
    per step, threshold comparison, spike before input, decay, flatten
    order), and the peer's own conventions on the whole graph
    (--semantics PEER): the report names those that make it exact.

    \b
    Examples:
      fer2neuro interop runs/demo/model.nir
      fer2neuro interop runs/demo/best.pt --peers snntorch,norse --json
      fer2neuro interop norse_export.nir --semantics norse --targets nir,onnx
      fer2neuro interop runs/demo/model-for-sinabs.nir --peers sinabs --out interop/

    Exit status 0 when the comparison ran (whatever it found; --strict: only
    when every peer is exact), 1 on bad input.
    """
    if from_peers is not None:
        if source:
            raise ConfigError("--from-peers takes no GRAPH: the peers write the graphs")
        return _from_peers(parse_peers(peers), from_peers, seed, samples, timesteps or 20, report, markdown_path,
                           out_dir, strict, as_json)
    if not source:
        raise ConfigError("give a GRAPH.nir or checkpoint, or --from-peers KINDS")
    given_input = load_input(input_path) if input_path else None
    if given_input is not None and (timesteps or encoder):
        raise ConfigError("--input gives the samples and steps: drop --timesteps and --encoder")
    options = InteropOptions(peers=parse_peers(peers), targets=parse_targets(targets),
                             semantics=semantics, inputs=given_input, input_path=input_path, samples=samples,
                             seed=seed, rate=rate, dt=dt, timesteps=timesteps, encoder=encoder)
    if not options.peers:
        raise ConfigError("no peer is installed: make peers (or name them with --peers to see why)")
    graph = graph_from_path(source, semantics)
    say = None if as_json else (lambda message: click.echo(message, err=True))
    result = run_interop(source, graph, options, progress=say)
    _emit(result.to_dict(), lambda: markdown(result), lambda: table(result), "interop", out_dir, report,
          markdown_path, as_json)
    if strict and not all(p.exact for p in result.peers):
        raise VerificationError("not every peer is exact: " + "; ".join(
            f"{p.peer}: {p.verdict()}" for p in result.peers if not p.exact))


def _emit(data: dict, markdown_of, table_of, stem: str, out_dir, report, markdown_path, as_json: bool) -> None:
    """A report in both directions: the JSON ``data`` and its Markdown
    (``markdown_of()``) into ``out_dir`` as STEM.json and STEM.md and to
    --report / --markdown where given, then ``data`` as JSON (--json) or the
    table (``table_of()``) on stdout."""
    if out_dir:
        write_text(Path(out_dir) / f"{stem}.json", to_json(data, indent=1) + "\n")
        write_text(Path(out_dir) / f"{stem}.md", markdown_of())
    if report:
        write_text(report, to_json(data, indent=1) + "\n")
    if markdown_path:
        write_text(markdown_path, markdown_of())
    if as_json:
        emit_json(data)
    else:
        click.echo(table_of())


def _from_peers(peers, kinds, seed, samples, timesteps, report, markdown_path, out_dir, strict, as_json):
    names = list(KINDS) if kinds.strip() == "all" else [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in KINDS]
    if unknown or not names:
        raise ConfigError(f"unknown network kind {', '.join(unknown) or repr(kinds)}: use any of "
                          f"{', '.join(KINDS)} or all")
    if not peers:
        raise ConfigError("no peer is installed: make peers (or name them with --peers to see why)")
    say = None if as_json else (lambda message: click.echo(message, err=True))
    results = peer_exports(peers, names, seed=seed, samples=samples, timesteps=timesteps, progress=say)
    data = {"direction": "peers' exports read by fer2neuro", "seed": seed, "samples": samples,
            "timesteps": timesteps, "exports": [r.to_dict() for r in results]}
    _emit(data, lambda: exports_markdown(results), lambda: exports_table(results), "interop-exports", out_dir,
          report, markdown_path, as_json)
    if strict and not all(r.to_dict()["exact_with_peer_semantics"] for r in results):
        raise VerificationError("not every peer export reads back exactly with its writer's semantics")
