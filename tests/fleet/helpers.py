"""Small fleet jobs and readers shared by the fleet and io tests (tiny model, 64 GPUs, ms steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from emulator.app import run_job
from emulator.config.compose import compose_config
from emulator.config.job import build_job, to_plain
from emulator.fleet.engine import FleetEngine, StepBatch
from emulator.spec import JobSpec

SMALL = ["model=tiny", "cluster=single_node", "cluster.num_gpus=64", "parallel=default", "parallel.tp=2",
         "parallel.pp=2", "train.seq_len=1024", "train.global_batch=64", "run.steps=60", "run.steps_per_batch=16"]
"""64 H100, tp 2 x pp 2 x dp 16, a ~6.6 ms step: 60 steps emulate in milliseconds."""
QUIET = ["cluster.speed_sigma=0", "cluster.jitter_sigma=0", "cluster.slow_node_fraction=0", "reliability=none"]
"""No variability and no failures: every step is the nominal step."""
FAILING = ["reliability.rates_per_hour.gpu=300", "reliability.checkpoint_interval_steps=10"]
"""~5 failures/s over 64 GPUs: a few failures within 60 steps of ~6.6 ms (seed 0 gives 4)."""
TABLES = ("steps", "events", "gpus")


def merged(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """``base`` without the keys that ``overrides`` set again, then ``overrides`` (one value per key)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [b for b in base if b.split("=", 1)[0] not in keys] + list(overrides)


def job_of(*overrides: str, base: Sequence[str] = SMALL) -> JobSpec:
    return build_job(compose_config(merged(base, overrides)))


def run_engine(job: JobSpec, xp: Any = np) -> tuple[FleetEngine, list[StepBatch]]:
    engine = FleetEngine(job, xp)
    return engine, list(engine.run())


def column(batches: list[StepBatch], name: str) -> np.ndarray:
    """One StepBatch field (without its ``_B`` suffix) over every batch."""
    return np.concatenate([getattr(b, f"{name}_B") for b in batches])


def read_ipc(path: Path) -> pa.Table:
    with ipc.open_file(str(path)) as reader:
        return reader.read_all()


def run_pipeline(out_dir: Path, *overrides: str,
                 base: Sequence[str] = SMALL) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    """The whole job as the CLI runs it (no Hydra run dir): summary and the three Arrow tables."""
    cfg = compose_config(merged(base, overrides))
    summary = run_job(build_job(cfg), out_dir, to_plain(cfg))
    return summary, {name: read_ipc(out_dir / f"{name}.arrow") for name in TABLES}


def cli(args: Sequence[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def load_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def of_kind(events: pa.Table, kind: str) -> pa.Table:
    """The rows of an events table of one kind (failure, restart, checkpoint)."""
    return events.filter(pc.equal(events.column("kind"), kind))
