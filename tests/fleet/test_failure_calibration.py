"""Failure rates against the published figure they are calibrated on.

Llama 3 405B pre-training: 419 unexpected interruptions in a 54-day window on 16,384 H100
(Grattafiori et al. 2024, Sec. 3.3.4); configs/reliability/llama3.yaml derives its rates from it.
The job below is 16,384 H100 with a ~260 s step (Llama 3 8B, a huge batch), so 54 days of training
is ~18k steps: the emulator must see about 419 interruptions in that time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from emulator.app import evaluate_nominal
from emulator.fleet.engine import NS, FleetEngine
from emulator.fleet.runner import fleet_summary

from .helpers import job_of

DAYS = 54
PUBLISHED = 419
SECONDS_PER_DAY = 86400.0
LLAMA3_16K = ["model=llama3_8b", "cluster=dgx_h100", "cluster.num_gpus=16384", "parallel=default", "parallel.tp=8",
              "parallel.pp=4", "train.seq_len=1024", f"train.global_batch={512 * 32768}", "reliability=llama3",
              "run.steps=1", "run.steps_per_batch=32"]
"""tp 8 x pp 4 x dp 512: 2,048 TP groups. Small batches: a failure ends a batch and the engine then
evaluates a whole new one, so with ~450 failures small batches keep the run at a few seconds."""


@pytest.fixture(scope="module")
def llama3_run() -> tuple[FleetEngine, dict, float]:
    job = job_of(base=LLAMA3_16K)
    res = evaluate_nominal(job)
    assert bool(res.by_gpu_type["h100"].memory.fits_L[0])
    step_s = float(res.step_time_s_L[0])
    assert 200.0 < step_s < 300.0, step_s
    steps = math.ceil(DAYS * SECONDS_PER_DAY / step_s)
    assert steps <= 20_000
    job = dataclasses.replace(job, run=dataclasses.replace(job.run, steps=steps))
    engine = FleetEngine(job, np)
    for _ in engine.run():
        pass
    return engine, fleet_summary(engine, np)["fleet"], step_s


def test_job_hazard_is_the_published_rate() -> None:
    """Summed over 16,384 GPUs and 2,048 nodes the configured rates give 419 failures per 54 days."""
    engine = FleetEngine(job_of(base=LLAMA3_16K), np)
    per_54_days = engine.hazard_per_s * DAYS * SECONDS_PER_DAY
    assert per_54_days == pytest.approx(PUBLISHED, rel=0.005)
    # Table 5's root-cause split: GPU-side (faulty GPU, SRAM, GSP, SDC, thermal) 196, HBM 72, host 46, ...
    by = {k: v * DAYS * SECONDS_PER_DAY for k, v in engine.hazard_by.items()}
    assert by["gpu"] == pytest.approx(196, rel=0.005)
    assert by["hbm"] == pytest.approx(72, rel=0.005)
    assert by["host"] == pytest.approx(46, rel=0.005)
    assert by["software"] == pytest.approx(63, rel=0.005)


def test_interruptions_over_54_days_match_llama3(llama3_run: tuple[FleetEngine, dict, float]) -> None:
    engine, fleet, _ = llama3_run
    t = engine.totals
    exposure_s = t.total_dt_ns / NS  # failures strike while steps run (not during restarts or writes)
    expected = engine.hazard_per_s * exposure_s
    assert exposure_s >= DAYS * SECONDS_PER_DAY
    assert 300 <= fleet["interruptions"] <= 520
    assert abs(fleet["interruptions"] - expected) <= 4.0 * math.sqrt(expected)
    assert fleet["interruptions_per_day"] == pytest.approx(PUBLISHED / DAYS, rel=0.30)


def test_failure_events_are_spread_over_gpus_and_components(llama3_run: tuple[FleetEngine, dict, float]) -> None:
    engine, fleet, _ = llama3_run
    assert int(engine.failures_G.sum()) == fleet["interruptions"]
    # A failure takes one GPU, drawn uniformly: ~450 over 16,384 GPUs hit hardly any twice.
    assert int(engine.failures_G.max()) <= 3
    assert fleet["job_mtbf_h"] == pytest.approx(DAYS * 24 / PUBLISHED, rel=0.005)
    assert 0.7 < fleet["goodput"] < 1.0


def test_downtime_and_lost_work_account_for_the_wall_time(llama3_run: tuple[FleetEngine, dict, float]) -> None:
    engine, fleet, step_s = llama3_run
    t = engine.totals
    assert t.wall_ns == t.total_dt_ns + t.downtime_ns + t.checkpoint_ns
    assert fleet["downtime_s"] == pytest.approx(fleet["interruptions"] * (600 + 900), rel=1e-12)
    # A failure loses the steps since the last checkpoint: at most one interval each.
    interval = fleet["checkpoint_interval_steps"]
    assert fleet["lost_s"] <= fleet["interruptions"] * interval * step_s * 1.5
    assert fleet["attempts"] - fleet["steps"] <= fleet["interruptions"] * interval
