"""summary.json: the contract's ``nominal.*`` and ``memory.*`` keys, written atomically.

The file is written to a temporary name in the same directory and renamed into place, so a reader
never sees a half-written summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emulator import __version__
from emulator.cost.step import BREAKDOWN_KEYS, NominalResult
from emulator.spec import JobSpec

SECONDS_PER_DAY = 86400.0


def nominal_summary(job: JobSpec, res: NominalResult, i: int = 0) -> dict[str, Any]:
    """The ``nominal`` and ``memory`` sections for layout ``i`` of ``res``."""
    step = float(res.step_time_s_L[i])
    pace = res.by_gpu_type[res.pace_gpu_type]
    by_type = {}
    for name, st in res.by_gpu_type.items():
        by_type[name] = {
            "step_time_s": float(st.step_time_s_L[i]),
            "breakdown_s": {k: float(st.breakdown_s[k][i]) for k in BREAKDOWN_KEYS},
            "compute_split_s": _compute_split(st, i),
        }
    nominal = {
        "step_time_s": step,
        "tokens_per_s": float(res.tokens_per_s_L[i]),
        "model_tflops_per_gpu": float(res.model_tflops_per_gpu_L[i]),
        "mfu": float(res.mfu_L[i]),
        "hfu": float(res.hfu_L[i]),
        "breakdown_s": {k: float(res.breakdown_s[k][i]) for k in BREAKDOWN_KEYS},
        "compute_split_s": _compute_split(pace, i),
        "pace_gpu_type": res.pace_gpu_type,
        "tokens_per_step": job.tokens_per_step,
        "microbatches_per_step": job.train.global_batch // (job.parallel.dp * job.parallel.micro_batch),
        "by_gpu_type": by_type,
    }
    mem_by_type = {}
    fits = True
    for name, st in res.by_gpu_type.items():
        m = st.memory
        ok = bool(m.fits_L[i])
        fits = fits and ok
        mem_by_type[name] = {"per_gpu_bytes": m.as_dict(i), "capacity_bytes": m.capacity_bytes, "fits": ok}
    worst = max(mem_by_type.values(), key=_load)
    memory = {
        "per_gpu_bytes": worst["per_gpu_bytes"],
        "capacity_bytes": worst["capacity_bytes"],
        "fits": fits,
        "by_gpu_type": mem_by_type,
    }
    out: dict[str, Any] = {"nominal": nominal, "memory": memory}
    if job.train.total_tokens > 0:
        out["time_to_train_days"] = job.train.total_tokens / float(res.tokens_per_s_L[i]) / SECONDS_PER_DAY
    return out


def _load(entry: dict[str, Any]) -> float:
    return float(entry["per_gpu_bytes"]["total"]) / float(entry["capacity_bytes"])


def _compute_split(st: Any, i: int) -> dict[str, float]:
    """Compute time split into compute-bound and memory-bound ops (what HBM bandwidth changes)."""
    total = float(st.breakdown_s["compute"][i])
    mem = float(st.memory_bound_s_L[i])
    return {"compute_bound": total - mem, "memory_bound": mem}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def build_summary(job: JobSpec, res: NominalResult, config: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"version": __version__}
    summary.update(nominal_summary(job, res))
    summary["config"] = config
    return summary
