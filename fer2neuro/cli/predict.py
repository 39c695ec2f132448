"""``fer2neuro predict``: the expression of each face in photographs, on any target."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from fer2neuro.atomic import also_reads, atomic_path, check_target
from fer2neuro.cli.base import Fer2NeuroCommand, OutputDir, emit_json, json_option
from fer2neuro.cli.options import SEED, SEED_RANGE, FiniteFloatRange
from fer2neuro.cli.simulate import open_source
from fer2neuro.errors import DataError, Fer2NeuroError
from fer2neuro.memory import check_fits, checked_timesteps, graph_values, steps_bytes
from fer2neuro.nirgraph.readout import classify, spike_counts
from fer2neuro.nirgraph.describe import input_shape
from fer2neuro.nirgraph.flat import flatten_graph
from fer2neuro.photos import (DEFAULT_MARGIN, Box, annotated, encode_png, face_input, find_faces, framed, image_files,
                              read_grey, whole)
from fer2neuro.targets import get_target, target_names


def model_input(program) -> tuple[tuple[int, ...], int]:
    """(one sample's input shape, T) of an opened model."""
    info = program.info
    if program.graph is not None:
        flat = flatten_graph(program.graph)
        shape = input_shape(flat, flat.inputs[0]) if len(flat.inputs) == 1 else None
    else:                                                     # an .onnx file as it is
        shape = tuple(program.file.input_shape)
    if shape is None or len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise DataError(f"this model takes inputs of shape {shape}; predict needs one grey square image "
                        "(1, S, S)")
    timesteps = info.timesteps or getattr(getattr(program, "file", None), "timesteps", None) or 4
    return shape, checked_timesteps(timesteps, "the model's metadata")


def encode(faces: np.ndarray, timesteps: int, encoder: str | None, seed: int) -> np.ndarray:
    """(B, 1, S, S) in [0, 1] -> (B, T, 1, S, S): held over T (direct), or
    Poisson spike trains of those rates."""
    if encoder == "poisson":
        rng = np.random.default_rng(seed)
        return (rng.random((len(faces), timesteps, *faces.shape[1:])) < faces[:, None]).astype(np.float64)
    return np.repeat(faces[:, None], timesteps, axis=1)


@click.command(cls=Fer2NeuroCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path(), metavar="IMAGE|DIR...")
@click.option("--model", "model_path", required=True, type=click.Path(),
              metavar="CKPT|model.nir|LAVA_DIR|model.onnx", help="The trained or exported network.")
@click.option("--target", type=click.Choice(target_names()), default="nir", show_default=True,
              help="Where the network runs (an .onnx file runs on onnx).")
@click.option("--no-detect", is_flag=True, help="Take the whole image (its centred square) as the face.")
@click.option("--margin", type=FiniteFloatRange(0.0, 1.0), default=DEFAULT_MARGIN, show_default=True,
              help="Added on every side of the detector's box, as a fraction of its side (FER2013's framing; "
                   "0.16 for the built-in synthetic faces).")
@click.option("--annotate", type=OutputDir(), default=None, metavar="OUT_DIR",
              help="Write a copy of each image with the faces' boxes and classes drawn (PNG).")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help=f"Poisson-encoded models: the spikes' seed ({SEED_RANGE}).")
@json_option
def predict(images, model_path, target, no_detect, margin, annotate, seed, as_json):
    """Classify the expression of every face in IMAGE files (any format
    OpenCV reads, colour or grey, any size) or in the images of DIR
    folders. Each face is found with OpenCV's face detector, cropped square
    with a margin, made grey, resized to the model's input and scaled to
    [0, 1] as in training, then run on the target.

    Per face: its box (x, y, width, height in image pixels), the class, and
    each class's output spike count and rate. The class is the most
    output spikes; ties (a face where no output neuron fired) go to the
    highest output membrane (docs/verification.md, "How a class is read").

    An image without a face, or one that cannot be read, is one line on
    stderr and the rest go on; the exit status is non-zero only when no
    image gave a face.

    \b
    Examples:
      fer2neuro predict photo.jpg --model demo-run/best.pt
      fer2neuro predict photos/ --model demo-run/qat/best.pt --target loihi --annotate annotated/
      fer2neuro predict face48.png --model demo-run/model.onnx --target onnx --no-detect --json
    """
    program = open_source(model_path, get_target(target))
    (channels, size, _), timesteps = model_input(program)
    info = program.info
    dt = info.dt if info.dt is not None else 1.0
    names = list(info.class_names)
    files, problems = image_files(images)
    also_reads((f"IMAGE {path}", path) for path in files)      # --annotate never replaces one (atomic.py)
    crops, owners = [], []                 # the network's inputs, and (image index, box) for each
    per_image: list[dict] = []
    for path in files:
        try:
            grey = read_grey(path)
        except DataError as exc:
            problems.append(str(exc))
            continue
        boxes = [whole(grey.shape)] if no_detect else [framed(b, margin, grey.shape) for b in find_faces(grey)]
        if not boxes:
            problems.append(f"{path}: no face found ({grey.shape[1]}x{grey.shape[0]} pixels; --no-detect takes "
                            "the whole image)")
            continue
        per_image.append({"image": str(path), "size": [int(grey.shape[1]), int(grey.shape[0])], "faces": []})
        for box in boxes:
            crops.append(face_input(grey, box, size))
            owners.append((len(per_image) - 1, box))
    for line in problems:
        click.echo(line, err=True)
    if not crops:
        raise click.exceptions.Exit(_fail("no face in any image" if files else "no image to read"))

    # every face's input and the network's values, float64, over T (fer2neuro/memory.py)
    values = channels * size * size + (graph_values(program.graph) if program.graph is not None else 0)
    check_fits(steps_bytes(timesteps=timesteps, values=values, batch=len(crops), itemsize=8),
               f"classifying {len(crops)} faces over T={timesteps}", "the number of images per call")
    recording = program.run(encode(np.stack(crops), timesteps, info.encoder, seed), dt=dt)
    classes, rule = classify(recording.output, program.readout, recording.outputs, dt)
    counts = spike_counts(recording.output)
    if not names or len(names) != counts.shape[1]:
        names = [f"class {i}" for i in range(counts.shape[1])]
    for (image, box), cls, row in zip(owners, classes, counts):
        per_image[image]["faces"].append({
            "box": box.to_list(), "class": names[int(cls)], "silent": bool(row.sum() == 0),
            "spike_counts": {n: int(c) for n, c in zip(names, row)},
            "rates": {n: float(c) / timesteps for n, c in zip(names, row)}})

    if annotate is not None:
        _write_annotated(Path(annotate), per_image)
    if as_json:
        emit_json({"model": str(model_path), "target": target, "timesteps": timesteps, "rule": rule,
                   "images": per_image, "problems": problems})
        return
    for entry in per_image:
        for face in entry["faces"]:
            x, y, w, h = face["box"]
            spikes = ", ".join(f"{n} {c}" for n, c in face["spike_counts"].items())
            quiet = " (no output spike: by the output membrane)" if face["silent"] else ""
            click.echo(f"{entry['image']}: face at x={x} y={y} {w}x{h}: {face['class']}{quiet}  "
                       f"[spikes over T={timesteps}: {spikes}]")
    if annotate is not None:
        click.echo(f"wrote {len(per_image)} annotated image(s) to {annotate}/")


def _fail(message: str) -> int:
    click.echo(f"Error: {message}", err=True)
    return 1


def _write_annotated(folder: Path, per_image: list[dict]) -> None:
    taken: dict[str, None] = {}         # the names, in the images' order
    for entry in per_image:
        path = Path(entry["image"])
        name = f"{path.stem}.png"
        k = 1
        while name in taken:
            k += 1
            name = f"{path.stem}-{k}.png"
        taken[name] = None
    for name in taken:                  # all checked before any is written: an image read is never replaced
        check_target(folder / name, f"--annotate {folder / name}", "choose another --annotate folder")
    for entry, name in zip(per_image, taken):
        path = Path(entry["image"])
        faces = [(Box(*face["box"][:3]), face["class"]) for face in entry["faces"]]
        try:
            data = encode_png(annotated(path, faces))
        except Fer2NeuroError as exc:
            click.echo(f"{path}: not annotated ({exc})", err=True)
            continue
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
        entry["annotated"] = str(folder / name)
