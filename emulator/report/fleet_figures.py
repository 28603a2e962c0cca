"""Figures of the fleet emulation: step time over wall time, facility power against caps, stragglers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from emulator.report.runs import (
    DOWN_COLOR,
    FAIL_COLOR,
    LOSS,
    LOST_COLOR,
    MAX_FAILURE_LABELS,
    MAX_MARKED_STEPS,
    MAX_STAGE_LINES,
    RESTART_COLOR,
    TOP_N,
    RunData,
    _new_figure,
    cfg_get,
    fmt_seconds,
    rate_unit,
    time_unit,
    wall_unit,
)


def _np(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


@dataclass
class FleetSeries:
    """A run's steps (in attempt order) and events, ready to plot over emulated wall time."""

    attempt: np.ndarray
    end_s: np.ndarray
    step_s: np.ndarray
    tokens_per_s: np.ndarray
    kept: np.ndarray
    mean_mw: np.ndarray
    peak_mw: np.ndarray
    clock: np.ndarray
    fail_t: np.ndarray
    restart_t: np.ndarray
    checkpoint_t: np.ndarray
    failures: list[dict[str, Any]]
    spans: np.ndarray  # (failure, restart) time pairs: downtime
    span_s: float
    tname: str
    tscale: float
    gap_s: float

    @classmethod
    def of(cls, r: RunData) -> FleetSeries | None:
        steps = r.table("steps")
        if steps is None:
            return None
        steps = steps.take(pa.array(np.argsort(_np(steps, "attempt"), kind="stable")))
        end_s = _np(steps, "wall_time_s").astype(float)
        step_s = _np(steps, "step_time_s").astype(float)
        events = r.table("events")
        if events is not None:
            kind = _np(events, "kind").astype(str)
            t = _np(events, "time_s").astype(float)
            fail_t, restart_t = np.sort(t[kind == "failure"]), np.sort(t[kind == "restart"])
            ck = t[kind == "checkpoint"]
            failures = sorted(events.filter(pa.array(kind == "failure")).to_pylist(), key=lambda d: d["time_s"])
        else:
            fail_t = restart_t = ck = np.zeros(0)
            failures = []
        spans = []
        for f in fail_t:
            later = restart_t[restart_t >= f]
            if later.size:
                spans.append((f, later[0]))
        span_s = max([float(end_s.max()), *(float(a.max()) for a in (fail_t, restart_t, ck) if a.size)])
        tname, tscale = wall_unit(span_s)
        return cls(
            attempt=_np(steps, "attempt"), end_s=end_s, step_s=step_s,
            tokens_per_s=_np(steps, "tokens_per_s").astype(float),
            kept=_np(steps, "kept").astype(bool), mean_mw=_np(steps, "facility_power_mw").astype(float),
            peak_mw=_np(steps, "facility_peak_mw").astype(float), clock=_np(steps, "clock_factor").astype(float),
            fail_t=fail_t, restart_t=restart_t, checkpoint_t=ck, failures=failures,
            spans=np.array(spans, dtype=float).reshape(-1, 2), span_s=span_s, tname=tname, tscale=tscale,
            gap_s=max(20 * float(np.median(step_s)), 1.0),
        )

    @property
    def mostly_down(self) -> bool:
        """The steps fill under 15% of the wall time: they are hard to see against it."""
        return float(self.step_s.sum()) < 0.15 * self.span_s

    def t(self, seconds: np.ndarray | float) -> Any:
        return np.asarray(seconds) / self.tscale

    def broken(self, y: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(wall time in the axis unit, y) where ``mask`` holds, broken (NaN) across long gaps."""
        m = np.ones(y.size, dtype=bool) if mask is None else mask
        xs, ys = self.end_s[m], y[m]
        if xs.size >= 2:
            cut = np.flatnonzero(np.diff(xs) > self.gap_s) + 1
            xs, ys = np.insert(xs, cut, np.nan), np.insert(ys.astype(float), cut, np.nan)
        return xs / self.tscale, ys

    def by_attempt(self, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(attempt, y) where ``mask`` holds, broken between runs of consecutive attempts."""
        xs, ys = self.attempt[mask].astype(float), y[mask].astype(float)
        if xs.size >= 2:
            cut = np.flatnonzero(np.diff(xs) > 1) + 1
            xs, ys = np.insert(xs, cut, np.nan), np.insert(ys, cut, np.nan)
        return xs, ys

    def mark_outages(self, ax: Axes) -> None:
        for lo, hi in self.spans:
            ax.axvspan(lo / self.tscale, hi / self.tscale, color=DOWN_COLOR, alpha=0.5, lw=0)
        for f in self.fail_t:
            ax.axvline(f / self.tscale, color=FAIL_COLOR, lw=1.2)
        for r in self.restart_t:
            ax.axvline(r / self.tscale, color=RESTART_COLOR, lw=1.2, ls="--")

    def mark_failed_attempts(self, ax: Axes) -> None:
        for d in self.failures:
            ax.axvline(float(d["attempt"]) + 0.5, color=FAIL_COLOR, lw=1.0)

    def label_failures(self, ax: Axes) -> None:
        """Name the failed component next to each failure line (staggered; only when there are few)."""
        if not 0 < len(self.failures) <= MAX_FAILURE_LABELS:
            return
        for j, d in enumerate(self.failures):
            text = f"{d['detail']} failure" + (f", GPU {d['gpu']}" if int(d["gpu"]) >= 0 else "")
            ax.annotate(text, (d["time_s"] / self.tscale, 0.97 - 0.09 * (j % 3)), xycoords=("data", "axes fraction"),
                        xytext=(3, 0), textcoords="offset points", ha="left", va="top", fontsize=8, color=FAIL_COLOR,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})

    def outage_handles(self) -> list[Any]:
        if not self.fail_t.size:
            return []
        return [Line2D([], [], color=FAIL_COLOR, lw=1.2, label="failure"),
                Line2D([], [], color=RESTART_COLOR, lw=1.2, ls="--", label="restart (from the last checkpoint)"),
                Patch(color=DOWN_COLOR, alpha=0.5, label="downtime (detect + restart)")]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def timeline_figure(r: RunData) -> Figure | None:
    """Step time and tokens/s over emulated wall time; failures, restarts and lost (redone) steps."""
    s = FleetSeries.of(r)
    if s is None:
        return None
    sname, sscale = time_unit(float(s.step_s.max()))
    rname, rscale = rate_unit(float(s.tokens_per_s.max()))
    marker = "." if s.end_s.size <= MAX_MARKED_STEPS else ""
    nominal = float(r.nominal.get("step_time_s", 0.0))
    extra = s.mostly_down
    fig = _new_figure(13, 10 if extra else 7.5)
    axes = fig.subplots(3 if extra else 2, 1, gridspec_kw={"height_ratios": [3, 3, 2.4] if extra else [1, 1]})
    ax_t, ax_r = axes[0], axes[1]
    ax_r.sharex(ax_t)
    for ax, y, yscale in ((ax_t, s.step_s, sscale), (ax_r, s.tokens_per_s, rscale)):
        s.mark_outages(ax)
        ax.plot(*s.broken(y / yscale, s.kept), color="#1f77b4", lw=0.9, marker=marker, ms=2.5)
        ax.plot(*s.broken(y / yscale, ~s.kept), color=LOST_COLOR, lw=0.9, marker=marker, ms=2.5)
        ax.grid(alpha=0.3)
    if nominal > 0:
        ax_t.axhline(nominal / sscale, color="black", ls=":", lw=1)
    if s.checkpoint_t.size:
        ax_t.plot(s.t(s.checkpoint_t), np.full(s.checkpoint_t.size, 0.0), "^", color="#555555", ms=5,
                  transform=ax_t.get_xaxis_transform(), clip_on=False)
    s.label_failures(ax_t)
    lo, hi = min(float(s.step_s.min()), nominal or np.inf), max(float(s.step_s.max()), nominal)
    pad = max(hi - lo, 0.02 * hi) * 0.12
    labelled = 0 < len(s.failures) <= MAX_FAILURE_LABELS
    ax_t.set_ylim((lo - pad) / sscale, (hi + pad * (3.5 if labelled else 1.0)) / sscale)
    ax_t.set_ylabel(f"step time ({sname})")
    ax_t.tick_params(labelbottom=False)
    ax_r.set_ylabel(f"tokens/s ({rname})")
    ax_r.set_xlabel(f"emulated wall time ({s.tname})")
    ax_r.set_ylim(0, float(s.tokens_per_s.max()) / rscale * 1.1)
    ax_r.set_xlim(0, s.span_s * 1.01 / s.tscale)
    if extra:
        ax_a = axes[2]
        s.mark_failed_attempts(ax_a)
        ax_a.plot(*s.by_attempt(s.step_s / sscale, s.kept), color="#1f77b4", lw=0.9, marker=marker, ms=2.5)
        ax_a.plot(*s.by_attempt(s.step_s / sscale, ~s.kept), color=LOST_COLOR, lw=0.9, marker=marker, ms=2.5)
        if nominal > 0:
            ax_a.axhline(nominal / sscale, color="black", ls=":", lw=1)
        ax_a.set_ylim(*ax_t.get_ylim())
        ax_a.set_xlim(float(s.attempt.min()) - 0.5, float(s.attempt.max()) + 0.5)
        ax_a.set_xlabel("step attempt (downtime left out: the steps fill "
                        f"{float(s.step_s.sum()) / s.span_s:.2%} of the wall time)")
        ax_a.set_ylabel(f"step time ({sname})")
        ax_a.set_title("The same steps by attempt", fontsize=10)
        ax_a.grid(alpha=0.3)
    handles = [Line2D([], [], color="#1f77b4", marker=marker, ms=4, label="kept step")]
    if not s.kept.all():
        handles.append(Line2D([], [], color=LOST_COLOR, marker=marker, ms=4,
                              label="lost step (redone after a failure)"))
    handles.append(Line2D([], [], color="black", ls=":", label=f"nominal step ({fmt_seconds(nominal)})"))
    if s.checkpoint_t.size:
        handles.append(Line2D([], [], color="#555555", marker="^", ls="", label="checkpoint"))
    fig.legend(handles=[*handles, *s.outage_handles()], loc="outside lower center", ncols=4, fontsize=9,
               frameon=False)
    f = r.fleet or {}
    fig.suptitle(f"(4) Fleet emulation — {r.title}: {_plural(int(f.get('steps', 0)), 'step')} in "
                 f"{fmt_seconds(s.span_s)}, {_plural(int(f.get('interruptions', 0)), 'interruption')}, "
                 f"goodput {float(f.get('goodput', 0)):.1%}", fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------- (5) power


def power_figure(r: RunData) -> Figure | None:
    """Facility power per step (mean and within-step peak) over wall time, against the site cap."""
    s = FleetSeries.of(r)
    if s is None:
        return None
    cap = float(cfg_get(r.config, "power.facility_cap_mw", 0.0) or 0.0)
    windows = [w for w in (cfg_get(r.config, "power.windows", []) or []) if isinstance(w, dict)]
    idle = float((r.power or {}).get("idle_facility_mw", 0.0))
    show_clock = bool(np.any(np.abs(s.clock - 1.0) > 1e-6))
    extra = s.mostly_down
    rows = 1 + int(show_clock) + int(extra)
    ratios = [3.0] + [1.2] * int(show_clock) + [2.0] * int(extra)
    fig = _new_figure(13, 4.2 + 2.0 * (rows - 1) + 1.0)
    axes = fig.subplots(rows, 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)[:, 0]
    ax = axes[0]
    ax_c = axes[1] if show_clock else None
    if ax_c is not None:
        ax_c.sharex(ax)
        ax.tick_params(labelbottom=False)
    wall_axes = [a for a in (ax, ax_c) if a is not None]
    for a in wall_axes:
        s.mark_outages(a)
    handles: list[Any] = []
    for j, w in enumerate(windows):
        lo, hi, wcap = float(w["start_h"]) * 3600, float(w["end_h"]) * 3600, float(w["cap_mw"])
        for a in wall_axes:
            a.axvspan(lo / s.tscale, hi / s.tscale, color="#ffd54f", alpha=0.35, lw=0)
        ax.plot([lo / s.tscale, hi / s.tscale], [wcap, wcap], color=LOSS, ls="--", lw=2.5, zorder=4)
        if j == 0:
            handles += [Patch(color="#ffd54f", alpha=0.35, label="demand-response window"),
                        Line2D([], [], color=LOSS, ls="--", lw=2.5, label="demand-response cap")]
    ax.plot(*s.broken(s.peak_mw), color="#ff7f0e", lw=2.0, zorder=2)
    ax.plot(*s.broken(s.mean_mw), color="#1f77b4", lw=1.2, zorder=2)
    handles = [Line2D([], [], color="#ff7f0e", lw=2, label="within-step peak"),
               Line2D([], [], color="#1f77b4", label="mean over the step"), *handles]
    if cap > 0:
        ax.axhline(cap, color=LOSS, ls="--", lw=1.5, zorder=3)
        handles.append(Line2D([], [], color=LOSS, ls="--", lw=1.5, label=f"facility cap ({cap:.4g} MW)"))
    if idle > 0:
        ax.axhline(idle, color="#555555", ls=":", lw=1)
        handles.append(Line2D([], [], color="#555555", ls=":", label=f"idle floor ({idle:.3g} MW)"))
        for lo, hi in s.spans:
            ax.plot([lo / s.tscale, hi / s.tscale], [idle, idle], color="#555555", lw=2.0, zorder=2)
        if s.spans.size:
            handles.append(Line2D([], [], color="#555555", lw=2, label="idle during downtime"))
    handles += s.outage_handles()
    top = max([float(s.peak_mw.max()), cap, *(float(w["cap_mw"]) for w in windows)])
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("facility power (MW)")
    ax.grid(alpha=0.3)
    ax.set_xlim(0, s.span_s * 1.01 / s.tscale)
    last_wall = ax
    if ax_c is not None:
        ax_c.plot(*s.broken(s.clock * 100), color="#6a1b9a", lw=1.4)
        ax_c.set_ylabel("GPU clock\n(% of nominal)")
        ax_c.set_ylim(min(float(s.clock.min()) * 100 - 2, 98), 101)
        ax_c.grid(alpha=0.3)
        handles.append(Line2D([], [], color="#6a1b9a", lw=1.4, label="GPU clock under the cap"))
        last_wall = ax_c
    last_wall.set_xlabel(f"emulated wall time ({s.tname})")
    if extra:
        ax_a = axes[-1]
        s.mark_failed_attempts(ax_a)
        ax_a.plot(*s.by_attempt(s.peak_mw, np.ones(s.attempt.size, dtype=bool)), color="#ff7f0e", lw=2.0)
        ax_a.plot(*s.by_attempt(s.mean_mw, np.ones(s.attempt.size, dtype=bool)), color="#1f77b4", lw=1.2)
        if cap > 0:
            ax_a.axhline(cap, color=LOSS, ls="--", lw=1.5)
        ax_a.set_ylim(*ax.get_ylim())
        ax_a.set_xlim(float(s.attempt.min()) - 0.5, float(s.attempt.max()) + 0.5)
        ax_a.set_xlabel("step attempt (downtime left out)")
        ax_a.set_ylabel("facility power (MW)")
        ax_a.set_title("The same steps by attempt", fontsize=10)
        ax_a.grid(alpha=0.3)
    p = r.power or {}
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    fig.suptitle(f"(5) Facility power — {r.title}: mean {float(p.get('mean_facility_mw', 0)):.3g} MW, "
                 f"peak {float(p.get('peak_facility_mw', 0)):.3g} MW, {float(p.get('energy_mwh', 0)):.3g} MWh",
                 fontweight="bold")
    return fig


# ------------------------------------------------------------------------------------ (6) stragglers


def stragglers_figure(r: RunData) -> Figure | None:
    """The 20 slowest GPUs and nodes (persistent speed factor) and busy time per pipeline stage."""
    gpus = r.table("gpus")
    if gpus is None:
        return None
    factor = _np(gpus, "speed_factor")
    node = _np(gpus, "node")
    stage = _np(gpus, "pp_stage")
    busy = _np(gpus, "busy_s")
    failures = _np(gpus, "failures")
    fig = _new_figure(15, 7.5)
    ax_g, ax_n, ax_b = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.25]})

    top = np.argsort(-factor, kind="stable")[:TOP_N]
    sub = gpus.take(pa.array(top)).to_pylist()
    slow = (factor[top] - 1) * 100
    colors = [FAIL_COLOR if d["failures"] > 0 else "#1f77b4" for d in sub]
    ax_g.barh(np.arange(top.size), slow, color=colors, height=0.7)
    mixed = len(r.gpu_types) > 1
    staged = int(stage.max()) > 0

    def gpu_label(d: dict[str, Any]) -> str:
        text = f"GPU {d['gpu']} · node {d['node']}"
        text += f" · {str(d['gpu_type']).upper()}" if mixed else ""
        return text + (f" · stage {d['pp_stage']}" if staged else "")

    ax_g.set_yticks(np.arange(top.size), [gpu_label(d) for d in sub], fontsize=8)
    ax_g.invert_yaxis()
    ax_g.set_xlabel("slower than nominal (%)")
    ax_g.set_title(f"Slowest {top.size} of {factor.size:,} GPUs (persistent speed factor)", fontsize=11)
    ax_g.legend(handles=[Patch(color="#1f77b4", label="no failure"),
                         Patch(color=FAIL_COLOR, label="failed in the run")],
                fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncols=2, frameon=False)

    nodes, inv = np.unique(node, return_inverse=True)
    node_mean = np.bincount(inv, weights=factor) / np.bincount(inv)
    node_max = np.full(nodes.size, -np.inf)
    np.maximum.at(node_max, inv, factor)
    node_fail = np.bincount(inv, weights=failures)
    ntop = np.argsort(-node_mean, kind="stable")[:TOP_N]
    ax_n.barh(np.arange(ntop.size), (node_mean[ntop] - 1) * 100, height=0.7,
              color=[FAIL_COLOR if node_fail[i] > 0 else "#2ca02c" for i in ntop])
    ax_n.scatter((node_max[ntop] - 1) * 100, np.arange(ntop.size), marker="|", s=120, color="black", zorder=3)
    ax_n.set_yticks(np.arange(ntop.size), [f"node {nodes[i]}" for i in ntop], fontsize=8)
    ax_n.invert_yaxis()
    ax_n.set_xlabel("slower than nominal (%)")
    ax_n.set_title(f"Slowest {ntop.size} of {nodes.size:,} nodes (mean of their GPUs)", fontsize=11)
    ax_n.legend(handles=[Patch(color="#2ca02c", label="mean of its GPUs"),
                         Patch(color=FAIL_COLOR, label="(a GPU failed)"),
                         Line2D([], [], color="black", marker="|", ls="", ms=10, label="its slowest GPU")],
                fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncols=3, frameon=False)
    for ax in (ax_g, ax_n):
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)

    stages = np.unique(stage)
    bname, bscale = time_unit(float(busy.max()))
    lo, hi = float(busy.min()), float(busy.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-9)
    per_stage = busy.size / stages.size
    edges = np.linspace(lo, hi, int(np.clip(np.sqrt(per_stage) * 2, 10, 40)) + 1)
    if stages.size <= MAX_STAGE_LINES:
        for s in stages:
            ax_b.hist(busy[stage == s] / bscale, bins=edges / bscale, histtype="step", lw=1.5,
                      label=f"stage {s}")
        ax_b.set_xlabel(f"busy time per GPU over the run ({bname})")
        ax_b.set_ylabel("GPUs")
        ax_b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncols=stages.size, frameon=False)
        ax_b.grid(alpha=0.3)
    else:
        counts = np.stack([np.histogram(busy[stage == s], bins=edges)[0] for s in stages]).astype(float)
        counts[counts == 0] = np.nan
        mesh = ax_b.pcolormesh(edges / bscale, np.arange(stages.size + 1) - 0.5, counts, cmap="viridis",
                               norm=LogNorm(vmin=1, vmax=max(float(np.nanmax(counts)), 2.0)))
        med = [np.median(busy[stage == s]) / bscale for s in stages]
        ax_b.plot(med, np.arange(stages.size), "|", color="#e41a1c", ms=12, mew=2.5, label="median")
        ax_b.set_yticks(np.arange(stages.size), [str(s) for s in stages], fontsize=8)
        ax_b.invert_yaxis()
        ax_b.set_ylabel("pipeline stage")
        ax_b.set_xlabel(f"busy time per GPU over the run ({bname})")
        ax_b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), frameon=False)
        fig.colorbar(mesh, ax=ax_b, label="GPUs per bin")
    ax_b.set_title("Busy time per pipeline stage (histogram)")
    fig.suptitle(f"(6) Slowest GPUs and nodes — {r.title}", fontweight="bold")
    return fig

