"""The `emulate` command end to end, as a user runs it (subprocess, fresh output directory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOMINAL_KEYS = {"step_time_s", "tokens_per_s", "model_tflops_per_gpu", "mfu", "breakdown_s"}
MEMORY_KEYS = {"per_gpu_bytes", "capacity_bytes", "fits"}
BREAKDOWN = {"compute", "tp_comm", "pp_comm", "dp_comm", "cp_comm", "ep_comm", "bubble", "optimizer", "other"}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def summaries(root: Path) -> list[Path]:
    return sorted(root.rglob("summary.json"))


def test_default_job_writes_the_contract_summary(tmp_path: Path) -> None:
    proc = run([], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [path] = summaries(tmp_path)
    data = json.loads(path.read_text())
    assert set(data["nominal"]) >= NOMINAL_KEYS
    assert set(data["nominal"]["breakdown_s"]) == BREAKDOWN
    assert set(data["memory"]) >= MEMORY_KEYS
    assert {"weights", "gradients", "optimizer", "activations", "other", "total"} == set(
        data["memory"]["per_gpu_bytes"])
    assert sum(data["nominal"]["breakdown_s"].values()) == pytest.approx(data["nominal"]["step_time_s"], rel=1e-9)
    assert data["config"]["model"]["name"] == "grok2"
    assert {"steps", "mean_step_time_s", "p99_step_time_s", "tokens_per_s", "goodput", "interruptions"} <= set(
        data["fleet"])
    assert {"mean_facility_mw", "peak_facility_mw", "energy_mwh"} <= set(data["power"])
    assert data["fleet"]["steps"] == data["config"]["run"]["steps"] > 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model=grok9", "model=grok9"),
        ("gpu=h1000", "gpu=h1000"),
        ("cluster=nowhere", "cluster=nowhere"),
        ("parallel.tp=3", "parallel.tp=3"),
        ("parallel.etp=3", "parallel.etp=3"),
        ("parallel.etp=-1", "parallel.etp=-1"),
        ("parallel.dp=7", "parallel="),
        ("cluster.num_gpus=-8", "cluster.num_gpus=-8"),
        ("parallel.tpp=2", "parallel.tpp=2"),
        ("train.precision=fp4", "train.precision=fp4"),
        ("run.backend=tpu", "run.backend=tpu"),
        ("power.facility_cap_mw=1", "power.facility_cap_mw=1"),
        ("reliability.rates_per_hour.gpu=-1", "reliability.rates_per_hour.gpu=-1"),
        ("cluster=colossus_200k", "train.global_batch=2500"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(tmp_path: Path, override: str, key: str) -> None:
    proc = run([override], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0]
    assert "Traceback" not in proc.stderr
    assert summaries(tmp_path) == []


def test_nominal_only_run_has_no_fleet_section(tmp_path: Path) -> None:
    proc = run(["run.steps=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [path] = summaries(tmp_path)
    data = json.loads(path.read_text())
    assert "fleet" not in data and "power" not in data
    assert not list(path.parent.glob("*.arrow"))


def test_layout_that_does_not_fit_is_a_result(tmp_path: Path) -> None:
    proc = run(["parallel.zero=0", "parallel.recompute=none", "run.steps=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [path] = summaries(tmp_path)
    data = json.loads(path.read_text())
    assert data["memory"]["fits"] is False
    assert data["memory"]["per_gpu_bytes"]["total"] > data["memory"]["capacity_bytes"]


def test_emulating_a_layout_that_does_not_fit_is_one_clear_line(tmp_path: Path) -> None:
    proc = run(["run.steps=5", "parallel.zero=0", "parallel.recompute=none"], tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("emulate: error: parallel=") and "does not fit on h100" in line and "activations" in line
    assert summaries(tmp_path) == []


def test_multirun_sweep_with_a_bad_value_fails_before_running(tmp_path: Path) -> None:
    proc = run(["-m", "gpu=h100,h2000"], tmp_path)
    assert proc.returncode == 2
    assert "gpu=h2000" in proc.stderr.strip().splitlines()[-1]
    assert summaries(tmp_path) == []


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_named_experiment_runs_and_writes_the_contract_files(tmp_path: Path, name: str) -> None:
    """Each shipped scenario, as a user runs it (steps cut to 5 to keep the suite fast)."""
    proc = run([f"experiment={name}", "run.steps=5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = summaries(tmp_path)
    for table in ("steps.arrow", "events.arrow", "gpus.arrow", "trace.json"):
        assert (path.parent / table).exists(), table
    data = json.loads(path.read_text())
    assert data["fleet"]["steps"] == 5
