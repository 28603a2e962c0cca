"""Run the fleet engine and stream its batches to the Arrow files; the fleet/power summary keys."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from emulator.backend import backend_name, to_numpy
from emulator.fleet.engine import HIST_BINS, HIST_HI, HIST_LO, NS, FleetEngine
from emulator.io.arrow import (
    EVENTS_SCHEMA,
    GPUS_SCHEMA,
    STEPS_SCHEMA,
    StreamWriter,
    apply_lost_attempts,
    with_metadata,
    write_table,
)
from emulator.spec import JobSpec

SECONDS_PER_DAY = 86400.0
EVENT_KEYS = [f.name for f in EVENTS_SCHEMA]


def run_fleet(job: JobSpec, out_dir: Path, config: dict[str, Any], xp: Any, progress: bool) -> dict[str, Any]:
    """Emulate the run, write steps/events/gpus.arrow into ``out_dir``; returns the fleet and power sections."""
    engine = FleetEngine(job, xp)
    steps_w = StreamWriter(out_dir / "steps.arrow", with_metadata(STEPS_SCHEMA, config))
    events_w = StreamWriter(out_dir / "events.arrow", with_metadata(EVENTS_SCHEMA, config))
    bar = Progress(TextColumn("emulating"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TimeRemainingColumn(), transient=True) if progress and sys.stderr.isatty() else None
    with bar if bar is not None else nullcontext():
        task = bar.add_task("steps", total=job.run.steps) if bar is not None else None
        for batch in engine.run():
            steps_w.append({
                "attempt": batch.attempt_B, "step": batch.step_B, "wall_time_s": batch.wall_time_s_B,
                "step_time_s": batch.step_time_s_B, "tokens": batch.tokens_B, "tokens_per_s": batch.tokens_per_s_B,
                "mfu": batch.mfu_B, "facility_power_mw": batch.facility_power_mw_B,
                "facility_peak_mw": batch.facility_peak_mw_B, "clock_factor": batch.clock_factor_B,
                "kept": batch.kept_B,
            })
            if batch.events:
                events_w.append({k: [e[k] for e in batch.events] for k in EVENT_KEYS})
            if bar is not None and task is not None:
                bar.update(task, completed=engine.totals.steps)
    events_path = events_w.finalize()
    from pyarrow import ipc  # noqa: PLC0415 - only needed once, after the run

    with ipc.open_file(str(events_path)) as reader:
        events_table = reader.read_all()
    steps_w.finalize(lambda table: apply_lost_attempts(table, events_table))
    _write_gpus(engine, out_dir, config)
    return fleet_summary(engine, xp)


def _write_gpus(engine: FleetEngine, out_dir: Path, config: dict[str, Any]) -> None:
    topo, timing, t = engine.topo, engine.timing, engine.totals
    tp = topo.tp
    busy_G = np.repeat(to_numpy(engine.busy_ns_N) / 1e9, tp)
    idle_s = (t.downtime_ns + t.checkpoint_ns) / NS
    energy_G = np.repeat(to_numpy(engine.energy_uj_N) / 1e6 / tp, tp) + engine.power.p_idle_T[topo.type_G] * idle_s
    names = np.asarray(topo.type_names)[topo.type_G]
    write_table(out_dir / "gpus.arrow", with_metadata(GPUS_SCHEMA, config), {
        "gpu": np.arange(topo.num_gpus, dtype=np.int64), "node": topo.node_G(), "gpu_type": names.tolist(),
        "pp_stage": topo.stage_G(), "speed_factor": engine.factor_G, "busy_s": busy_G,
        "hbm_peak_bytes": timing.hbm_peak_bytes_T[topo.type_G], "energy_j": energy_G, "failures": engine.failures_G,
    })


def _percentile(hist: np.ndarray, q: float) -> float:
    total = int(hist.sum())
    if total == 0:
        return 0.0
    idx = int(np.searchsorted(np.cumsum(hist), q * total))
    return float(10.0 ** (HIST_LO + (idx + 0.5) * (HIST_HI - HIST_LO) / HIST_BINS))


def fleet_summary(engine: FleetEngine, xp: Any) -> dict[str, Any]:
    t, job = engine.totals, engine.job
    wall_s = t.wall_ns / NS
    kept_s = (t.total_dt_ns - t.lost_dt_ns) / NS
    tokens = job.run.steps * job.tokens_per_step
    energy_j = t.energy_uj / 1e6 + engine.power.idle_energy_j
    fleet = {
        "steps": job.run.steps,
        "attempts": t.attempts,
        "wall_time_s": wall_s,
        "mean_step_time_s": kept_s / job.run.steps,
        "p99_step_time_s": _percentile(t.hist, 0.99),
        "tokens_per_s": tokens / wall_s,
        "mfu": engine.model_flops_per_step * job.run.steps / (wall_s * engine.peak_flops),
        "goodput": kept_s / wall_s,
        "interruptions": t.interruptions,
        "interruptions_per_day": t.interruptions / (wall_s / SECONDS_PER_DAY),
        "lost_s": t.lost_dt_ns / NS,
        "downtime_s": t.downtime_ns / NS,
        "checkpoint_s": t.checkpoint_ns / NS,
        "checkpoints": t.checkpoints,
        "checkpoint_interval_steps": engine.ckpt_interval,
        "job_mtbf_h": (1.0 / engine.hazard_per_s / 3600.0) if engine.hazard_per_s > 0 else None,
        "recompute_by_pool": list(engine.timing.recompute_T),
        "backend": backend_name(xp),
    }
    power = {
        "mean_facility_mw": energy_j / wall_s / 1e6,
        "peak_facility_mw": t.peak_facility_w / 1e6,
        "idle_facility_mw": engine.power.idle_facility_w() / 1e6,
        "energy_mwh": energy_j / 3.6e9,
        "energy_per_token_j": energy_j / tokens,
    }
    return {"fleet": fleet, "power": power, "fleet_tokens_per_s": tokens / wall_s}
