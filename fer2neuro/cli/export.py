"""``fer2neuro export``"""
from __future__ import annotations

from inspect import signature

import click

from fer2neuro.cli.base import Fer2NeuroCommand, OutputPath, emit_json, json_option, output_dir, output_file
from fer2neuro.cli.options import MODEL_TIMESTEPS
from fer2neuro.errors import ConfigError
from fer2neuro.exporters import exporter_names, get_exporter, writes_folder
from fer2neuro.interop.for_peer import PEERS
from fer2neuro.model.config import ENCODERS


@click.command(cls=Fer2NeuroCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False), metavar="CKPT")
@click.option("--target", type=click.Choice(exporter_names()), default="nir", show_default=True,
              help="File format to write.")
@click.option("--out", type=OutputPath(), required=True,
              help="File (nir: a .nir graph; onnx: a .onnx model) or folder (lava) to write, atomically.")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None,
              help="Input encoding recorded in the graph (default: the checkpoint's).")
@click.option("--timesteps", "-T", type=MODEL_TIMESTEPS, default=None,
              help="Steps per sample recorded in the graph (default: the checkpoint's).")
@click.option("--precision", type=click.Choice(["float64", "float32"]), default=None,
              help="onnx only (default float64): float64 matches the float64 reference spike for spike; float32 is the "
                   "trained dtype with ONNX Conv, faster, and differs at rare threshold ties.")
@click.option("--for", "peer", type=click.Choice(PEERS), default=None,
              help="nir only: write the graph so that this peer's own NIR importer runs it as fer2neuro does "
                   "(dt where the peer takes it, IF/LIF as the peer maps them, its nir version's fields); a "
                   "network the peer cannot represent is refused with the reason. See docs/interop.md.")
@json_option
def export(checkpoint, target, out, encoder, timesteps, precision, peer, as_json):
    """Export a trained checkpoint for deployment.

    NIR: BatchNorm folded into the convolutions, each max pool lowered to a
    sum pool feeding an IF neuron (threshold 0.5), dt = 1; T, the encoder and
    the class names go into the graph metadata.

    Lava: a folder with the lava-dl netx network (network.net, 8-bit weights,
    Loihi integer thresholds and decays), the float graph (model.nir) and a
    manifest (manifest.json: T, encoder, classes, per-layer scales).

    ONNX: the network unrolled over T (opset 17, one output per spiking
    layer), float64 by default, for onnxruntime.

    \b
    Examples:
      fer2neuro export runs/demo/best.pt --target nir --out runs/demo/model.nir
      fer2neuro export runs/demo/best.pt --target nir --for norse --out runs/demo/model-norse.nir
      fer2neuro export runs/demo/best.pt --target lava --out runs/demo/lava
      fer2neuro export runs/demo/best.pt --target onnx --out runs/demo/model.onnx
      fer2neuro simulate runs/demo/model.nir --target nir --input x.npy --out y.npz
    """
    (output_dir if writes_folder(target) else output_file)(out, "--out")
    options = {"precision": precision} if precision else {}
    if peer:
        options["peer"] = peer
    for option in options:          # an option the chosen writer does not take is an error, not ignored
        takers = [name for name in exporter_names() if option in signature(get_exporter(name)).parameters]
        if target not in takers:
            flag = "--for" if option == "peer" else f"--{option}"
            raise ConfigError(f"{flag} applies to --target {' or '.join(takers)} only")
    info = get_exporter(target)(checkpoint, out, encoder=encoder, timesteps=timesteps, **options)
    if as_json:
        emit_json({"checkpoint": str(checkpoint), **info})
        return
    click.echo(f"wrote {info['path']} ({info['bytes'] / 1e6:.2f} MB): {info['summary']}; "
               f"classes {', '.join(info['class_names'])}")
