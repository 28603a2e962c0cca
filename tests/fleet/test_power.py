"""Site power per step, facility caps and the clock they cost, demand-response windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emulator.spec import ConfigError

from .helpers import QUIET, column, job_of, run_engine, run_pipeline

NO_FAIL = ["reliability=none"]


@pytest.fixture(scope="module")
def uncapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return run_pipeline(tmp_path_factory.mktemp("uncapped"), *NO_FAIL)


def test_facility_power_per_step_is_between_idle_and_peak(uncapped: tuple[dict, dict]) -> None:
    summary, tables = uncapped
    power = summary["power"]
    idle, peak = power["idle_facility_mw"], power["peak_facility_mw"]
    # 64 H100: idle 70 W, TDP 700 W, hosts + network 635 W per GPU, PUE 1.2.
    assert idle == pytest.approx(64 * (70 + 635) * 1.2 / 1e6, rel=1e-12)
    assert peak == pytest.approx(64 * (700 + 635) * 1.2 / 1e6, rel=1e-12)
    mw = tables["steps"].column("facility_power_mw").to_numpy()
    assert np.all(mw > idle)
    assert np.all(mw < peak)
    np.testing.assert_allclose(tables["steps"].column("facility_peak_mw").to_numpy(), peak, rtol=1e-12)
    assert idle < power["mean_facility_mw"] < peak
    np.testing.assert_array_equal(tables["steps"].column("clock_factor").to_numpy(), 1.0)


def test_energy_adds_up(uncapped: tuple[dict, dict]) -> None:
    summary, tables = uncapped
    steps = tables["steps"]
    mw = steps.column("facility_power_mw").to_numpy()
    dt = steps.column("step_time_s").to_numpy()
    wall = summary["fleet"]["wall_time_s"]
    # No failures: only checkpoint writes (idle floor) besides the steps.
    idle_s = wall - dt.sum()
    energy_mwh = (np.sum(mw * dt) + summary["power"]["idle_facility_mw"] * idle_s) / 3600.0
    assert summary["power"]["energy_mwh"] == pytest.approx(energy_mwh, rel=1e-6)
    assert summary["power"]["mean_facility_mw"] == pytest.approx(energy_mwh * 3600.0 / wall, rel=1e-6)
    tokens = summary["fleet"]["steps"] * summary["nominal"]["tokens_per_step"]
    assert summary["power"]["energy_per_token_j"] == pytest.approx(energy_mwh * 3.6e9 / tokens, rel=1e-6)


def test_gpu_energy_and_busy_time_per_gpu(uncapped: tuple[dict, dict]) -> None:
    summary, tables = uncapped
    gpus = tables["gpus"]
    assert gpus.num_rows == 64
    busy = gpus.column("busy_s").to_numpy()
    energy = gpus.column("energy_j").to_numpy()
    wall = summary["fleet"]["wall_time_s"]
    assert np.all(busy > 0) and np.all(busy < wall)
    # Between idle and TDP over the wall time; the GPUs' energy is part of the facility's.
    assert np.all(energy > 70 * wall) and np.all(energy < 700 * wall)
    assert energy.sum() < summary["power"]["energy_mwh"] * 3.6e9
    # TP partners run in lockstep: the same busy time and energy.
    np.testing.assert_array_equal(busy[0::2], busy[1::2])


@pytest.fixture(scope="module")
def capped(uncapped: tuple[dict, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[float, dict, dict]:
    power = uncapped[0]["power"]
    cap = 0.5 * (power["idle_facility_mw"] + power["peak_facility_mw"])
    summary, tables = run_pipeline(tmp_path_factory.mktemp("capped"), *NO_FAIL, f"power.facility_cap_mw={cap}")
    return cap, summary, tables


def test_a_facility_cap_lowers_the_clock_and_slows_the_steps(uncapped: tuple[dict, dict],
                                                              capped: tuple[float, dict, dict]) -> None:
    cap, summary, tables = capped
    clock = tables["steps"].column("clock_factor").to_numpy()
    assert np.all(clock < 1.0) and np.all(clock > 0.0)
    assert np.ptp(clock) == 0.0
    # DVFS: dynamic power ~ f^3, so the clock is the cube root of the power headroom ratio.
    limit = (cap * 1e6 / 1.2 - 64 * 635) / 64
    assert clock[0] == pytest.approx(((limit - 70) / (700 - 70)) ** (1 / 3), rel=1e-12)
    slow = tables["steps"].column("step_time_s").to_numpy()
    fast = uncapped[1]["steps"].column("step_time_s").to_numpy()
    assert np.all(slow > fast)
    assert summary["fleet"]["mean_step_time_s"] > uncapped[0]["fleet"]["mean_step_time_s"]
    assert summary["fleet"]["tokens_per_s"] < uncapped[0]["fleet"]["tokens_per_s"]


def test_a_facility_cap_bounds_the_peak(capped: tuple[float, dict, dict]) -> None:
    cap, summary, tables = capped
    assert summary["power"]["peak_facility_mw"] <= cap * (1 + 1e-6)
    assert summary["power"]["peak_facility_mw"] == pytest.approx(cap, rel=1e-9)
    assert np.all(tables["steps"].column("facility_peak_mw").to_numpy() <= cap * (1 + 1e-6))
    assert np.all(tables["steps"].column("facility_power_mw").to_numpy() <= cap * (1 + 1e-6))
    assert summary["power"]["mean_facility_mw"] <= cap * (1 + 1e-6)


def test_a_cap_at_the_peak_changes_nothing(uncapped: tuple[dict, dict]) -> None:
    peak = uncapped[0]["power"]["peak_facility_mw"]
    _, batches = run_engine(job_of(*NO_FAIL, f"power.facility_cap_mw={peak * 1.001}"))
    np.testing.assert_array_equal(column(batches, "clock_factor"), 1.0)
    np.testing.assert_array_equal(column(batches, "step_time_s"),
                                  uncapped[1]["steps"].column("step_time_s").to_numpy())


def test_a_low_cap_also_bounds_the_power_of_communication_heavy_steps() -> None:
    """Slow scale-out (1 Gb/s NICs, no DP overlap): most of the step is exposed gradient all-reduce."""
    comm_heavy = ["model=tiny", "cluster=dgx_h100", "cluster.num_gpus=64", "parallel=default", "parallel.tp=1",
                  "parallel.pp=1", "train.seq_len=1024", "train.global_batch=64", "run.steps=20",
                  "reliability=none", "cluster.nic_gbps=1", "parallel.dp_comm_overlap=false"]
    idle_mw = 64 * (70 + 635) * 1.2 / 1e6
    cap = 1.05 * idle_mw  # L ~ 105 W per GPU, below the 245 W of a GPU in NCCL kernels
    engine, batches = run_engine(job_of("power.facility_cap_mw=" + str(cap), base=comm_heavy))
    assert engine.timing.fixed_s > engine.m * float(engine.timing.t_fb_T[0])  # communication dominates
    assert np.all(column(batches, "facility_peak_mw") <= cap * (1 + 1e-6))
    assert np.all(column(batches, "facility_power_mw") <= cap * (1 + 1e-6))


def test_a_cap_below_the_idle_floor_is_a_config_error(uncapped: tuple[dict, dict]) -> None:
    idle = uncapped[0]["power"]["idle_facility_mw"]
    with pytest.raises(ConfigError) as err:
        job_of(*NO_FAIL, f"power.facility_cap_mw={0.9 * idle}")
    assert err.value.key == "power.facility_cap_mw"
    assert "power.facility_cap_mw" in str(err.value)
    with pytest.raises(ConfigError) as err:
        job_of(*NO_FAIL, "power=demand_response", f"power.windows=[{{start_h:0,end_h:1,cap_mw:{0.9 * idle}}}]")
    assert err.value.key == "power.windows[0].cap_mw"


def test_a_demand_response_window_slows_only_the_steps_inside_it(uncapped: tuple[dict, dict],
                                                                 tmp_path: Path) -> None:
    """The shipped scenario's window is 0.5-1.5 h at 100 MW; here it is moved into this short run
    (0.1-0.25 s of a ~0.4 s run) and lowered to the middle of this job's idle-peak range."""
    power = uncapped[0]["power"]
    cap = 0.5 * (power["idle_facility_mw"] + power["peak_facility_mw"])
    start_s, end_s = 0.1, 0.25
    summary, tables = run_pipeline(
        tmp_path, *QUIET, "power=demand_response",
        f"power.windows=[{{start_h:{start_s / 3600!r},end_h:{end_s / 3600!r},cap_mw:{cap!r}}}]")
    assert summary["fleet"]["wall_time_s"] > end_s
    steps = tables["steps"]
    clock = steps.column("clock_factor").to_numpy()
    dt = steps.column("step_time_s").to_numpy()
    started = steps.column("wall_time_s").to_numpy() - dt  # the level is set when a step starts
    inside = (started >= start_s) & (started < end_s)
    assert 0 < inside.sum() < inside.size
    assert np.all(clock[inside] < 1.0)
    np.testing.assert_array_equal(clock[~inside], 1.0)
    assert dt[inside].min() > dt[~inside].max()
    assert np.all(steps.column("facility_peak_mw").to_numpy()[inside] <= cap * (1 + 1e-6))
    assert summary["power"]["peak_facility_mw"] == pytest.approx(power["peak_facility_mw"], rel=1e-12)


def test_the_shipped_150_mw_cap_does_not_bind_a_small_job() -> None:
    _, batches = run_engine(job_of(*NO_FAIL, "power=cap_150mw"))
    np.testing.assert_array_equal(column(batches, "clock_factor"), 1.0)
