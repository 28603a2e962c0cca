"""Figures of the analytical step: step-time breakdown, memory against HBM, GPU-type comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from emulator.report.runs import (
    BASE_COLOR,
    CHALLENGER_COLOR,
    EVEN,
    GB,
    LOSS,
    MEM_COLORS,
    MEM_PARTS,
    PART_COLORS,
    PART_LABELS,
    STEP_PARTS,
    WIN,
    RunData,
    _new_figure,
    flatten,
    fmt_rate,
    fmt_seconds,
    time_unit,
)


def step_parts(nominal_like: dict[str, Any]) -> dict[str, float]:
    """Step time by component, compute split into compute-bound and memory-bound ops when known."""
    bd = {k: float(v) for k, v in (nominal_like.get("breakdown_s") or {}).items()}
    split = nominal_like.get("compute_split_s") or {}
    out: dict[str, float] = {}
    if split and "compute" in bd:
        out["compute_bound"] = float(split.get("compute_bound", 0.0))
        out["memory_bound"] = float(split.get("memory_bound", 0.0))
    elif "compute" in bd:
        out["compute"] = bd["compute"]
    for k, v in bd.items():
        if k != "compute":
            out[k] = v
    return out


def breakdown_figure(runs: list[RunData]) -> Figure:
    """Nominal step time of every run, stacked by component: in seconds (left) and as a share (right)."""
    parts = [step_parts(r.nominal) for r in runs]
    keys = [k for k in ("compute", *STEP_PARTS) if any(p.get(k, 0.0) > 0 for p in parts)]
    steps = [float(r.nominal.get("step_time_s", sum(p.values()))) for r, p in zip(runs, parts, strict=True)]
    unit, scale = time_unit(max(steps))
    fig = _new_figure(13, 1.9 + 0.55 * len(runs))
    ax_abs, ax_rel = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(runs))
    left_abs = np.zeros(len(runs))
    left_rel = np.zeros(len(runs))
    for k in keys:
        vals = np.array([p.get(k, 0.0) for p in parts])
        share = np.array([v / s * 100 if s > 0 else 0.0 for v, s in zip(vals, steps, strict=True)])
        ax_abs.barh(y, vals / scale, left=left_abs, color=PART_COLORS[k], label=PART_LABELS[k], height=0.6)
        ax_rel.barh(y, share, left=left_rel, color=PART_COLORS[k], height=0.6)
        for i, s in enumerate(share):
            if s >= 6:
                ax_rel.text(left_rel[i] + s / 2, i, f"{s:.0f}%", ha="center", va="center", fontsize=8,
                            color="white" if k not in {"memory_bound", "pp_comm", "cp_comm", "other"} else "black")
        left_abs += vals / scale
        left_rel += share
    for i, r in enumerate(runs):
        ax_abs.text(left_abs[i], i, f"  {fmt_seconds(steps[i])} · MFU {float(r.nominal.get('mfu', 0)):.1%}",
                    va="center", fontsize=9)
    labels = [r.title for r in runs]
    ax_abs.set_yticks(y, labels)
    ax_abs.invert_yaxis()
    ax_abs.set_xlim(0, max(left_abs) * 1.35)
    ax_abs.set_xlabel(f"nominal step time ({unit})")
    ax_abs.set_title("Step time by component")
    ax_rel.set_yticks(y, [""] * len(runs))
    ax_rel.invert_yaxis()
    ax_rel.set_xlim(0, 100)
    ax_rel.set_xlabel("share of the step (%)")
    ax_rel.set_title("Share of the step")
    for ax in (ax_abs, ax_rel):
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=min(len(keys), 6), fontsize=9, frameon=False)
    fig.suptitle("(1) Nominal step-time breakdown (analytical step, pace-setting GPU type)", fontweight="bold")
    return fig


# ----------------------------------------------------------------------------------------- (2) memory


def memory_rows(runs: list[RunData]) -> list[tuple[str, dict[str, float], float, bool]]:
    """(label, bytes by category, capacity bytes, fits) per run and GPU type."""
    rows = []
    for r in runs:
        mem = r.memory
        by_type = mem.get("by_gpu_type") or {r.gpu_types[0]: mem}
        for name, m in by_type.items():
            label = r.title if len(by_type) == 1 else f"{r.title} — {name.upper()}"
            per = {k: float(v) for k, v in (m.get("per_gpu_bytes") or {}).items()}
            rows.append((label, per, float(m.get("capacity_bytes", 0.0)), bool(m.get("fits", True))))
    return rows


def memory_figure(runs: list[RunData]) -> Figure:
    """Memory per GPU by category for every run and GPU type; each bar's HBM capacity is a black mark."""
    rows = memory_rows(runs)
    fig = _new_figure(13, 1.9 + 0.55 * len(rows))
    ax = fig.subplots()
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for k in MEM_PARTS:
        vals = np.array([per.get(k, 0.0) for _, per, _, _ in rows]) / GB
        if vals.sum() <= 0:
            continue
        ax.barh(y, vals, left=left, color=MEM_COLORS[k], label=k, height=0.6)
        left += vals
    caps = np.array([cap for _, _, cap, _ in rows]) / GB
    for i, (_, per, _cap, fits) in enumerate(rows):
        total = per.get("total", left[i] * GB) / GB
        ax.plot([caps[i], caps[i]], [i - 0.42, i + 0.42], color="black", lw=2.5,
                label="HBM capacity" if i == 0 else None)
        verdict = "fits" if fits else "does NOT fit"
        share = total / caps[i] * 100 if caps[i] > 0 else float("nan")
        ax.text(max(caps[i], left[i]), i, f"  {total:.1f} of {caps[i]:.0f} GB ({share:.0f}%) {verdict}",
                va="center", fontsize=9, color="black" if fits else LOSS)
    ax.set_yticks(y, [label for label, _, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(caps.max()), float(left.max())) * 1.4)
    ax.set_xlabel("memory per GPU (GB, 1 GB = 10^9 bytes)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=6, fontsize=9, frameon=False)
    fig.suptitle("(2) Memory per GPU by GPU type vs HBM capacity", fontweight="bold")
    return fig


# ------------------------------------------------------------------------------- (3) GPU-type comparison


@dataclass
class Side:
    """One GPU type in a comparison: its nominal step, memory and (for a whole run) fleet results."""

    name: str
    nominal: dict[str, Any]
    memory: dict[str, Any]
    run: RunData | None = None  # set when the side is a whole run (then fleet and power apply)

    @property
    def step_time_s(self) -> float:
        return float(self.nominal.get("step_time_s", 0.0))


@dataclass
class Comparison:
    base: Side
    challenger: Side
    context: str  # what the two sides share, for the title
    note: str = ""  # config differences other than the GPU type


def _single_type_side(r: RunData) -> Side:
    name = r.gpu_types[0]
    nom = (r.nominal.get("by_gpu_type") or {}).get(name) or r.nominal
    nom = {**nom, "mfu": r.nominal.get("mfu"), "tokens_per_s": r.nominal.get("tokens_per_s")}
    mem = (r.memory.get("by_gpu_type") or {}).get(name) or r.memory
    return Side(name=name, nominal=nom, memory=mem, run=r)


def _ordered(a: Side, b: Side) -> tuple[Side, Side]:
    """(baseline, challenger): the slower nominal step is the baseline (H100 before H200)."""
    if (a.step_time_s, b.name) < (b.step_time_s, a.name):
        return b, a
    return a, b


def _config_without_gpu(r: RunData) -> dict[str, Any]:
    flat = flatten(r.config)
    out = {}
    for k, v in flat.items():
        if k.startswith("gpu.") or k == "cluster.gpu" or k.endswith("source") or k in {"run.progress"}:
            continue
        if k.startswith("cluster.pools.") and k.endswith(".gpu"):
            continue
        out[k] = v
    return out


def gpu_comparisons(runs: list[RunData], limit: int = 6) -> list[Comparison]:
    """GPU-type comparisons: runs that differ only by GPU type, and every mixed cluster's types."""
    out: list[Comparison] = []
    single = [r for r in runs if len(r.gpu_types) == 1]
    stripped = {id(r): _config_without_gpu(r) for r in single}
    paired: set[int] = set()
    for i, a in enumerate(single):
        for b in single[i + 1:]:
            if a.gpu_types[0] == b.gpu_types[0] or id(a) in paired or id(b) in paired:
                continue
            if stripped[id(a)] == stripped[id(b)]:
                base, chal = _ordered(_single_type_side(a), _single_type_side(b))
                out.append(Comparison(base, chal, f"{a.model_name} · {a.num_gpus:,} GPUs"))
                paired.update({id(a), id(b)})
    if not out and len(runs) == 2 and len(single) == 2 and single[0].gpu_types != single[1].gpu_types:
        a, b = single
        fa, fb = stripped[id(a)], stripped[id(b)]
        diff = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        base, chal = _ordered(_single_type_side(a), _single_type_side(b))
        note = "the runs also differ in " + ", ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")
        out.append(Comparison(base, chal, f"{a.model_name} vs {b.model_name}" if a.model_name != b.model_name
                              else a.model_name, note=note))
    for r in runs:
        by_type = r.nominal.get("by_gpu_type") or {}
        mem_by_type = r.memory.get("by_gpu_type") or {}
        names = list(by_type)
        for i, na in enumerate(names):
            for nb in names[i + 1:]:
                sa = Side(na, by_type[na], mem_by_type.get(na, {}))
                sb = Side(nb, by_type[nb], mem_by_type.get(nb, {}))
                base, chal = _ordered(sa, sb)
                out.append(Comparison(base, chal, f"mixed cluster {r.title}"))
    return out[:limit]


def _advantage(base: float, chal: float, lower_is_better: bool) -> float:
    """Challenger's advantage in % (positive: the challenger is better)."""
    if base == 0:
        return 0.0
    return (base - chal) / base * 100 if lower_is_better else (chal - base) / base * 100


def _pct(adv: float) -> str:
    """A signed percentage; changes under 0.05% read as 0%."""
    return "0%" if abs(adv) < 0.05 else f"{adv:+.1f}%".replace("-", "−")


def _color(adv: float) -> str:
    return EVEN if abs(adv) < 0.05 else (WIN if adv > 0 else LOSS)


def headline_metrics(c: Comparison) -> list[tuple[str, float, float, bool, str]]:
    """(metric, baseline, challenger, lower is better, unit) for the headline panel."""
    b, h = c.base, c.challenger
    rows: list[tuple[str, float, float, bool, str]] = [
        ("nominal step time", b.step_time_s, h.step_time_s, True, "s")]
    split_b, split_h = b.nominal.get("compute_split_s") or {}, h.nominal.get("compute_split_s") or {}
    if split_b.get("memory_bound", 0) > 0 and split_h.get("memory_bound", 0) > 0:
        rows.append(("memory-bound op time", split_b["memory_bound"], split_h["memory_bound"], True, "s"))
    if b.run is not None and h.run is not None:
        rows.append(("nominal tokens/s", float(b.nominal.get("tokens_per_s") or 0),
                     float(h.nominal.get("tokens_per_s") or 0), False, "tok"))
        fb, fh = b.run.fleet, h.run.fleet
        if fb is not None and fh is not None:
            rows.append(("fleet mean step time", fb["mean_step_time_s"], fh["mean_step_time_s"], True, "s"))
            rows.append(("fleet tokens/s (with failures)", fb["tokens_per_s"], fh["tokens_per_s"], False, "tok"))
        pb, ph = b.run.power, h.run.power
        if pb is not None and ph is not None and pb.get("energy_per_token_j") and ph.get("energy_per_token_j"):
            rows.append(("energy per token", pb["energy_per_token_j"], ph["energy_per_token_j"], True, "J"))
    return rows


def _fmt_metric(v: float, unit: str) -> str:
    if unit == "s":
        return fmt_seconds(v)
    if unit == "tok":
        return fmt_rate(v)
    return f"{v:.3g} {unit}"


def comparison_figure(c: Comparison) -> Figure:
    """Where the challenger (H200) wins against the baseline (H100) and by how much."""
    b, h = c.base, c.challenger
    nb, nh = b.name.upper(), h.name.upper()
    fig = _new_figure(15, 10)
    (ax_parts, ax_saved), (ax_mem, ax_head) = fig.subplots(2, 2)

    # (a) step time by component, grouped
    pb, ph = step_parts(b.nominal), step_parts(h.nominal)
    keys = [k for k in ("compute", *STEP_PARTS) if pb.get(k, 0) > 0 or ph.get(k, 0) > 0]
    unit, scale = time_unit(max(max(pb.values(), default=0), max(ph.values(), default=0)))
    x = np.arange(len(keys))
    vb = np.array([pb.get(k, 0.0) for k in keys]) / scale
    vh = np.array([ph.get(k, 0.0) for k in keys]) / scale
    ax_parts.bar(x - 0.2, vb, 0.4, color=BASE_COLOR, label=nb)
    ax_parts.bar(x + 0.2, vh, 0.4, color=CHALLENGER_COLOR, label=nh)
    top = float(max(vb.max(), vh.max()))
    for i, k in enumerate(keys):
        adv = _advantage(pb.get(k, 0.0), ph.get(k, 0.0), lower_is_better=True)
        ax_parts.text(i, max(vb[i], vh[i]) + top * 0.02, _pct(-adv), ha="center", va="bottom",
                      fontsize=9, color=_color(adv), fontweight="bold")
    ax_parts.set_xticks(x, [PART_LABELS[k] for k in keys], rotation=25, ha="right")
    ax_parts.set_ylim(0, top * 1.15)
    ax_parts.set_ylabel(f"time per step ({unit})")
    ax_parts.set_title(f"Step time by component (label: {nh} change vs {nb})")
    ax_parts.legend(fontsize=9)
    ax_parts.grid(axis="y", alpha=0.3)
    ax_parts.set_axisbelow(True)

    # (b) time saved per component
    saved = (vb - vh) * (1e3 if unit == "s" else 1.0)
    colors = [_color(_advantage(pb.get(k, 0.0), ph.get(k, 0.0), True)) for k in keys]
    ax_saved.barh(x, saved, color=colors, height=0.6)
    ax_saved.axvline(0, color="black", lw=0.8)
    span = float(np.abs(saved).max()) or 1.0
    for i, s in enumerate(saved):
        text = "no change" if abs(s) < span * 1e-4 else f"{s:+.3g} ms"
        ax_saved.text(s + (span * 0.02 if s >= 0 else -span * 0.02), i, text, va="center",
                      ha="left" if s >= 0 else "right", fontsize=9)
    ax_saved.set_yticks(x, [PART_LABELS[k] for k in keys])
    ax_saved.invert_yaxis()
    ax_saved.set_xlim(min(0.0, float(saved.min())) - span * 0.35, max(0.0, float(saved.max())) + span * 0.35)
    total_saved = (b.step_time_s - h.step_time_s) * 1e3
    ax_saved.set_xlabel(f"time saved per step by {nh} (ms; > 0: {nh} faster)")
    ax_saved.set_title(f"Where {nh} wins: {total_saved:+.3g} ms per step in all")
    ax_saved.grid(axis="x", alpha=0.3)
    ax_saved.set_axisbelow(True)

    # (c) memory vs capacity
    sides = [b, h]
    left = np.zeros(2)
    for k in MEM_PARTS:
        vals = np.array([float((s.memory.get("per_gpu_bytes") or {}).get(k, 0.0)) for s in sides]) / GB
        if vals.sum() <= 0:
            continue
        ax_mem.barh([0, 1], vals, left=left, color=MEM_COLORS[k], label=k, height=0.55)
        left += vals
    caps = np.array([float(s.memory.get("capacity_bytes", 0.0)) for s in sides]) / GB
    for i in range(len(sides)):
        ax_mem.plot([caps[i], caps[i]], [i - 0.4, i + 0.4], color="black", lw=2.5,
                    label="HBM capacity" if i == 0 else None)
        head = caps[i] - left[i]
        ax_mem.text(max(caps[i], left[i]), i, f"  {left[i]:.1f} of {caps[i]:.0f} GB\n  headroom {head:.1f} GB",
                    va="center", fontsize=9, color="black" if head >= 0 else LOSS)
    ax_mem.set_yticks([0, 1], [nb, nh])
    ax_mem.invert_yaxis()
    ax_mem.set_xlim(0, max(float(caps.max()), float(left.max())) * 1.35)
    ax_mem.set_xlabel("memory per GPU (GB)")
    extra = caps[1] - caps[0]
    ax_mem.set_title(f"Memory per GPU vs HBM: {nh} has {extra:+.0f} GB ({_advantage(caps[0], caps[1], False):+.0f}%)")
    ax_mem.legend(fontsize=8, loc="upper right", ncols=2)
    ax_mem.grid(axis="x", alpha=0.3)
    ax_mem.set_axisbelow(True)

    # (d) headline advantages
    metrics = headline_metrics(c)
    advs = np.array([_advantage(vb_, vh_, lower) for _, vb_, vh_, lower, _ in metrics])
    yy = np.arange(len(metrics))
    ax_head.barh(yy, advs, color=[_color(a) for a in advs], height=0.55)
    ax_head.axvline(0, color="black", lw=0.8)
    span = float(np.abs(advs).max()) or 1.0
    for i, (_name, mb, mh, _lower, u) in enumerate(metrics):
        a = advs[i]
        ax_head.text(a + (span * 0.03 if a >= 0 else -span * 0.03), i,
                     f"{_pct(a)}  ({_fmt_metric(mb, u)} → {_fmt_metric(mh, u)})", va="center",
                     ha="left" if a >= 0 else "right", fontsize=9)
    ax_head.set_yticks(yy, [m[0] for m in metrics])
    ax_head.set_ylim(max(len(metrics), 5) - 0.5, -0.5)
    neg, pos = float(advs.min()) < 0, float(advs.max()) > 0
    ax_head.set_xlim(min(0.0, float(advs.min())) - span * (1.6 if neg else 0.1),
                     max(0.0, float(advs.max())) + span * (1.6 if pos or not neg else 0.1))
    ax_head.set_xlabel(f"{nh} advantage over {nb} (%; > 0: {nh} better)")
    ax_head.set_title("Headline: how much better")
    ax_head.grid(axis="x", alpha=0.3)
    ax_head.set_axisbelow(True)

    speed = _advantage(b.step_time_s, h.step_time_s, True)
    verb = "faster" if speed >= 0 else "slower"
    title = (f"(3) {nh} vs {nb} — {c.context}: nominal step {abs(speed):.1f}% {verb} "
             f"({fmt_seconds(b.step_time_s)} → {fmt_seconds(h.step_time_s)})")
    fig.suptitle(title + (f"\n{c.note}" if c.note else ""), fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------- (4) fleet timeline


