"""``fer2neuro simulate``"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import click
import numpy as np

from fer2neuro.atomic import atomic_path
from fer2neuro.cli.base import Fer2NeuroCommand, OutputFile, emit_json, json_option
from fer2neuro.cli.options import DT, DT_RANGE
from fer2neuro.errors import ConfigError, DataError, one_line
from fer2neuro.memory import check_fits, graph_values, steps_bytes
from fer2neuro.exporters.nir_export import graph_from_path
from fer2neuro.lowering.lava_folder import LavaArtifact, is_lava_folder
from fer2neuro.nirgraph import dialects
from fer2neuro.nirgraph.describe import input_shape
from fer2neuro.nirgraph.file import GraphInfo
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.targets import get_target, target_names
from fer2neuro.targets.base import as_input_array

NETX_SUFFIX = ".net"              # a lava-dl netx network file


def load_input(path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such input file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({one_line(exc, 150)})") from None
    if not isinstance(x, np.ndarray):
        raise DataError(f"{path}: holds an .npz archive; give one .npy array (T, ...) or (B, T, ...)")
    return x


def checked_input(path, info: GraphInfo | None = None) -> np.ndarray:
    """``path``'s array after the one check every target's input gets
    (``as_input_array``: real numbers, no empty axis, finite), and, for a
    graph fer2neuro exported (its metadata names the encoder), its range: a
    direct-encoded model was trained on images scaled to [0, 1], a
    Poisson-encoded one takes 0/1 spike trains. Out of range is an error:
    uint8 pixels (0..255) would run and give confident nonsense."""
    try:
        x = as_input_array(load_input(path))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    if info is not None and info.fer2neuro and info.encoder == "direct":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (uint8 pixels? divide them by 255)" if hi > 1.0 and hi <= 255.0 and lo >= 0.0 else ""
            raise DataError(f"{path}: values span [{lo:g}, {hi:g}]; this graph was trained on direct-encoded "
                            f"images in [0, 1]{hint}")
    elif info is not None and info.fer2neuro and info.encoder == "poisson":
        if not np.isin(x, (0.0, 1.0)).all():
            raise DataError(f"{path}: this graph takes Poisson spike trains, 0/1 values; the input holds others "
                            f"(e.g. {float(x[~np.isin(x, (0.0, 1.0))].flat[0]):g})")
    return x


def open_source(graph_path, target, semantics: str = "nir"):
    """GRAPH opened by ``target``: its own artifact as it is (an exported Lava
    folder, an .onnx model), anything else as a NIR graph (a .nir file, a
    checkpoint exported on the fly, an exported Lava folder's model.nir),
    read with ``semantics`` (nirgraph/dialects: "nir", "auto" or a peer's)."""
    if target.accepts(graph_path) or is_lava_folder(graph_path):
        if not dialects.is_nir(semantics):
            raise ConfigError(f"{graph_path} is fer2neuro's own export: it runs with NIR's semantics, "
                              f"not --semantics {semantics}")
        if target.accepts(graph_path):
            return target.open(str(graph_path))
        return target.open(LavaArtifact.load(graph_path).graph)
    takers = [name for name in target_names() if get_target(name).accepts(graph_path)]
    if takers:
        raise ConfigError(f"{graph_path} is not a NIR graph: run it with --target {' or '.join(takers)}")
    return target.open(dialects.apply(graph_from_path(graph_path, semantics), semantics))


def run_dt(given: float | None, info: GraphInfo, source) -> tuple[float, str | None]:
    """The dt to run at: --dt, else the graph's metadata (a dialect puts its
    writer's default there), else 1 with a note saying so."""
    if given is not None:
        return float(given), None
    if info.dt is not None:
        return float(info.dt), None
    return 1.0, (f"{source} gives no dt in its metadata: ran at dt = 1; give --dt (or --semantics of its writer, "
                 f"whose default dt is then used)")


def check_memory(program, x: np.ndarray, analog: bool) -> None:
    """The recording of every sample and step must fit: one value per node
    output (uint8 spikes; float64 with ``analog`` values or membranes).
    Skipped where the graph is not at hand (an .onnx file as it is)."""
    if program.graph is None:
        return
    flat = flatten_graph(program.graph)
    shape = input_shape(flat, flat.inputs[0]) if len(flat.inputs) == 1 else None
    if not shape or math.prod(shape) == 0:
        return
    frames = x.size // math.prod(shape)             # samples x steps
    check_fits(steps_bytes(timesteps=frames, values=graph_values(flat), batch=1, itemsize=8 if analog else 1),
               f"recording {frames} sample steps", "the steps or samples of --input")


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, with the zip file closed whatever happens: numpy
    leaves it open when a write fails (a full disk), and its ``__del__``
    then prints a second traceback after the one-line error."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


@click.command(cls=Fer2NeuroCommand)
@click.argument("graph_path", type=click.Path(), metavar="GRAPH")
@click.option("--target", type=click.Choice(target_names()), default="nir", show_default=True)
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help=".npy array (T, *input_shape) for one sample or (B, T, *input_shape) for a batch.")
@click.option("--out", type=OutputFile(), required=True, help=".npz file to write.")
@click.option("--dt", type=DT, default=None,
              help=f"Time step, finite, {DT_RANGE}. Default: the graph's metadata, else the --semantics "
                   f"writer's default, else 1.0 (with a note).")
@click.option("--semantics", type=click.Choice(dialects.CHOICES), default="nir", show_default=True,
              help="How to read a NIR graph: nir (NIR's equations, SPEC §2), a peer's conventions (the file "
                   "as that tool runs it: docs/interop.md), or auto (the writer the file shows, else nir).")
@click.option("--record", type=click.Choice(["spikes", "all"]), default="spikes", show_default=True,
              help="spikes: every node that emits spikes (plus 'output'); all: every node (nir only: the "
                   "lava, loihi and onnx targets record their spiking layers).")
@click.option("--membranes", is_flag=True, help="Also save each neuron node's membrane as '<node>.v'.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples simulated at once (bounds memory); default all.")
@click.option("--emulate-overflow", is_flag=True,
              help="loihi: wrap and clip values that leave Loihi's bit widths, as the chip and Lava do, "
                   "instead of stopping with an error that names them.")
@click.option("--reset-interval", type=click.IntRange(min=1), default=None,
              help="netx .net files only: netx.hdf5.Network's reset_interval (every neuron a LIFReset).")
@click.option("--reset-offset", type=click.IntRange(min=0), default=None,
              help="netx .net files only, with --reset-interval: netx.hdf5.Network's reset_offset (default 0).")
@json_option
def simulate(graph_path, target, input_path, out, dt, semantics, record, membranes, batch_size, emulate_overflow,
             reset_interval, reset_offset, as_json):
    """Run a NIR graph (a .nir file, a checkpoint exported on the fly, or an
    exported Lava folder, or an exported .onnx model) on a target: nir
    (float64 numpy), lava (Lava floating_pt), lava-fixed (the netx network in
    Lava fixed_pt), loihi (the same integer arithmetic, batched, without
    Lava), onnx (onnxruntime).

    Y.npz holds one array per recorded node, keyed by node name and shaped
    (B, T, ...) (B = 1 for a single-sample input), spikes as uint8, plus
    'output', the graph's Output node.

    \b
    Examples:
      fer2neuro simulate model.nir --target nir --input x.npy --out y.npz
      fer2neuro simulate runs/demo/best.pt --input x.npy --out y.npz --record all --membranes
      fer2neuro simulate snntorch_export.nir --input x.npy --out y.npz --dt 1e-4
      fer2neuro simulate runs/demo/lava --target lava-fixed --input x.npy --out y.npz
      fer2neuro simulate runs/demo/lava --target loihi --input batch.npy --out y.npz --batch-size 64
      fer2neuro simulate runs/demo/model.onnx --target onnx --input batch.npy --out y.npz
      fer2neuro simulate net.net --target lava-fixed --input x.npy --out y.npz --record all

    A lava-dl netx network file (GRAPH ending in .net) runs on loihi or
    lava-fixed exactly as lava-dl's netx.hdf5.Network runs in Lava fixed_pt:
    T steps (the input's), no alignment. X: 0/1 spikes into net.inp, or,
    when the first block is an input block with a neuron, integer bias
    mantissas of that layer's shape, constant over T. Y.npz: 'layer<i>' per
    netx layer index i, (B, T, C, H, W) or (B, T, N) uint8 spikes, with
    --record all (or --membranes) also 'layer<i>.u' and 'layer<i>.v' (int64),
    plus 'output' (the last layer's spikes). See docs/deployment.md.

    X is checked before any target runs: real numbers only (bool, integer,
    float; not strings or complex), no empty axis, every value finite, the
    graph's input shape. For a graph fer2neuro exported (its metadata names
    the encoder) values outside the trained range are an error, not a
    warning: a direct-encoded model takes images in [0, 1] (divide uint8
    pixels by 255), a Poisson-encoded one 0/1 spike trains. --dt must be
    finite, 0 < dt <= 1e6.
    """
    if reset_offset is not None and reset_interval is None:     # netx would ignore it: say so, before any work
        raise ConfigError("--reset-offset needs --reset-interval: it places the resets within each interval")
    if str(graph_path).endswith(NETX_SUFFIX) and not Path(graph_path).is_dir():
        if not dialects.is_nir(semantics):
            raise ConfigError("--semantics applies to NIR graphs; a netx file runs as lava-dl runs it")
        return _simulate_netx(graph_path, target, input_path, out, record == "all" or membranes, batch_size,
                              emulate_overflow, reset_interval, reset_offset, as_json)
    if reset_interval is not None or reset_offset is not None:
        raise ConfigError("--reset-interval and --reset-offset apply to netx network files (.net) only")
    options = {"emulate_overflow": True} if emulate_overflow else {}
    program = open_source(graph_path, get_target(target, **options), semantics)
    info = program.info
    dt, dt_note = run_dt(dt, info, graph_path)
    x = checked_input(input_path, info)
    check_memory(program, x, record == "all" or membranes)
    recording = program.run(x, dt=dt, record=record, record_states=membranes,
                            batch_size=batch_size, progress=not as_json)
    arrays = dict(recording.outputs)
    if len(recording.output_nodes) == 1:
        arrays["output"] = recording.output
    arrays.update(recording.states)
    save_npz(out, arrays)
    summary = {name: {"shape": list(a.shape), "spikes": int(a.sum()) if name in recording.spiking else None}
               for name, a in recording.outputs.items()}
    result = {"graph": str(graph_path), "target": target, "dt": dt, "dt_assumed": dt_note is not None,
              "semantics": dialects.of_graph(program.graph).name if program.graph is not None else dialects.NIR.name,
              "out": str(out),
              "samples": int(next(iter(recording.outputs.values())).shape[0]),
              "nodes": summary}
    if info.class_names and len(recording.output_nodes) == 1 and recording.output.dtype == np.uint8:
        counts = recording.output.sum(1, dtype=np.int64)
        if counts.shape[-1] == len(info.class_names):
            result["predictions"] = [info.class_names[i] for i in counts.argmax(-1)]
    if as_json:
        emit_json(result)
        return
    click.echo(f"{graph_path} on {target}, dt={dt}: wrote {out}")
    if dt_note:
        click.echo(f"note: {dt_note}", err=True)
    for name, s in summary.items():
        spikes = f"{s['spikes']} spikes" if s["spikes"] is not None else "analog"
        click.echo(f"  {name:<12} {str(tuple(s['shape'])):<22} {spikes}")
    if "predictions" in result:
        shown = result["predictions"][:10]
        more = f" (+{len(result['predictions']) - 10} more)" if len(result["predictions"]) > 10 else ""
        click.echo(f"  predicted: {', '.join(shown)}{more}")


def _simulate_netx(path, target, input_path, out, record_all, batch_size, emulate_overflow, reset_interval,
                   reset_offset, as_json):
    """A lava-dl netx file on loihi (batched) or lava-fixed (lava-dl's own
    netx.hdf5.Network in Lava fixed_pt, one sample per run)."""
    runner = get_target(target, **({"emulate_overflow": True} if emulate_overflow else {}))
    if not hasattr(runner, "run_netx"):
        takers = [name for name in target_names() if hasattr(get_target(name), "run_netx")]
        raise ConfigError(f"{path} is a lava-dl netx network: run it with --target {' or '.join(takers)} "
                          f"(not {target})")
    program = runner.open_netx(path, reset_interval=reset_interval, reset_offset=reset_offset or 0)
    x = program.prepare(checked_input(input_path))
    arrays = runner.run_netx(program, x, record_all=record_all, batch_size=batch_size, progress=not as_json)
    arrays["output"] = arrays[program.names[-1]]
    save_npz(out, arrays)
    summary = {name: {"shape": list(arrays[name].shape), "spikes": int(arrays[name].sum())}
               for name in program.names}
    result = {"graph": str(path), "target": target, "input": program.input_kind, "samples": int(x.shape[0]),
              "steps": int(x.shape[1]), "reset_interval": reset_interval, "reset_offset": reset_offset or 0,
              "out": str(out), "nodes": summary}
    if as_json:
        emit_json(result)
        return
    click.echo(f"{path} (netx, {program.input_kind} input) on {target}, {x.shape[1]} steps: wrote {out}")
    for name, s in summary.items():
        click.echo(f"  {name:<12} {str(tuple(s['shape'])):<22} {s['spikes']} spikes")
