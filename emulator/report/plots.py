"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display).

Every function takes loaded runs (:class:`RunData`) and returns a :class:`~matplotlib.figure.Figure`
(or ``None`` when the figure does not apply: a nominal-only run has no fleet tables). :func:`png_bytes`
renders a figure to PNG.

Figures:

1. :func:`breakdown_figure`: nominal step time per run, stacked by component (seconds and share).
2. :func:`memory_figure`: memory per GPU by category for every run and GPU type, against HBM capacity.
3. :func:`comparison_figure`: one GPU type against another (H100 vs H200), from two runs that differ
   only by GPU type (:func:`gpu_pairs`) or from a mixed cluster's ``by_gpu_type``.
4. :func:`timeline_figure`: emulated step time and tokens/s over wall time, failures and restarts.
5. :func:`power_figure`: facility power over wall time against the site cap and demand-response windows.
6. :func:`stragglers_figure`: the slowest GPUs and nodes and the busy time per pipeline stage.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from emulator.io.arrow import read_run

GB = 1e9
DPI = 110
COMM_KEYS = ("tp_comm", "pp_comm", "dp_comm", "cp_comm", "ep_comm")
STEP_PARTS = ("compute_bound", "memory_bound", *COMM_KEYS, "bubble", "optimizer", "other")
PART_LABELS = {
    "compute": "compute", "compute_bound": "compute-bound ops", "memory_bound": "memory-bound ops",
    "tp_comm": "TP comm", "pp_comm": "PP comm", "dp_comm": "DP comm", "cp_comm": "CP comm", "ep_comm": "EP comm",
    "bubble": "pipeline bubble", "optimizer": "optimizer", "other": "other",
}
PART_COLORS = {
    "compute": "#1f77b4", "compute_bound": "#1f77b4", "memory_bound": "#9ecae1", "tp_comm": "#ff7f0e",
    "pp_comm": "#fdae6b", "dp_comm": "#2ca02c", "cp_comm": "#98df8a", "ep_comm": "#9467bd", "bubble": "#d62728",
    "optimizer": "#8c564b", "other": "#7f7f7f",
}
MEM_PARTS = ("weights", "gradients", "optimizer", "activations", "other")
MEM_COLORS = {"weights": "#1f77b4", "gradients": "#ff7f0e", "optimizer": "#2ca02c", "activations": "#d62728",
              "other": "#bdbdbd"}
BASE_COLOR, CHALLENGER_COLOR = "#7f7f7f", "#1f77b4"
WIN, LOSS, EVEN = "#1a7f37", "#c62828", "#555555"
FAIL_COLOR, RESTART_COLOR, DOWN_COLOR, LOST_COLOR = "#c62828", "#1a7f37", "#f4c7c3", "#b0b0b0"
TOP_N = 20
MAX_STAGE_LINES = 4
MAX_FAILURE_LABELS = 10
MAX_MARKED_STEPS = 3000


# ----------------------------------------------------------------------------------------------- data


@dataclass
class RunData:
    """One run directory: its summary.json and (lazily) its Arrow tables."""

    path: Path
    summary: dict[str, Any]
    label: str = ""
    index: int = 0
    _tables: dict[str, pa.Table] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path) -> RunData:
        """Read ``path/summary.json``; ValueError names what is wrong with it."""
        try:
            summary = json.loads((path / "summary.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path / 'summary.json'}: cannot read it ({exc})") from exc
        if not isinstance(summary, dict) or not isinstance(summary.get("nominal"), dict) \
                or not isinstance(summary.get("memory"), dict):
            raise ValueError(f"{path / 'summary.json'}: not an emulate summary (no nominal/memory sections)")
        return cls(path=path, summary=summary)

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.summary.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def nominal(self) -> dict[str, Any]:
        return dict(self.summary["nominal"])

    @property
    def memory(self) -> dict[str, Any]:
        return dict(self.summary["memory"])

    @property
    def fleet(self) -> dict[str, Any] | None:
        f = self.summary.get("fleet")
        return f if isinstance(f, dict) and f.get("steps", 0) > 0 else None

    @property
    def power(self) -> dict[str, Any] | None:
        p = self.summary.get("power")
        return p if isinstance(p, dict) and self.fleet is not None else None

    @property
    def tables(self) -> dict[str, pa.Table]:
        if self._tables is None:
            self._tables = read_run(self.path) if self.fleet is not None else {}
        return self._tables

    def table(self, name: str) -> pa.Table | None:
        t = self.tables.get(name)
        return t if t is not None and t.num_rows > 0 else None

    @property
    def model_name(self) -> str:
        return str(cfg_get(self.config, "model.name", "?"))

    @property
    def gpu_types(self) -> list[str]:
        by_type = self.nominal.get("by_gpu_type") or {}
        return list(by_type) or [str(cfg_get(self.config, "gpu.name", "gpu"))]

    def gpu_counts(self) -> list[tuple[str, int]]:
        """(type, count) of every pool, or the single GPU type of the cluster."""
        cl = self.config.get("cluster") or {}
        pools = cl.get("pools") or []
        if pools:
            return [(str(p.get("gpu", "?")), int(p.get("num_gpus", 0))) for p in pools]
        return [(str(cfg_get(self.config, "gpu.name", self.gpu_types[0])), int(cl.get("num_gpus", 0)))]

    @property
    def gpu_desc(self) -> str:
        return " + ".join(f"{n:,} {t.upper()}" for t, n in self.gpu_counts())

    @property
    def num_gpus(self) -> int:
        return sum(n for _, n in self.gpu_counts())

    @property
    def title(self) -> str:
        """The run's label for figure titles."""
        return self.label or f"{self.model_name} · {self.gpu_desc}"


def cfg_get(d: dict[str, Any], dotted: str, default: Any = None) -> Any:
    cur: Any = d
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config (lists indexed: ``cluster.pools.0.gpu``)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d:
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = d
    return out


def _label_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


LABEL_PRIORITY = ("run.steps", "model.", "cluster.", "parallel.", "train.", "power.", "reliability.")
MAX_LABEL = 80


def _overrides(r: RunData) -> list[str] | None:
    """The command-line overrides Hydra recorded for the run (``.hydra/overrides.yaml``), if any."""
    path = r.path / ".hydra" / "overrides.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in data] if isinstance(data, list) else None


def _key_rank(key: str) -> tuple[int, int]:
    group = next((i for i, p in enumerate(LABEL_PRIORITY) if key.startswith(p)), len(LABEL_PRIORITY))
    return group, len(key)


def _differences(runs: list[RunData]) -> list[list[str]]:
    """Per run, the ``key=value`` settings that not every run shares (overrides first, else the config)."""
    overrides = [_overrides(r) for r in runs]
    if all(o is not None for o in overrides):
        sets = [set(o or []) for o in overrides]
        common = set.intersection(*sets)
        return [[x for x in (o or []) if x not in common] for o in overrides]
    flats = [{k: v for k, v in flatten(r.config).items() if not k.endswith("source") and not k.startswith("gpu.")}
             for r in runs]
    keys = sorted(set().union(*flats), key=_key_rank)
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    return [[f"{k}={_label_value(f.get(k))}" for k in differing] for f in flats]


def assign_labels(runs: list[RunData], max_keys: int = 2) -> None:
    """Number the runs and give each a short unique label: model and GPUs, then what differs."""
    for i, r in enumerate(runs):
        r.index = i
        r.label = f"{r.model_name} · {r.gpu_desc}"
    if len({r.label for r in runs}) == len(runs):
        return
    for r, diff in zip(runs, _differences(runs), strict=True):
        if diff:
            text = ", ".join(diff[:max_keys]) + (", ..." if len(diff) > max_keys else "")
            if len(text) > MAX_LABEL:
                text = text[:MAX_LABEL - 3] + "..."
            r.label += f" ({text})"
    if len({r.label for r in runs}) < len(runs):
        for r in runs:
            r.label += f" #{r.index + 1}"


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, rendered by the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- units


def time_unit(max_s: float) -> tuple[str, float]:
    """A unit for durations of about ``max_s`` seconds and its size in seconds."""
    if max_s < 1.0:
        return "ms", 1e-3
    return "s", 1.0


def wall_unit(span_s: float) -> tuple[str, float]:
    """A unit for an emulated wall-time axis that spans ``span_s`` seconds."""
    if span_s <= 180:
        return "s", 1.0
    if span_s <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def rate_unit(max_rate: float) -> tuple[str, float]:
    if max_rate >= 1e6:
        return "M tokens/s", 1e6
    if max_rate >= 1e3:
        return "k tokens/s", 1e3
    return "tokens/s", 1.0


def fmt_seconds(s: float) -> str:
    if s == 0:
        return "0 s"
    if abs(s) < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if abs(s) < 1:
        return f"{s * 1e3:.3g} ms"
    if abs(s) < 10:
        return f"{s:.3f} s"
    if abs(s) < 600:
        return f"{s:.0f} s"
    if abs(s) < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_rate(r: float) -> str:
    unit, scale = rate_unit(r)
    return f"{r / scale:,.3g} {unit}" if scale > 1 else f"{r:,.0f} tokens/s"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ----------------------------------------------------------------------------------- (1) step breakdown


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
