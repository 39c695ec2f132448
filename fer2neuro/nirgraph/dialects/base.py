"""A NIR *dialect*: how one tool's files mean what they say.

NIR fixes the equations (equations.py), but every tool that writes NIR runs
its own: snnTorch resets by subtraction, Sinabs emits several spikes per step
and compares with ``>=``, Spyx decides a spike before it adds the step's
input, Norse writes ``tau`` as τ·dt. A file carries none of that. A Dialect
holds one writer's conventions, so that its files can be run as their author
ran them (``--semantics PEER``):

* ``rewrite``: the field conventions that NIR's own nodes can express,
  turned into NIR's (Norse's τ·dt, Rockpool's ``w_in``, Spyx's ``r`` and
  channels-last flatten). The rewritten graph is plain NIR: every target,
  Lava's included, runs it.
* ``neurons``: step functions that replace ``equations.NEURONS`` for the
  node types whose dynamics NIR cannot express (subtract reset, several
  spikes per step, ``>=``, spike before input, exponential decay). They have
  the registry's signature ``step(state, current, p, dt) -> (output, state)``
  and are array-generic (numpy for the ``nir`` target, torch for the ONNX
  lowering), so both run them; Lava's LIF cannot, and the Lava-style targets
  refuse such a graph with ``lava_refusal``.
* ``back_edge_t0``: what a recurrent back edge carries: "zero" (NIR,
  Loihi: the previous step's output, nothing at t = 0), "bias" (the same,
  but at t = 0 its source applied to a zero frame: snnTorch's recurrent
  Linear adds its bias from the first step), or "same step" (Spyx: a neuron
  that decides its spike before its input feeds back *this* step's spikes
  through the recurrent weight; its Neuron has ``emit``).
* ``conventions``: each convention in words, by the cause names the interop
  diagnosis tests (``CAUSES``).
* ``detect``: whether a graph shows this writer's hand.

A graph is put in a dialect by ``dialects.apply``, which rewrites it and
records the dialect's name in its metadata (``DIALECT_KEY``); the targets
look the name up there (``dialects.neuron_of``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import nir
import numpy as np

from fer2neuro.nirgraph import equations as eq

DIALECT_KEY = "fer2neuro_dialect"     # graph.metadata key naming the dialect a graph runs in

# The causes interop names for a divergence, each one testable (interop/causes.py).
CAUSES = {
    "dt": "the time step the peer assumes",
    "reset": "reset to v_reset (NIR) or by subtracting the threshold",
    "reset_delay": "the reset applied in the step that spikes (NIR) or one step later",
    "spikes_per_step": "at most one spike per step (NIR) or several",
    "threshold": "spike when v > threshold (NIR) or v >= threshold",
    "order": "the step's input added before the spike is decided (NIR) or after",
    "decay": "forward-Euler decay (NIR) or another discretisation",
    "flatten": "Flatten over (C, H, W) (NIR, PyTorch) or channels last (H, W, C)",
    "recurrent_t0": "a recurrent edge carries nothing at t = 0 (NIR) or its bias",
    "fields": "a field written with another meaning (tau as tau*dt, r as beta, w_in dropped)",
    "unsupported": "a node the peer has no mapping for",
}


def _identity(graph: nir.NIRGraph) -> nir.NIRGraph:
    return graph


def _never(graph: nir.NIRGraph) -> bool:
    return False


@dataclass(frozen=True)
class Dialect:
    name: str                                   # "snntorch"; also the --semantics value
    writer: str                                 # the tool and version it was measured on: "snnTorch 1.0.0"
    default_dt: float | None = None             # the dt the writer's files assume when their metadata has none
    neurons: Mapping[type, eq.Neuron] = field(default_factory=dict)
    back_edge_t0: str = "zero"                  # "zero", "bias" or "same step"
    # node types whose step here computes NIR's equations (after the rewrite)
    # in the writer's order of float operations: Lava may run them (to its own rounding)
    rounding_only: frozenset = frozenset()
    conventions: Mapping[str, str] = field(default_factory=dict)   # cause name (CAUSES) -> the writer's
    rewrite: Callable[[nir.NIRGraph], nir.NIRGraph] = _identity
    detect: Callable[[nir.NIRGraph], bool] = _never

    def lava_refusal(self, flat) -> str | None:
        """Why Lava's LIF cannot run ``flat`` (a FlatGraph) in this dialect,
        in one line, or None when it can: the graph has no node whose
        dynamics the dialect changes, and, if it has a cycle, the dialect's
        back edges are NIR's. The rewrite has already been applied."""
        changed = sorted({type(n).__name__ for n in flat.nodes.values()
                          if type(n) in self.neurons and type(n) not in self.rounding_only})
        cyclic = self.back_edge_t0 != "zero" and _has_cycle(flat)
        if not changed and not cyclic:
            return None
        what = "; ".join(f"{k}: {v}" for k, v in self.conventions.items()
                         if k in ("reset", "reset_delay", "spikes_per_step", "threshold", "order", "decay",
                                  "recurrent_t0"))
        nodes = f"{', '.join(changed)} " if changed else ""
        edges = f"recurrent edges that carry {self.back_edge_t0!r}" if cyclic else ""
        return (f"the {self.name} semantics ({self.writer}) give {nodes}{'and ' if nodes and edges else ''}{edges} "
                f"dynamics Lava's LIF does not have" + (f" ({what})" if what else "")
                + "; run it on the nir or onnx target")


def _has_cycle(flat) -> bool:
    from fer2neuro.nirgraph.describe import forward_order

    return bool(forward_order(flat)[1])


# --- what the dialects' rewrites share -----------------------------------------

def graph_dt(graph: nir.NIRGraph, default: float) -> float:
    """The positive dt a graph's metadata gives, else ``default`` (the
    writer's, which its files do not say)."""
    meta = dict(getattr(graph, "metadata", None) or {})
    value = meta.get("dt")
    if isinstance(value, bytes):
        value = value.decode()
    try:
        dt = float(np.asarray(value).reshape(-1)[0]) if value is not None else None
    except (TypeError, ValueError, IndexError):
        dt = None
    return dt if dt and dt > 0 else default


def rewrite_nodes(graph: nir.NIRGraph, rewrite_node: Callable, default_dt: float) -> nir.NIRGraph:
    """Every node of ``graph``, those of its subgraphs included, replaced by
    ``rewrite_node(node, dt)`` at the graph's dt (``graph_dt``)."""
    dt = graph_dt(graph, default_dt)

    def walk(g: nir.NIRGraph) -> nir.NIRGraph:
        g.nodes = {name: walk(node) if isinstance(node, nir.NIRGraph) else rewrite_node(node, dt)
                   for name, node in g.nodes.items()}
        return g

    return walk(graph)


def port_shape(types) -> tuple[int, ...] | None:
    """The one port's shape in an input_type/output_type, or None where it
    is undefined or empty (a writer that leaves shapes out: Sinabs,
    Rockpool)."""
    if not types:
        return None
    values = list(types.values())
    if len(values) != 1 or values[0] is None:
        return None
    a = np.asarray(values[0]).reshape(-1)
    if a.size == 0:
        return None
    return tuple(int(s) for s in a)


NIR = Dialect(name="nir", writer="NIR 1.0 (forward Euler, SPEC §2)")
