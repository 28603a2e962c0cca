"""The HTML report: a summary table per run and the figures of :mod:`emulator.report.plots`.

``index.html`` is self-contained (every figure is embedded as a base64 PNG data URI); the same PNGs
are also written next to it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from emulator.report import plots
from emulator.report.plots import GB, RunData, fmt_rate, fmt_seconds


@dataclass
class Rendered:
    """One figure written to disk: its file name, caption and PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def layout_text(r: RunData) -> str:
    p = r.config.get("parallel") or {}
    if not p:
        return "?"
    tp, pp, cp = int(p.get("tp", 1)), int(p.get("pp", 1)), int(p.get("cp", 1))
    dp = int(p.get("dp", -1))
    if dp == -1 and r.num_gpus and tp * pp * cp:
        dp = r.num_gpus // (tp * pp * cp)
    main = f"TP{tp} PP{pp} DP{dp} CP{cp} EP{p.get('ep', 1)}"
    extra = f"vpp {p.get('vpp', 1)}, micro-batch {p.get('micro_batch', 1)}, ZeRO-{p.get('zero', 0)}, " \
            f"recompute {p.get('recompute', '?')}"
    train = r.config.get("train") or {}
    if train:
        extra += f"; seq {train.get('seq_len', '?')} × batch {train.get('global_batch', '?')} " \
                 f"{train.get('precision', '')}"
    return f"{e(main)}<br><small>{e(extra)}</small>"


def memory_text(r: RunData) -> str:
    mem = r.memory
    by_type = mem.get("by_gpu_type") or {r.gpu_types[0]: mem}
    lines = []
    for name, m in by_type.items():
        total = float((m.get("per_gpu_bytes") or {}).get("total", 0.0)) / GB
        cap = float(m.get("capacity_bytes", 0.0)) / GB
        ok = bool(m.get("fits", True))
        verdict = '<span class="ok">fits</span>' if ok else '<span class="bad">does NOT fit</span>'
        lines.append(f"{e(name.upper())}: {total:.1f} / {cap:.0f} GB {verdict}")
    return "<br>".join(lines)


def fleet_text(r: RunData) -> str:
    f = r.fleet
    if f is None:
        return '<span class="dim">nominal only (run.steps=0)</span>'
    return (f"{int(f['steps']):,} steps ({int(f.get('attempts', f['steps'])):,} attempts)<br>"
            f"mean step {e(fmt_seconds(float(f['mean_step_time_s'])))} "
            f"(p99 {e(fmt_seconds(float(f['p99_step_time_s'])))})<br>"
            f"{e(fmt_rate(float(f['tokens_per_s'])))}<br>"
            f"goodput {float(f['goodput']):.1%}, {int(f['interruptions'])} interruptions")


def power_text(r: RunData) -> str:
    p = r.power
    cap = float(plots.cfg_get(r.config, "power.facility_cap_mw", 0.0) or 0.0)
    windows = plots.cfg_get(r.config, "power.windows", []) or []
    limits = []
    if cap > 0:
        limits.append(f"cap {cap:.4g} MW")
    limits += [f"{float(w['cap_mw']):.4g} MW {float(w['start_h']):g}–{float(w['end_h']):g} h" for w in windows]
    limit = e("; ".join(limits)) if limits else "no cap"
    if p is None:
        return f'<span class="dim">—</span><br><small>{limit}</small>'
    return (f"mean {float(p['mean_facility_mw']):.4g} MW, peak {float(p['peak_facility_mw']):.4g} MW<br>"
            f"{float(p['energy_mwh']):.4g} MWh<br><small>{limit}</small>")


def summary_table(runs: list[RunData]) -> str:
    head = ["#", "run", "model", "GPUs", "layout", "nominal step", "nominal tokens/s", "MFU", "memory per GPU",
            "fleet", "power"]
    rows = []
    for r in runs:
        nom = r.nominal
        cells = [
            str(r.index + 1),
            f"<b>{e(r.title)}</b><br><small><code>{e(r.path.resolve())}</code></small>",
            e(r.model_name),
            e(r.gpu_desc) + f"<br><small>{e(plots.cfg_get(r.config, 'cluster.name', ''))}</small>",
            layout_text(r),
            e(fmt_seconds(float(nom.get("step_time_s", 0.0)))),
            e(fmt_rate(float(nom.get("tokens_per_s", 0.0)))),
            f"{float(nom.get('mfu', 0.0)):.1%}",
            memory_text(r),
            fleet_text(r),
            power_text(r),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table class=\"summary\"><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def render(fig: Figure | None, name: str, title: str, caption: str, out: list[Rendered]) -> None:
    if fig is None:
        return
    out.append(Rendered(name=name, title=title, caption=caption, png=plots.png_bytes(fig)))
    fig.clear()


def figure_html(f: Rendered) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="{e(f.name)}"><img src="data:image/png;base64,{data}" alt="{e(f.title)}">'
            f'<figcaption><b>{e(f.title)}.</b> {e(f.caption)} <a href="{e(f.name)}">{e(f.name)}</a>'
            "</figcaption></figure>")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1700px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.summary-wrap { overflow-x: auto; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
table.summary th { background: #f3f3f3; }
table.summary tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; max-width: 1200px; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; } .dim { color: #888; }
code { font-size: 11px; }
"""

CAPTIONS = {
    "breakdown": "Nominal (analytical) step time of each run, stacked by component: compute split into "
                 "compute-bound and memory-bound ops, exposed (not overlapped) communication per parallel "
                 "dimension, pipeline bubble, optimizer and other; left in time, right as a share of the step.",
    "memory": "Memory per GPU by category for each run and GPU type (mixed clusters: one bar per type); "
              "the black mark is that GPU type's HBM capacity.",
    "compare": "Top left: step time by component, with the change of the faster type against the baseline "
               "(negative: less time). Top right: milliseconds per step saved per component. Bottom left: "
               "memory per GPU against each type's HBM capacity. Bottom right: the headline advantage in % "
               "(positive: better), with the two values.",
    "timeline": "Emulated step time and tokens/s of every attempted step against emulated wall time. Grey: "
                "steps lost to a failure (redone after restarting from the last checkpoint). Red lines: "
                "failures (labelled by component and GPU), green dashed lines: restarts, shaded: downtime. "
                "Triangles: checkpoints.",
    "power": "Facility power (GPUs, hosts and network, times PUE) of each step: mean over the step and the "
             "within-step peak, against the site cap and demand-response windows; the lower panel (when the "
             "cap throttles) shows the GPU clock the cap allows.",
    "stragglers": "Left: the 20 GPUs with the largest persistent speed factor (1 = nominal, larger = slower; "
                  "red: the GPU failed during the run). Middle: the 20 nodes whose GPUs are slowest on "
                  "average (mark: the node's slowest GPU). Right: busy time per GPU over the run, as a "
                  "histogram per pipeline stage.",
}


def build_figures(runs: list[RunData], progress: Callable[[str], None] | None = None) -> tuple[
        list[Rendered], list[Rendered], dict[int, list[Rendered]]]:
    """(nominal figures, comparison figures, fleet figures per run index)."""
    say = progress or (lambda _msg: None)
    nominal: list[Rendered] = []
    say("step-time breakdown")
    render(plots.breakdown_figure(runs), "breakdown.png", "Step-time breakdown", CAPTIONS["breakdown"], nominal)
    say("memory")
    render(plots.memory_figure(runs), "memory.png", "Memory per GPU vs HBM capacity", CAPTIONS["memory"], nominal)
    compare: list[Rendered] = []
    for j, c in enumerate(plots.gpu_comparisons(runs)):
        say(f"{c.challenger.name} vs {c.base.name}")
        suffix = "" if j == 0 else f"_{j + 1}"
        render(plots.comparison_figure(c), f"compare_{c.base.name}_vs_{c.challenger.name}{suffix}.png",
               f"{c.challenger.name.upper()} vs {c.base.name.upper()} ({c.context})", CAPTIONS["compare"], compare)
    fleet: dict[int, list[Rendered]] = {}
    for r in runs:
        if r.fleet is None:
            continue
        say(f"fleet plots of {r.title}")
        out: list[Rendered] = []
        prefix = f"run{r.index + 1}_"
        render(plots.timeline_figure(r), prefix + "timeline.png", "Step time and tokens/s over wall time",
               CAPTIONS["timeline"], out)
        render(plots.power_figure(r), prefix + "power.png", "Facility power over wall time", CAPTIONS["power"], out)
        render(plots.stragglers_figure(r), prefix + "stragglers.png", "Slowest GPUs and nodes",
               CAPTIONS["stragglers"], out)
        fleet[r.index] = out
    return nominal, compare, fleet


def write_report(runs: list[RunData], out_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Render every figure, write the PNGs and ``index.html`` into ``out_dir``; returns the HTML path."""
    nominal, compare, fleet = build_figures(runs, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in [*nominal, *compare, *(f for fs in fleet.values() for f in fs)]:
        (out_dir / f.name).write_bytes(f.png)
    versions = sorted({str(r.summary.get("version", "?")) for r in runs})
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Emulator report: {e(', '.join(r.title for r in runs[:3]))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Training-throughput emulator report</h1>",
        f"<p>{len(runs)} run{'s' if len(runs) != 1 else ''}, emulator version {e(', '.join(versions))}.</p>",
        "<h2>Summary</h2>", f'<div class="summary-wrap">{summary_table(runs)}</div>',
        "<h2>Nominal step and memory</h2>", *(figure_html(f) for f in nominal),
    ]
    if compare:
        parts += ["<h2>GPU type comparison</h2>", *(figure_html(f) for f in compare)]
    for r in runs:
        parts.append(f"<h2>Run {r.index + 1}: {e(r.title)}</h2>")
        if fleet.get(r.index):
            parts += [figure_html(f) for f in fleet[r.index]]
        elif r.fleet is None:
            parts.append('<p class="dim">Nominal only (run.steps=0): no fleet emulation, so no timeline, power '
                         "or per-GPU plots.</p>")
        else:
            parts.append('<p class="dim">No Arrow tables (steps.arrow, events.arrow, gpus.arrow) were found in '
                         "this run directory, so there are no fleet plots.</p>")
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
