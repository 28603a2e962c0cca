"""Reproducibility: same config, same tables; batching and backend change nothing; the seed does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import array_api_strict as xs
import numpy as np
import pytest

from emulator.fleet.engine import StepBatch

from .helpers import FAILING, TABLES, column, job_of, run_engine, run_pipeline

BATCH_FIELDS = [f.name for f in dataclasses.fields(StepBatch) if f.name != "events"]


def test_same_config_twice_gives_identical_tables(tmp_path: Path) -> None:
    s1, t1 = run_pipeline(tmp_path / "a", *FAILING)
    s2, t2 = run_pipeline(tmp_path / "b", *FAILING)
    for name in TABLES:
        assert t1[name].equals(t2[name], check_metadata=True), name
    assert s1 == s2
    assert s1["fleet"]["interruptions"] > 0


@pytest.mark.parametrize("extra", [[], FAILING], ids=["clean", "with_failures"])
def test_steps_per_batch_does_not_change_any_output(tmp_path: Path, extra: list[str]) -> None:
    results = {}
    for spb in (1, 7, 16, 1000):
        summary, tables = run_pipeline(tmp_path / f"spb{spb}", *extra, f"run.steps_per_batch={spb}")
        results[spb] = (summary, tables)
    ref_summary, ref = results[16]
    if extra:
        assert ref_summary["fleet"]["interruptions"] >= 2, "the failure case should see failures"
        assert ref["steps"].num_rows > 60
    for spb, (summary, tables) in results.items():
        for name in TABLES:
            # Exact equality of every column (the schema metadata holds the config, which differs).
            assert tables[name].schema.remove_metadata() == ref[name].schema.remove_metadata()
            assert tables[name].equals(ref[name]), f"{name} differs with steps_per_batch={spb}"
        assert summary["fleet"] == ref_summary["fleet"], spb
        assert summary["power"] == ref_summary["power"], spb


def kept_after_failures(batches: list[StepBatch]) -> np.ndarray:
    """``kept`` once every failure has marked its lost attempts (what the runner does when finalising:
    a batch written before a failure cannot know its attempts will be lost)."""
    attempt = column(batches, "attempt")
    kept = column(batches, "kept").copy()
    for event in (e for b in batches for e in b.events if e["kind"] == "failure"):
        kept[(attempt >= event["first_lost_attempt"]) & (attempt <= event["attempt"])] = False
    return kept


def test_engine_batching_invariance_of_device_totals() -> None:
    ref_engine, ref = run_engine(job_of(*FAILING, "run.steps_per_batch=1000"))
    assert ref_engine.totals.interruptions >= 2
    for spb in (1, 3, 16):
        engine, batches = run_engine(job_of(*FAILING, f"run.steps_per_batch={spb}"))
        for name in BATCH_FIELDS:
            if name != "kept_B":
                np.testing.assert_array_equal(column(batches, name.removesuffix("_B")),
                                              column(ref, name.removesuffix("_B")), err_msg=name)
        np.testing.assert_array_equal(kept_after_failures(batches), kept_after_failures(ref))
        np.testing.assert_array_equal(np.asarray(engine.busy_ns_N), np.asarray(ref_engine.busy_ns_N))
        np.testing.assert_array_equal(np.asarray(engine.energy_uj_N), np.asarray(ref_engine.energy_uj_N))
        np.testing.assert_array_equal(engine.failures_G, ref_engine.failures_G)
        assert engine.totals.energy_uj == ref_engine.totals.energy_uj
        assert engine.totals.wall_ns == ref_engine.totals.wall_ns
        assert engine.power.idle_energy_j == ref_engine.power.idle_energy_j
        np.testing.assert_array_equal(engine.totals.hist, ref_engine.totals.hist)
        assert [e for b in batches for e in b.events] == [e for b in ref for e in b.events]


@pytest.mark.parametrize("extra", [[], FAILING, ["power.facility_cap_mw=0.08"]],
                         ids=["clean", "with_failures", "capped"])
def test_numpy_and_array_api_strict_engines_agree_exactly(extra: list[str]) -> None:
    job = job_of(*extra)
    e_np, b_np = run_engine(job, np)
    e_xs, b_xs = run_engine(job, xs)
    assert len(b_np) == len(b_xs)
    for a, b in zip(b_np, b_xs, strict=True):
        for name in BATCH_FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert isinstance(y, np.ndarray), f"{name} should be a host NumPy array"
            np.testing.assert_array_equal(y, x, err_msg=name)
        assert a.events == b.events
    np.testing.assert_array_equal(np.asarray(e_xs.busy_ns_N), np.asarray(e_np.busy_ns_N))
    np.testing.assert_array_equal(np.asarray(e_xs.energy_uj_N), np.asarray(e_np.energy_uj_N))
    assert dataclasses.asdict(e_xs.totals).keys() == dataclasses.asdict(e_np.totals).keys()
    for key in ("attempts", "steps", "total_dt_ns", "lost_dt_ns", "wall_ns", "interruptions", "energy_uj"):
        assert getattr(e_xs.totals, key) == getattr(e_np.totals, key), key
    np.testing.assert_array_equal(e_xs.failures_G, e_np.failures_G)


def test_a_different_seed_gives_different_step_times() -> None:
    _, a = run_engine(job_of("run.seed=0"))
    _, b = run_engine(job_of("run.seed=1"))
    ta, tb = column(a, "step_time_s"), column(b, "step_time_s")
    assert ta.shape == tb.shape
    assert not np.array_equal(ta, tb)
    # Both are draws around the same nominal step: close on average.
    assert abs(float(ta.mean() / tb.mean()) - 1.0) < 0.02


def test_a_different_seed_changes_the_persistent_factors() -> None:
    e0, _ = run_engine(job_of("run.seed=0", "run.steps=1"))
    e1, _ = run_engine(job_of("run.seed=1", "run.steps=1"))
    assert not np.array_equal(e0.factor_G, e1.factor_G)




def test_neighbouring_seeds_are_independent_runs() -> None:
    e0, a = run_engine(job_of("run.seed=0"))
    e1, b = run_engine(job_of("run.seed=1"))
    assert not np.array_equal(e1.factor_G[:-1], e0.factor_G[1:])
    assert np.mean(column(a, "step_time_s") == column(b, "step_time_s")) < 0.05
