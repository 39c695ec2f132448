"""What the numbers in a NIR graph must be before anything computes with
them: the one check of a graph, whether it was read from a ``.nir`` file
(``file.read_graph``, ``dialects.read``) or handed to a target in Python
(``targets.base.Target._check_source``).

Per node, by its NIR type:

* the type is one NIR defines (a file may name any string; NIR's reader
  then fails with a bare AssertionError);
* shapes (an Input's or Output's, a convolution's ``input_shape``, a
  Flatten's input type) are integers >= 1, at most ``MAX_ELEMENTS`` values
  per frame;
* strides, dilations, kernel sizes and groups are integers >= 1, paddings
  integers >= 0 or "same"/"valid", each at most ``MAX_SPATIAL``
  (``MAX_GROUPS`` for groups): a stride of 0 divides by zero in NIR's own
  shape inference;
* every parameter array (weights, biases, thresholds, time constants, r,
  v_leak, v_reset, w_in, scales, delays) holds real numbers, all finite;
  time constants (tau, tau_mem, tau_syn) are > 0 (forward Euler divides by
  them); a delay is >= 0.

Nothing here judges a legal value's meaning: a threshold of 0 or below, an
r of 0, a tau below dt are all NIR, and peers write some of them. Two
entry points: ``graph_problem`` walks a ``nir.NIRGraph``; ``file_problem``
walks the raw HDF5 tree for a file NIR's reader could not build (an
unknown node type, a stride of 0), so that the user learns which node and
field, not NIR's exception. Both apply ``node_problem``, the one set of
rules.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import nir
import numpy as np

from fer2neuro.errors import GraphError
from fer2neuro.shown import shown

# The node types NIR's reader builds (nir.ir's registry: a name outside it
# fails an assert there). Identity is NIR's but has no reader; it is allowed
# in graphs built in Python.
NIR_TYPES = ("Affine", "AvgPool2d", "Conv1d", "Conv2d", "CubaLI", "CubaLIF", "Delay", "Flatten", "I", "IF",
             "Identity", "Input", "LI", "LIF", "Linear", "NIRGraph", "Output", "Scale", "SumPool2d", "Threshold")
MAX_ELEMENTS = 1 << 31        # values in one frame of one node: beyond it, a typo or a hostile file
MAX_SPATIAL = 4096            # a stride, dilation, padding or kernel side larger than any image here
MAX_GROUPS = 1 << 16          # as many groups as channels (architecture.MAX_WIDTH)
COUNTS = {"stride": 1, "dilation": 1, "kernel_size": 1, "padding": 0, "groups": 1}   # field -> least value
TIME_CONSTANTS = ("tau", "tau_mem", "tau_syn")
# Fields that hold no parameter array: names, shapes, structure, metadata.
NOT_PARAMETERS = ("type", "input_type", "output_type", "input_shape", "shape", "metadata", "edges", "nodes",
                  "start_dim", "end_dim", *COUNTS)
SNNTORCH_IF_HINT = (" (snnTorch's export_to_nir writes an IF neuron, beta = 1, as a LIF with tau = r = inf, which "
                    "has no Euler step; an IF is nir.IF)")


def _text(value) -> str | None:
    """A str, bytes or 0-d string array as str; None for anything else."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "SUO":
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _integers(value) -> np.ndarray | None:
    """The integer values of an int, a sequence or an array of integers (or
    of floats that are whole numbers), flattened; None if not all are."""
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged or exotic: not integers
        return None
    if a.dtype.kind in "iu":
        return a.reshape(-1).astype(np.int64) if a.size == 0 or np.abs(a).max() < 2**62 else None
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all() and np.abs(a).max(initial=0) < 2**62:
        return a.reshape(-1).astype(np.int64)
    return None


def _shape_problem(label: str, shape) -> str | None:
    if shape is None:
        return None
    dims = _integers(shape)
    if dims is None or np.asarray(shape).ndim > 1:
        return f"{label} must be a list of integers, got {shown(shape)}"
    if (dims < 1).any():
        return f"{label} {shown(dims)} has a dimension < 1 (every dimension is a count >= 1)"
    if math.prod(int(d) for d in dims) > MAX_ELEMENTS:
        return f"{label} {shown(dims)} holds more than {MAX_ELEMENTS} values per frame"
    return None


# The port types a node declares (the others NIR infers from its fields,
# which are checked themselves).
DECLARED_TYPES = {"Input": ("input_type",), "Output": ("output_type",), "Flatten": ("input_type",)}


def _shapes(type_name: str, fields: Mapping) -> list[tuple[str, object]]:
    """(label, shape) of every shape a node declares: the ports of an
    Input's, Output's or Flatten's type, a raw file's ``shape``, a
    convolution's ``input_shape``."""
    found = []
    for key in DECLARED_TYPES.get(type_name, ()):
        ports = fields.get(key)
        if isinstance(ports, Mapping):
            found += [(f"{key}[{port!r}]" if len(ports) > 1 else key.replace("_type", " shape"), shape)
                      for port, shape in ports.items()]
    for key in ("shape", "input_shape"):
        if key in fields:
            found.append((key.replace("_", " "), fields[key]))
    return found


def _count_problem(name: str, value) -> str | None:
    least = COUNTS[name]
    if name == "padding" and _text(value) is not None:
        return None if _text(value) in ("same", "valid") else \
            f"padding must be integers >= 0, 'same' or 'valid', got {shown(_text(value))}"
    values = _integers(value)
    if values is None or values.size == 0:
        return f"{name} must be {'an integer' if name == 'groups' else 'integers'} >= {least}, got {shown(value)}"
    high = MAX_GROUPS if name == "groups" else MAX_SPATIAL
    if (values < least).any() or (values > high).any():
        return f"{name} must be from {least} to {high}, got {shown(values)}"
    return None


NOT_NUMBERS = {"S": "bytes", "U": "text", "O": "Python objects", "V": "structured records", "M": "dates",
               "m": "time spans"}


def _parameter_problem(type_name: str, name: str, value) -> str | None:
    if value is None or isinstance(value, Mapping):
        return None
    if _text(value) is not None:
        return f"parameter {name} holds text ({shown(_text(value))}), not numbers"
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged nested lists
        return f"parameter {name} is not a rectangular array of numbers"
    if a.dtype.kind not in "biufc":
        return f"parameter {name} holds {NOT_NUMBERS.get(a.dtype.kind, a.dtype)}, not numbers"
    if a.dtype.kind == "c":
        return f"parameter {name} holds complex numbers; NIR's parameters are real"
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        nan = int(np.isnan(a).sum())
        if type_name == "LIF" and name in ("tau", "r") and not nan:
            return f"parameter {name} is not finite{SNNTORCH_IF_HINT}"
        return (f"parameter {name} is not finite ({nan} NaN, {a.size - nan - int(np.isfinite(a).sum())} "
                f"infinite of {a.size})")
    if name in TIME_CONSTANTS and not (a > 0).all():
        return f"{name} must be > 0 (forward Euler divides by it), got {shown(a.min())}"
    if name == "delay" and not (a >= 0).all():
        return f"delay must be >= 0, got {shown(a.min())}"
    return None


def node_problem(type_name: str, fields: Mapping) -> str | None:
    """What is wrong with one node, given its NIR type name and its fields
    (an object's ``vars``, or a raw file's datasets), or None. The message
    leaves out the node's name; the callers add it."""
    if type_name not in NIR_TYPES:
        return f"unknown node type {shown(type_name)} (NIR has {', '.join(t for t in NIR_TYPES if t != 'Identity')})"
    for name in COUNTS:
        if name in fields:
            problem = _count_problem(name, fields[name])
            if problem:
                return problem
    for label, shape in _shapes(type_name, fields):
        problem = _shape_problem(label, shape)
        if problem:
            return problem
    for name in ("start_dim", "end_dim"):
        if name in fields and (_integers(fields[name]) is None or _integers(fields[name]).size != 1):
            return f"{name} must be an integer, got {shown(fields[name])}"
    weight = fields.get("weight")
    if type_name in ("Conv1d", "Conv2d") and weight is not None:
        dims = np.shape(weight)
        want = 3 if type_name == "Conv1d" else 4
        if len(dims) != want or 0 in dims:
            return f"weight has shape {dims}; a {type_name} takes (C_out, C_in / groups, {'k' if want == 3 else 'kH, kW'})"
    for name, value in fields.items():
        if name not in NOT_PARAMETERS:
            problem = _parameter_problem(type_name, name, value)
            if problem:
                return problem
    return None


def graph_problem(graph: nir.NIRGraph, prefix: str = "") -> str | None:
    """The first problem of any node of ``graph`` (subgraphs included), as
    "node 'name' (Type): what", or None."""
    for name, node in graph.nodes.items():
        where = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            found = graph_problem(node, prefix=f"{where}.")
            if found:
                return found
            continue
        kind = type(node).__name__
        if not isinstance(node, nir.NIRNode):
            return f"node {where!r} is a {kind}, not a NIR node"
        problem = node_problem(kind, vars(node))
        if problem:
            return f"node {where!r} ({kind}): {problem}"
    return None


def file_problem(tree: Mapping, prefix: str = "") -> str | None:
    """``graph_problem`` for the raw tree of a ``.nir`` file (its "node"
    group as nested dicts of values, ``nir.serialization.hdf2dict``): for a
    file NIR's reader could not build a graph from."""
    nodes = tree.get("nodes")
    if not isinstance(nodes, Mapping):
        return None
    for name, fields in nodes.items():
        where = f"{prefix}{name}"
        if not isinstance(fields, Mapping):
            return f"node {where!r} is not an HDF5 group of fields"
        kind = _text(fields.get("type"))
        if kind is None:
            return f"node {where!r} has no type"
        if kind == "NIRGraph":
            found = file_problem(fields, prefix=f"{where}.")
        else:
            found = node_problem(kind, fields)
            found = found and f"node {where!r} ({kind}): {found}"
        if found:
            return found
    return None


def check_graph(graph: nir.NIRGraph, error: type[Exception] = GraphError, where: str = "") -> None:
    """Raise ``error`` naming the node and field if ``graph_problem`` finds
    one: such a graph computes nothing meaningful on any target."""
    found = graph_problem(graph)
    if found:
        raise error(f"{where}{found}")
