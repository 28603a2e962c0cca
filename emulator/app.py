"""The main job as a plain function: JobSpec in, results and files out (no Hydra here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emulator.cost.layout import LayoutBatch
from emulator.cost.step import NominalResult, nominal
from emulator.io.summary import build_summary, write_json_atomic
from emulator.spec import JobSpec

SUMMARY_FILE = "summary.json"


def evaluate_nominal(job: JobSpec) -> NominalResult:
    """The analytical step of the job's layout (a batch of one layout, NumPy)."""
    lay = LayoutBatch.from_specs([job.parallel], np)
    return nominal(job.model, job.train, job.cluster, lay, np)


def run_job(job: JobSpec, out_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the job and write ``summary.json`` into ``out_dir``; returns the summary."""
    res = evaluate_nominal(job)
    summary = build_summary(job, res, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
