"""The step engine's physics: nominal without variability, stragglers, failures, checkpoints, goodput."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emulator.app import evaluate_nominal
from emulator.fleet.engine import NS

from .helpers import FAILING, QUIET, column, job_of, of_kind, run_engine, run_pipeline

NS_ROUNDING = 0.5e-9
"""Step times are kept in integer nanoseconds: one step is the model's step rounded to 1 ns."""


def nominal_step_s(*overrides: str) -> float:
    return float(evaluate_nominal(job_of(*overrides)).step_time_s_L[0])


@pytest.mark.parametrize("extra", [
    [],
    ["parallel.pp=4"],
    ["parallel.vpp=2"],
    ["parallel.pp=1"],
    ["parallel.cp=2"],
    ["model=tiny_moe"],
    ["cluster=dgx_h100", "cluster.num_gpus=128"],
], ids=["tp2pp2", "pp4", "vpp2", "pp1", "cp2", "moe", "two_tier_fabric"])
def test_without_variability_every_step_is_the_nominal_step(extra: list[str]) -> None:
    job = job_of(*QUIET, *extra)
    nominal = float(evaluate_nominal(job).step_time_s_L[0])
    engine, batches = run_engine(job)
    steps = column(batches, "step_time_s")
    assert steps.size == job.run.steps
    np.testing.assert_allclose(steps, nominal, rtol=1e-9, atol=NS_ROUNDING)
    assert bool(np.all(column(batches, "kept")))
    np.testing.assert_array_equal(column(batches, "step"), np.arange(1, job.run.steps + 1))
    np.testing.assert_array_equal(column(batches, "clock_factor"), 1.0)
    assert engine.totals.wall_ns == engine.totals.total_dt_ns


def test_without_variability_a_long_step_matches_nominal_to_1e_9() -> None:
    """With a ~1.5 s step the nanosecond rounding is below 1e-9 relative: the engine is the nominal model."""
    job = job_of(*QUIET, "train.global_batch=32768", "run.steps=20")
    nominal = float(evaluate_nominal(job).step_time_s_L[0])
    assert nominal > 0.5
    _, batches = run_engine(job)
    np.testing.assert_allclose(column(batches, "step_time_s"), nominal, rtol=1e-9, atol=0)


def test_summary_mean_step_is_nominal_without_variability(tmp_path: Path) -> None:
    summary, tables = run_pipeline(tmp_path, *QUIET)
    nominal = summary["nominal"]["step_time_s"]
    assert summary["fleet"]["mean_step_time_s"] == pytest.approx(nominal, rel=1e-9, abs=NS_ROUNDING)
    assert summary["fleet"]["goodput"] == pytest.approx(1.0, abs=1e-12)
    assert summary["fleet"]["interruptions"] == 0
    assert summary["fleet"]["tokens_per_s"] == pytest.approx(summary["nominal"]["tokens_per_s"], rel=1e-6)
    assert summary["fleet"]["mfu"] == pytest.approx(summary["nominal"]["mfu"], rel=1e-6)
    # p99 comes from a log-spaced histogram (4096 bins over 8 decades: 0.45% per bin).
    assert summary["fleet"]["p99_step_time_s"] == pytest.approx(nominal, rel=5e-3)
    np.testing.assert_allclose(tables["steps"].column("step_time_s").to_numpy(), nominal, rtol=1e-9, atol=NS_ROUNDING)


def test_jitter_makes_steps_slower_than_nominal_and_more_so_with_more_replicas() -> None:
    """A synchronous step waits for the slowest of its replicas: the expected maximum of the jitter
    grows with the number of replicas (Gumbel tail ~ log R)."""
    no_persistent = ["cluster.speed_sigma=0", "cluster.slow_node_fraction=0", "reliability=none",
                     "cluster.jitter_sigma=0.02", "run.steps=200", "run.steps_per_batch=0"]
    overheads = {}
    for gpus in (8, 512):  # dp 2 vs dp 128, same per-replica work (global_batch = 4 x dp)
        dp = gpus // 4
        over = [*no_persistent, f"cluster.num_gpus={gpus}", f"train.global_batch={4 * dp}"]
        nominal = nominal_step_s(*over)
        _, batches = run_engine(job_of(*over))
        steps = column(batches, "step_time_s")
        assert float(steps.mean()) >= nominal
        assert float(np.quantile(steps, 0.05)) >= nominal * (1 - 0.02)
        overheads[dp] = float(steps.mean()) / nominal - 1.0
    assert overheads[2] > 0
    assert overheads[128] > 1.5 * overheads[2], overheads


def test_jitter_sigma_zero_and_persistent_spread_only() -> None:
    """Persistent speed factors alone give a constant step, at the pace of the slowest group."""
    job = job_of("cluster.jitter_sigma=0", "cluster.slow_node_fraction=0", "reliability=none",
                 "cluster.speed_sigma=0.02")
    engine, batches = run_engine(job)
    steps = column(batches, "step_time_s")
    assert np.ptp(steps) == 0.0
    nominal = float(evaluate_nominal(job).step_time_s_L[0])
    assert steps[0] > nominal
    fixed = engine.timing.fixed_s
    slowest = float(engine.factor_G.max())
    # pp=2: the slowest stage sets the m micro-batches, the bubble takes the mean of the stages, so the
    # step lies between "everything at the mean factor of the slowest replica" and "everything at the slowest".
    assert steps[0] <= fixed + (nominal - fixed) * slowest + 1e-9


def test_every_node_degraded_slows_the_stage_work_by_the_slowdown() -> None:
    base = [*QUIET[:2], "reliability=none"]
    nominal = nominal_step_s(*base, "cluster.slow_node_fraction=0")
    engine, batches = run_engine(job_of(*base, "cluster.slow_node_fraction=1", "cluster.slow_node_slowdown=0.1"))
    np.testing.assert_allclose(engine.factor_G, 1.1, rtol=1e-15)
    fixed = engine.timing.fixed_s
    expected = fixed + 1.1 * (nominal - fixed)
    steps = column(batches, "step_time_s")
    np.testing.assert_allclose(steps, expected, rtol=1e-9, atol=NS_ROUNDING)
    # About 10% slower: only the (exposed) DP/PP communication and the optimizer do not stretch.
    assert 1.0 + 0.1 * (1 - fixed / nominal) == pytest.approx(steps[0] / nominal, rel=1e-6)
    assert steps[0] / nominal > 1.09


def test_one_degraded_node_slows_the_whole_synchronous_job() -> None:
    """pp=1: every replica is one TP group, so one slow node sets the pace of the whole step."""
    base = [*QUIET[:2], "reliability=none", "parallel.pp=1", "cluster.slow_node_slowdown=0.1"]
    all_slow = column(run_engine(job_of(*base, "cluster.slow_node_fraction=1"))[1], "step_time_s")
    engine, batches = run_engine(job_of(*base, "cluster.slow_node_fraction=0.3"))
    slow_nodes = np.unique(np.flatnonzero(engine.factor_G > 1.0) // 8)
    assert 0 < slow_nodes.size < 8, "the seed should degrade some but not all of the 8 nodes"
    np.testing.assert_array_equal(column(batches, "step_time_s"), all_slow)


def test_degraded_nodes_show_in_the_gpu_table(tmp_path: Path) -> None:
    _, tables = run_pipeline(tmp_path, *QUIET[:2], "reliability=none", "cluster.slow_node_fraction=0.3")
    gpus = tables["gpus"]
    factor = gpus.column("speed_factor").to_numpy()
    node = gpus.column("node").to_numpy()
    slow = factor > 1.0
    assert 0 < slow.sum() < slow.size
    for n in np.unique(node):
        assert np.all(slow[node == n]) or not np.any(slow[node == n]), "a node is degraded as a whole"
    np.testing.assert_allclose(factor[slow], 1.1, rtol=1e-15)


# --- failures, checkpoints, goodput -------------------------------------------------------------

@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("failing")
    return run_pipeline(out, *FAILING)


def test_goodput_is_one_minus_the_lost_shares(failing_run: tuple[dict, dict]) -> None:
    fleet = failing_run[0]["fleet"]
    wall = fleet["wall_time_s"]
    lost = fleet["checkpoint_s"] + fleet["lost_s"] + fleet["downtime_s"]
    assert fleet["goodput"] == pytest.approx(1.0 - lost / wall, rel=1e-12)
    assert 0.0 < fleet["goodput"] < 1.0
    assert fleet["mean_step_time_s"] * fleet["steps"] == pytest.approx(fleet["goodput"] * wall, rel=1e-12)


def test_wall_time_adds_up_from_the_step_table(failing_run: tuple[dict, dict]) -> None:
    summary, tables = failing_run
    fleet = summary["fleet"]
    steps = tables["steps"]
    dt = steps.column("step_time_s").to_numpy()
    kept = steps.column("kept").to_numpy(zero_copy_only=False)
    assert fleet["attempts"] == steps.num_rows
    assert dt.sum() + fleet["checkpoint_s"] + fleet["downtime_s"] == pytest.approx(fleet["wall_time_s"], rel=1e-12)
    assert dt[~kept].sum() == pytest.approx(fleet["lost_s"], rel=1e-9)
    assert dt[kept].sum() / fleet["steps"] == pytest.approx(fleet["mean_step_time_s"], rel=1e-9)
    wall = steps.column("wall_time_s").to_numpy()
    assert np.all(np.diff(wall) > 0)
    assert wall[-1] == pytest.approx(fleet["wall_time_s"] - (fleet["checkpoint_s"] if fleet["steps"] % 10 == 0 else 0))


def test_failures_are_interruptions_and_lose_the_steps_since_the_checkpoint(failing_run: tuple[dict, dict]) -> None:
    summary, tables = failing_run
    fleet = summary["fleet"]
    events, steps, gpus = tables["events"], tables["steps"], tables["gpus"]
    kind = np.asarray(events.column("kind").to_pylist())
    n_fail = int(np.sum(kind == "failure"))
    assert n_fail >= 2
    assert fleet["interruptions"] == n_fail
    assert int(np.sum(kind == "restart")) == n_fail
    assert int(gpus.column("failures").to_numpy().sum()) == n_fail
    kept = steps.column("kept").to_numpy(zero_copy_only=False)
    attempt = steps.column("attempt").to_numpy()
    step = steps.column("step").to_numpy()
    np.testing.assert_array_equal(attempt, np.arange(steps.num_rows))
    assert int(kept.sum()) == summary["config"]["run"]["steps"] == fleet["steps"]
    np.testing.assert_array_equal(np.sort(step[kept]), np.arange(1, fleet["steps"] + 1))
    failures = of_kind(events, "failure").to_pylist()
    lost = np.zeros_like(kept)
    for f in failures:
        lo, hi = f["first_lost_attempt"], f["attempt"]
        assert 0 <= lo <= hi
        rng = (attempt >= lo) & (attempt <= hi)
        lost |= rng
        # The run goes back to the checkpoint: the lost range starts right after a checkpoint step.
        first_step = int(step[attempt == lo][0])
        assert (first_step - 1) % 10 == 0
        assert 0 <= f["gpu"] < 64 and f["node"] == f["gpu"] // 8
        assert f["lost_s"] > 0
    np.testing.assert_array_equal(~kept, lost)


def test_checkpoints_every_interval(failing_run: tuple[dict, dict]) -> None:
    summary, tables = failing_run
    events = tables["events"]
    ckpt = of_kind(events, "checkpoint")
    ckpt_steps = ckpt.column("step").to_numpy()
    assert np.all(ckpt_steps % 10 == 0)
    assert summary["fleet"]["checkpoint_interval_steps"] == 10
    assert summary["fleet"]["checkpoints"] == ckpt.num_rows
    # Every multiple of 10 up to run.steps is checkpointed at least once (more if a failure came back to it).
    assert set(ckpt_steps.tolist()) == set(range(10, 61, 10))
    write_s = float(ckpt.column("detail").to_pylist()[0].split()[0])
    assert summary["fleet"]["checkpoint_s"] == pytest.approx(ckpt.num_rows * write_s, abs=0.01 * ckpt.num_rows)


def test_checkpoint_interval_without_failures() -> None:
    job = job_of("reliability=none", "reliability.checkpoint_interval_steps=10")
    engine, batches = run_engine(job)
    ckpts = [e for b in batches for e in b.events if e["kind"] == "checkpoint"]
    assert [e["step"] for e in ckpts] == list(range(10, 61, 10))
    assert engine.totals.checkpoints == 6
    assert engine.totals.checkpoint_ns == 6 * engine.ckpt_write_ns
    assert engine.totals.wall_ns == engine.totals.total_dt_ns + engine.totals.checkpoint_ns


def test_young_interval_when_the_interval_is_zero() -> None:
    """checkpoint_interval_steps=0: Young's sqrt(2 x write x MTBF), in nominal steps."""
    job = job_of("reliability.rates_per_hour.gpu=300")
    engine, _ = run_engine(job)
    rel = job.reliability
    assert rel is not None
    tau = (2.0 * max(rel.checkpoint_write_s, 1e-3) / engine.hazard_per_s) ** 0.5
    assert engine.ckpt_interval == max(1, round(tau / nominal_step_s("reliability.rates_per_hour.gpu=300")))


def test_failure_rate_scales_with_the_configured_hazard() -> None:
    """Many failures in a longer run: their count is Poisson with mean hazard x exposed step time."""
    job = job_of("reliability.rates_per_hour.gpu=300", "reliability.checkpoint_interval_steps=5",
                 "run.steps=2000", "run.steps_per_batch=0")
    engine, _ = run_engine(job)
    t = engine.totals
    expected = engine.hazard_per_s * t.total_dt_ns / NS
    assert expected > 30
    assert abs(t.interruptions - expected) < 4 * expected**0.5
    assert t.steps == 2000
    assert t.attempts > 2000


def test_downtime_is_detect_plus_restart_per_failure(failing_run: tuple[dict, dict]) -> None:
    fleet = failing_run[0]["fleet"]
    assert fleet["downtime_s"] == pytest.approx(fleet["interruptions"] * (600 + 900), rel=1e-12)
