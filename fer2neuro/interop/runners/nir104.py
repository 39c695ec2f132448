"""What the Sinabs and Rockpool runners share: both pin nir 1.0.4 and
nirtorch 1.0 (runners/protocol.py). A runner imports this sibling file as
it imports ``protocol``; it imports nothing of fer2neuro, and nir, h5py only
inside the functions that read a file.
"""
from __future__ import annotations

import os


def foreign_fields(path) -> str:
    """The node fields in ``path`` that this nir release's classes do not
    take (a newer nir writes per-node ``metadata`` and ``v_reset``), as
    "field (Type name, ...)"; empty where none is found."""
    import dataclasses

    import h5py
    import nir

    found: dict = {}

    def walk(group, prefix):
        for name, node in group.items():
            if not isinstance(node, h5py.Group) or "type" not in node:
                continue
            kind = node["type"][()]
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            cls = getattr(nir, kind, None)
            if cls is None:
                found.setdefault("node type " + kind, []).append(prefix + name)
                continue
            taken = {f.name for f in dataclasses.fields(cls) if f.init} | {"type"}
            if kind in ("Input", "Output"):
                taken |= {"shape"}
            for key in node.keys():
                if key not in taken:
                    found.setdefault(key, []).append(f"{kind} {prefix}{name}")
            if kind == "NIRGraph" and "nodes" in node:
                walk(node["nodes"], prefix + name + ".")

    try:
        with h5py.File(path, "r") as f:
            walk(f["node"]["nodes"], "")
    except Exception:  # noqa: BLE001 - only an explanation
        return ""
    return "; ".join(f"{key} ({', '.join(where[:4])}{', ...' if len(where) > 4 else ''})"
                     for key, where in found.items())


def read(path, peer: str):
    """nir.read of the peer's nir release, with the reason it cannot
    (``peer``: "Sinabs", the tool that pins that release)."""
    import nir

    try:
        return nir.read(path)
    except Exception as exc:  # noqa: BLE001 - re-raised with the nir version named
        foreign = foreign_fields(path)
        why = f"; fields nir {nir.version} does not have: {foreign}" if foreign else ""
        raise type(exc)(f"nir {nir.version} (the release {peer} pins) cannot read {os.path.basename(path)}: "
                        f"{type(exc).__name__}: {exc}{why}") from exc


def modules_by_node(model) -> dict:
    """NIR node name -> the module nirtorch 1.0 built for it (None where the
    peer's mapping returned none) of an imported GraphExecutor."""
    return {name: module for module, name in model.graph.module_names.items()}


def unmapped(graph, by_name: dict) -> list[str]:
    """"name (Type)" of each node other than Input/Output that has no module:
    nirtorch 1.0 leaves such a node out of the data flow without a word."""
    return [f"{n} ({type(node).__name__})" for n, node in graph.nodes.items()
            if type(node).__name__ not in ("Input", "Output") and by_name.get(n) is None]


def back_edges(graph) -> list:
    """The edges among the nodes on a cycle: those Kahn's order cannot
    reach, less those with no successor left among them."""
    indegree = {n: 0 for n in graph.nodes}
    for _, dst in graph.edges:
        if dst in indegree:
            indegree[dst] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    left = set(graph.nodes)
    while ready:
        name = ready.pop()
        left.discard(name)
        for src, dst in graph.edges:
            if src == name and dst in indegree:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    while True:
        sinks = {n for n in left if not any(a == n and b in left for a, b in graph.edges)}
        if not sinks:
            break
        left -= sinks
    return [(a, b) for a, b in graph.edges if a in left and b in left]


def cycle_note(graph, peer: str) -> str | None:
    """What a cycle in ``graph`` becomes when ``peer`` runs all steps in one
    call of nirtorch 1.0's executor; None without a cycle."""
    cycle = back_edges(graph)
    if not cycle:
        return None
    return ("the graph has a cycle (" + ", ".join(f"{a} -> {b}" for a, b in cycle) + f"): {peer} "
            "runs all steps in one call, so nirtorch's edges out of a node not yet run in that "
            "call carry nothing (nirtorch/from_nir.py:104-112): the recurrence is ignored")
