"""The runs a report draws: loading summary.json and the Arrow tables, labels, units, shared figure helpers."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


