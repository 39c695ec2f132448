"""``fer2neuro inspect``"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
import onnx

from fer2neuro.cli.base import Fer2NeuroCommand, emit_json, json_option
from fer2neuro.errors import GraphError
from fer2neuro.lowering.lava_folder import NETWORK_FILE, LavaArtifact, is_lava_folder
from fer2neuro.lowering.onnx_graph import onnx_metadata, read_onnx
from fer2neuro.nirgraph.describe import describe_graph
from fer2neuro.nirgraph.file import is_hdf5, read_graph
from fer2neuro.targets import get_target, target_names
from fer2neuro.targets.base import unable_reason
from fer2neuro.targets.loihi.network import describe_netx

MANIFEST_FIELDS = ("timesteps", "dt", "encoder", "input", "input_shape", "class_names")


def graph_verdicts(graph) -> dict[str, dict]:
    """Each target: whether it runs the NIR graph, else the reason it gives.
    ``Target.check`` opens the graph and prepares its first run as simulate
    does, so "yes" means simulate gets as far as simulating and "no" gives
    the error simulate would stop with. A fault inside a target is that
    target's "no", not the end of the inspection."""
    verdicts = {}
    for name in target_names():
        try:
            get_target(name).check(graph)
            verdicts[name] = {"runs": True, "reason": None}
        except Exception as exc:        # noqa: BLE001 - each target's own verdict (unable_reason)
            verdicts[name] = {"runs": False, "reason": unable_reason(exc)}
    return verdicts


def artifact_verdicts(path: Path) -> dict[str, dict]:
    """Each target: whether it takes ``path`` as its own artifact."""
    verdicts = {}
    for name in target_names():
        target = get_target(name)
        own = f" or {target.artifact}" if target.artifact else ""
        verdicts[name] = {"runs": True, "reason": None} if target.accepts(path) else \
            {"runs": False, "reason": f"it runs a NIR graph{own}"}
    return verdicts


def netx_verdicts(path: Path) -> dict[str, dict]:
    """Each target: whether ``simulate NET.net --target NAME`` runs the netx
    file. As simulate decides it: a target runs netx files when it has
    ``run_netx``, and opens this one with its own ``open_netx`` (the file
    read and checked as the run reads it); its error is the "no"."""
    verdicts = {}
    for name in target_names():
        target = get_target(name)
        if not hasattr(target, "run_netx"):
            own = f" or {target.artifact}" if target.artifact else ""
            verdicts[name] = {"runs": False, "reason": f"it runs a NIR graph{own}, not a netx file"}
            continue
        try:
            target.open_netx(path)
            verdicts[name] = {"runs": True, "reason": None}
        except Exception as exc:        # noqa: BLE001 - each target's own verdict (unable_reason)
            verdicts[name] = {"runs": False, "reason": unable_reason(exc)}
    return verdicts


def describe_nir(path: Path) -> dict:
    graph = read_graph(path)
    return {"path": str(path), "format": "NIR graph", **describe_graph(graph), "targets": graph_verdicts(graph)}


def describe_network(path: Path) -> dict:
    """A netx file, or an exported Lava folder (whose network.net it
    describes; the folder is what the Lava-style targets take, so a
    network.net inside one counts as the folder)."""
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and not is_lava_folder(path):
        raise GraphError(f"{path}: a folder, but not an exported Lava folder (no manifest.json)")
    artifact = LavaArtifact.load(folder) if is_lava_folder(folder) else None
    network = folder / NETWORK_FILE if path.is_dir() else path
    result = {"path": str(path), "format": "netx network", "network": str(network), **describe_netx(network)}
    if artifact is not None:
        result["folder"] = str(folder)
        result["manifest"] = {key: artifact.manifest.get(key) for key in MANIFEST_FIELDS}
        # the manifest names the neuron layers in file order: the NIR nodes they come from
        names = iter(entry.get("name") for entry in artifact.manifest.get("layers", []))
        for layer in result["layers"]:
            if "neuron" in layer:
                layer["name"] = next(names, None)
    result["targets"] = artifact_verdicts(folder) if artifact is not None else netx_verdicts(path)
    return result


def _metadata_value(text: str):
    try:
        return json.loads(text)       # numbers, and the lists fer2neuro writes as JSON
    except json.JSONDecodeError:
        return text


def _values(values) -> list[dict]:
    """Inputs or outputs: name, shape (a size, or the name of a symbolic dim), dtype."""
    def dim(d):
        return d.dim_value if d.HasField("dim_value") else d.dim_param or None
    return [{"name": v.name, "shape": [dim(d) for d in v.type.tensor_type.shape.dim],
             "dtype": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()} for v in values]


def describe_onnx(path: Path) -> dict:
    proto = read_onnx(path)
    operators = Counter(node.op_type for node in proto.graph.node)
    opset = next((o.version for o in proto.opset_import if not o.domain), None)
    return {"path": str(path), "format": "ONNX model", "opset": opset,
            "metadata": {k: _metadata_value(v) for k, v in onnx_metadata(proto).items()},
            "inputs": _values(proto.graph.input), "outputs": _values(proto.graph.output),
            "operators": sum(operators.values()), "operator_types": dict(operators.most_common()),
            "targets": artifact_verdicts(path)}


def describe_file(path) -> dict:
    """What FILE holds, by its suffix (or its HDF5 signature, for a NIR graph)."""
    path = Path(path)
    if not path.exists():
        raise GraphError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".net":
        return describe_network(path)
    if path.suffix == ".onnx":
        return describe_onnx(path)
    if path.suffix == ".nir" or is_hdf5(path):
        return describe_nir(path)
    raise GraphError(f"{path}: unknown format; inspect reads a NIR graph (.nir), a netx network (.net) or "
                     f"an exported Lava folder, or an ONNX model exported by fer2neuro (.onnx)")


# ---- text ----------------------------------------------------------------

def fmt(value) -> str:
    """A summarised value (nirgraph.describe.summarise) in a few characters."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "(" + ", ".join(fmt(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return f"{fmt(value['shape'])} {spread(value)}"
    return str(value)


def spread(summary: dict) -> str:
    """An array summary's values: the one value, or min..max."""
    return fmt(summary["value"]) if "value" in summary else f"{fmt(summary['min'])}..{fmt(summary['max'])}"


def params(items) -> str:
    """name=value pairs; an array as name(shape)=values."""
    return " ".join(f"{k}{fmt(v['shape'])}={spread(v)}" if isinstance(v, dict) else f"{k}={fmt(v)}"
                    for k, v in items)


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def target_lines(verdicts: dict) -> list[str]:
    rows = [[name, "yes" if v["runs"] else f"no: {v['reason']}"] for name, v in verdicts.items()]
    return ["targets:", *table(rows)]


def render_nir(d: dict) -> list[str]:
    back = sum(e["back"] for e in d["edges"])
    cycles = f" ({back} back edge{'s' if back > 1 else ''} closing a cycle)" if back else ""
    info = d["info"]
    meta = ", ".join(f"{key} {fmt(info[key])}" for key in ("dt", "timesteps", "encoder", "preset", "qat")
                     if info[key] is not None)
    classes = f"; classes {', '.join(info['class_names'])}" if info["class_names"] else ""
    rows = [["node", "type", "input", "output", "parameters"]]
    rows += [[n["name"], n["type"], fmt(n["input_shape"]), fmt(n["output_shape"]),
              params(n["params"].items())] for n in d["nodes"]]
    edges = [f"  {e['source']} -> {e['target']}" + ("   back edge: closes a cycle" if e["back"] else "")
             for e in d["edges"]]
    return [f"{d['path']}: NIR graph, {len(d['nodes'])} nodes, {len(d['edges'])} edges{cycles}",
            f"metadata: {meta or 'none'}{classes}", *table(rows), "edges:", *edges, *target_lines(d["targets"])]


def render_network(d: dict) -> list[str]:
    head = f"{d['path']}: netx network, {len(d['layers'])} layers"
    if "folder" in d:
        m = d["manifest"]
        head += (f", exported Lava folder {d['folder']} (T {fmt(m['timesteps'])}, dt {fmt(m['dt'])}, "
                 f"encoder {m['encoder']}, input {m['input']}, classes {', '.join(m['class_names'] or [])})")
    shown = {"index", "type", "shape", "name", "neuron", "weight", "bias"}
    rows = [["#", "type", "shape", "node", "neuron", "weight", "bias", "other"]]
    for layer in d["layers"]:
        neuron = layer.get("neuron")
        rows.append([str(layer["index"]), str(layer["type"]), fmt(layer.get("shape")), layer.get("name") or "",
                     f"{neuron.get('type')} {params((k, v) for k, v in neuron.items() if k != 'type')}"
                     if neuron else "-",
                     fmt(layer.get("weight")), fmt(layer.get("bias")),
                     params((k, v) for k, v in layer.items() if k not in shown)])
    return [head, *table(rows), *target_lines(d["targets"])]


def render_onnx(d: dict) -> list[str]:
    m = d["metadata"]
    meta = ", ".join(f"{key} {fmt(m[key])}" for key in ("encoder", "timesteps", "dt", "precision", "input_shape",
                                                        "preset") if key in m)
    # symbolic dims the inputs name (batch) are shown; the exporter's own names for the rest are noise
    named = {s for v in d["inputs"] for s in v["shape"] if isinstance(s, str)}
    values = [[kind, v["name"], fmt([s if isinstance(s, int) or s in named else "?" for s in v["shape"]]),
               v["dtype"]] for kind, group in (("input", d["inputs"]), ("output", d["outputs"])) for v in group]
    ops = ", ".join(f"{op} {n}" for op, n in d["operator_types"].items())
    return [f"{d['path']}: ONNX model exported by fer2neuro, opset {d['opset']}",
            f"metadata: {meta}", f"layers: {', '.join(m.get('layers', []))}",
            f"classes: {', '.join(m.get('class_names', [])) or '-'}", *table(values),
            f"operators: {d['operators']} ({ops})", *target_lines(d["targets"])]


RENDER = {"NIR graph": render_nir, "netx network": render_network, "ONNX model": render_onnx}


@click.command(cls=Fer2NeuroCommand)
@click.argument("path", type=click.Path(), metavar="FILE")
@json_option
def inspect(path, as_json):
    """Show what FILE holds and which targets can run it: a NIR graph (.nir),
    a lava-dl netx network (.net, or an exported Lava folder), or an ONNX
    model exported by fer2neuro (.onnx).

    NIR: every node (type, input and output shape where known, parameters:
    an array as its shape and its value if uniform, else min..max), the
    edges, the metadata, and for each target "yes" or why it cannot run the
    graph (each target checks what its first run would do: the Lava-style
    targets plan, and quantise, the graph at its dt for spike inputs and,
    when its encoder is direct, for a constant input). An edge that closes a cycle is marked as a back edge: walking
    depth first from the Input nodes, then from any node not yet reached,
    in the graph's node order and each node's edges in edge order, a back
    edge is one into a node still on the walk's path.

    netx: each layer's block type, shape, neuron parameters (vThMant,
    vDecay, iDecay), weight and bias ranges; ONNX: the metadata fer2neuro
    writes, the inputs, outputs and operators. Both: which targets take the
    file (a netx file inside an exported Lava folder counts as the folder; a
    netx file on its own: "yes" where simulate runs it, else simulate's
    error). A netx file or manifest with a value no target may read (a link
    out of the file, a number out of Lava's range) is an error.

    \b
    Examples:
      fer2neuro inspect runs/demo/model.nir
      fer2neuro inspect runs/demo/lava                 # or runs/demo/lava/network.net
      fer2neuro inspect runs/demo/model.onnx --json | jq .metadata
    """
    description = describe_file(path)
    if as_json:
        emit_json(description)
    else:
        click.echo("\n".join(RENDER[description["format"]](description)))
