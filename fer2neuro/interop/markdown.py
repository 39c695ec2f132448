"""The interop report as a terminal table and as Markdown."""
from __future__ import annotations

from fer2neuro.interop.run import InteropReport, LayerResult, PeerExport


def _cell(result: LayerResult | None) -> str:
    if result is None or result.equal is None:
        return "-"
    return "exact" if result.exact else f"{100 * result.equal:.1f} %"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def table(report: InteropReport) -> str:
    """A plain-text summary: one row per peer (and per fer2neuro target),
    one column per spiking layer, the share of equal neuron-steps."""
    head = (f"{report.source}: {report.inputs_words}, T={report.timesteps}, dt={report.dt:g}"
            + (" (assumed: the graph has no dt; give --dt)" if report.dt_assumed else "")
            + f"; fer2neuro reads it with the {report.semantics} semantics; reference nir (float64)")
    width = max([8] + [len(layer) for layer in report.layers])
    cols = "".join(f"{layer:>{width + 1}}" for layer in report.layers)
    lines = [head, "", f"{'':<10} {'loads':<6}{'runs':<6}{cols}"]
    for name, value in report.targets.items():
        if isinstance(value, str):
            lines.append(f"{name:<10} {'':<12}unable: {value}")
            continue
        by = {r.layer: r for r in value}
        lines.append(f"{name:<10} {'yes':<6}{'yes':<6}" + "".join(f"{_cell(by.get(x)):>{width + 1}}"
                                                                for x in report.layers))
    for p in report.peers:
        by = {r.layer: r for r in p.layers}
        cells = "".join(f"{_cell(by.get(x)):>{width + 1}}" for x in report.layers)
        lines.append(f"{p.peer:<10} {_yes(p.result.loaded):<6}{_yes(p.result.ran):<6}{cells}")
    lines.append("")
    for p in report.peers:
        version = f" {p.result.version}" if p.result.version else ""
        lines.append(f"{p.peer}{version}: {p.verdict()}")
    return "\n".join(lines)


def markdown(report: InteropReport) -> str:
    out = [f"# Interop: `{report.source}`", "",
           f"- inputs: {report.inputs_words}, T={report.timesteps}, dt={report.dt:g}"
           + (" (assumed: the graph has no dt)" if report.dt_assumed else ""),
           f"- fer2neuro reads the graph with the `{report.semantics}` semantics; the reference is its "
           f"`nir` target (float64)",
           "- cells: the share of neuron-steps whose spike count equals the reference's", ""]
    out.append("| | loads | runs | " + " | ".join(f"`{x}`" for x in report.layers) + " |")
    out.append("|---|---|---|" + "---|" * len(report.layers))
    for name, value in report.targets.items():
        if isinstance(value, str):
            out.append(f"| fer2neuro `{name}` | no | no | " + " | ".join("-" for _ in report.layers)
                       + " |")
            continue
        by = {r.layer: r for r in value}
        out.append(f"| fer2neuro `{name}` | yes | yes | " + " | ".join(_cell(by.get(x)) for x in report.layers)
                   + " |")
    for p in report.peers:
        by = {r.layer: r for r in p.layers}
        tool = f"{p.peer} {p.result.version}".strip()
        out.append(f"| {tool} | {_yes(p.result.loaded)} | {_yes(p.result.ran)} | "
                   + " | ".join(_cell(by.get(x)) for x in report.layers) + " |")
    out += ["", "## Peers", ""]
    for p in report.peers:
        out.append(f"### {p.peer} {p.result.version}".rstrip())
        out += ["", f"{p.verdict()}.", ""]
        for r in p.layers:
            if r.first:
                f = r.first
                out.append(f"- first divergence in `{r.layer}`: sample {f['sample']}, neuron {tuple(f['neuron'])}, "
                           f"step {f['step']}: reference {f['reference']:g}, {p.peer} {f['other']:g}")
                break
        if p.tests:
            out += ["", "| cause tested | change | neuron-steps equal |", "|---|---|---|"]
            out += [f"| {t.cause} | {t.change} | {100 * t.equal:.1f} % |" for t in p.tests]
        notes = p.result.report.get("notes") or []
        if notes:
            out += [""] + [f"- note: {n}" for n in notes]
        out.append("")
    unable = {k: v for k, v in report.targets.items() if isinstance(v, str)}
    if unable:
        out += ["## fer2neuro targets that cannot run it", ""]
        out += [f"- `{k}`: {v}" for k, v in unable.items()]
    return "\n".join(out) + "\n"


def _worst(layers: list[LayerResult]) -> str:
    values = [r.equal for r in layers if r.equal is not None]
    if not values:
        return "-"
    worst = min(values)
    return "exact" if worst == 1.0 else f"{100 * worst:.1f} %"


def _export_row(e: PeerExport) -> list[str]:
    if not e.result.ran:
        return [e.peer, e.result.version, e.kind, "no", "-", "-", e.result.error or ""]
    as_peer = _worst(e.as_peer) if e.as_peer else f"unable: {e.as_peer_error}"
    as_nir = _worst(e.as_nir) if e.as_nir else f"unable: {e.read_error}"
    notes = "; ".join(e.result.report.get("notes") or [])
    return [e.peer, e.result.version, e.kind, "yes", as_nir, as_peer, notes]


EXPORT_HEAD = ["peer", "version", "network", "exported", "read as nir", "read with --semantics PEER", "notes"]


def exports_table(results: list[PeerExport]) -> str:
    """Peers' own exports read back by fer2neuro: the worst layer's share of
    neuron-steps equal to the peer's own simulation."""
    rows = [EXPORT_HEAD] + [_export_row(e) for e in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(EXPORT_HEAD) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def exports_markdown(results: list[PeerExport]) -> str:
    out = ["# Peers' NIR exports read by fer2neuro", "",
           "Each peer builds its own network, exports it with its own NIR exporter and default settings, and "
           "simulates it itself; fer2neuro's nir target reads the file with NIR's semantics and with the "
           "peer's (`--semantics PEER`). Cells: the worst spiking layer's share of neuron-steps equal to the "
           "peer's own spikes.", "",
           "| " + " | ".join(EXPORT_HEAD) + " |", "|" + "---|" * len(EXPORT_HEAD)]
    out += ["| " + " | ".join(_export_row(e)) + " |" for e in results]
    return "\n".join(out) + "\n"
