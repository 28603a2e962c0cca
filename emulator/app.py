"""The main job as a plain function: JobSpec in, results and files out (no Hydra here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emulator.backend import get_xp
from emulator.cost.layout import LayoutBatch
from emulator.cost.step import NominalResult, nominal
from emulator.fleet.runner import run_fleet
from emulator.io.summary import build_summary, write_json_atomic
from emulator.report.trace import write_trace
from emulator.spec import JobSpec

SUMMARY_FILE = "summary.json"
TRACE_FILE = "trace.json"


def evaluate_nominal(job: JobSpec) -> NominalResult:
    """The analytical step of the job's layout (a batch of one layout, NumPy)."""
    lay = LayoutBatch.from_specs([job.parallel], np)
    return nominal(job.model, job.train, job.cluster, lay, np)


def run_job(job: JobSpec, out_dir: Path, config: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Evaluate the job (and emulate the fleet when ``run.steps > 0``); write the outputs into ``out_dir``.

    summary.json is written last, atomically: its presence means the run finished.
    """
    res = evaluate_nominal(job)
    summary = build_summary(job, res, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    if job.run.steps > 0:
        fleet = run_fleet(job, out_dir, config, get_xp(job.run.backend), progress and job.run.progress)
        summary["fleet"] = fleet["fleet"]
        summary["power"] = fleet["power"]
        if job.train.total_tokens > 0:
            summary["time_to_train_days"] = job.train.total_tokens / fleet["fleet_tokens_per_s"] / 86400.0
        summary["config"] = summary.pop("config")
    if job.run.trace:
        write_trace(job, res, out_dir / TRACE_FILE)
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
