"""The Arrow outputs of a clean CLI run: files, readers, contract columns, metadata and summary keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyarrow import ipc

import emulator
from emulator.io.arrow import read_run

from ..fleet.helpers import SMALL, TABLES, cli, read_ipc

STEPS = 60
CONTRACT = {
    "steps": {"step", "wall_time_s", "step_time_s", "tokens", "tokens_per_s", "mfu", "facility_power_mw"},
    "gpus": {"gpu", "node", "gpu_type", "pp_stage", "speed_factor", "busy_s", "hbm_peak_bytes", "energy_j",
             "failures"},
    "events": {"time_s", "step", "kind", "gpu", "node", "lost_s"},
}
FLEET_KEYS = {"steps", "mean_step_time_s", "p99_step_time_s", "tokens_per_s", "goodput", "interruptions"}
POWER_KEYS = {"mean_facility_mw", "peak_facility_mw", "energy_mwh"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean CLI run in a fresh directory; Hydra puts it under outputs/DATE/TIME/."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = cli([*SMALL, "reliability.checkpoint_interval_steps=10"], cwd)
    assert proc.returncode == 0, proc.stderr
    [summary] = sorted((cwd / "outputs").rglob("summary.json"))
    assert summary.parent.parent.parent == cwd / "outputs"
    return summary.parent


def test_files_exist_and_no_stream_is_left(run_dir: Path) -> None:
    for name in TABLES:
        assert (run_dir / f"{name}.arrow").is_file()
    assert not list(run_dir.rglob("*.part"))
    assert not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "summary.json").is_file()


@pytest.mark.parametrize("name", TABLES)
def test_each_file_opens_as_an_ipc_file(run_dir: Path, name: str) -> None:
    path = run_dir / f"{name}.arrow"
    with ipc.open_file(str(path)) as reader:
        table = reader.read_all()
    dataset = ds.dataset(str(path), format="ipc")
    assert dataset.to_table().equals(table)
    assert dataset.count_rows() == table.num_rows
    with pa.memory_map(str(path), "r") as source:
        assert ipc.open_file(source).read_all().equals(table)


@pytest.mark.parametrize("name", TABLES)
def test_each_file_scans_with_polars(run_dir: Path, name: str) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.scan_ipc(run_dir / f"{name}.arrow").collect()
    table = read_ipc(run_dir / f"{name}.arrow")
    assert frame.height == table.num_rows
    assert set(frame.columns) == set(table.column_names)
    if name == "steps":
        np.testing.assert_array_equal(frame["step_time_s"].to_numpy(), table.column("step_time_s").to_numpy())


@pytest.mark.parametrize("name", TABLES)
def test_contract_columns(run_dir: Path, name: str) -> None:
    table = read_ipc(run_dir / f"{name}.arrow")
    assert CONTRACT[name] <= set(table.column_names)


def test_steps_table(run_dir: Path) -> None:
    steps = read_ipc(run_dir / "steps.arrow")
    assert steps.num_rows == STEPS  # no failures in 60 small steps
    np.testing.assert_array_equal(steps.column("step").to_numpy(), np.arange(1, STEPS + 1))
    assert pa.types.is_integer(steps.schema.field("step").type)
    assert pa.types.is_integer(steps.schema.field("tokens").type)
    for col in ("wall_time_s", "step_time_s", "tokens_per_s", "mfu", "facility_power_mw"):
        assert pa.types.is_floating(steps.schema.field(col).type), col
        values = steps.column(col).to_numpy()
        assert np.all(np.isfinite(values)) and np.all(values > 0), col
    np.testing.assert_array_equal(steps.column("tokens").to_numpy(), 64 * 1024)
    dt = steps.column("step_time_s").to_numpy()
    np.testing.assert_allclose(steps.column("tokens_per_s").to_numpy(), 64 * 1024 / dt, rtol=1e-12)
    assert np.all(steps.column("mfu").to_numpy() < 1.0)


def test_gpus_table_has_one_row_per_gpu(run_dir: Path) -> None:
    gpus = read_ipc(run_dir / "gpus.arrow")
    assert gpus.num_rows == 64
    np.testing.assert_array_equal(gpus.column("gpu").to_numpy(), np.arange(64))
    np.testing.assert_array_equal(gpus.column("node").to_numpy(), np.arange(64) // 8)
    np.testing.assert_array_equal(gpus.column("pp_stage").to_numpy(), np.arange(64) // 32)
    assert set(gpus.column("gpu_type").to_pylist()) == {"h100"}
    assert int(gpus.column("failures").to_numpy().sum()) == 0
    assert np.all(gpus.column("energy_j").to_numpy() > 0)


def test_events_table(run_dir: Path) -> None:
    events = read_ipc(run_dir / "events.arrow")
    kinds = events.column("kind").to_pylist()
    assert kinds == ["checkpoint"] * 6
    assert events.column("step").to_pylist() == [10, 20, 30, 40, 50, 60]
    assert np.all(np.diff(events.column("time_s").to_numpy()) > 0)


@pytest.mark.parametrize("name", TABLES)
def test_schema_metadata_carries_version_and_config(run_dir: Path, name: str) -> None:
    meta = read_ipc(run_dir / f"{name}.arrow").schema.metadata
    assert meta is not None
    assert meta[b"emulator_version"].decode() == emulator.__version__
    config = json.loads(meta[b"config"])
    assert config["model"]["name"] == "tiny"
    assert config["run"]["steps"] == STEPS
    assert config["cluster"]["num_gpus"] == 64


def test_summary_has_the_fleet_and_power_keys(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["fleet"]) >= FLEET_KEYS
    assert set(summary["power"]) >= POWER_KEYS
    fleet = summary["fleet"]
    assert fleet["steps"] == STEPS
    assert fleet["interruptions"] == 0
    assert 0.0 < fleet["goodput"] <= 1.0
    assert fleet["p99_step_time_s"] >= fleet["mean_step_time_s"] * 0.99
    steps = read_ipc(run_dir / "steps.arrow")
    assert fleet["mean_step_time_s"] == pytest.approx(float(np.mean(steps.column("step_time_s").to_numpy())),
                                                      rel=1e-9)
    assert summary["power"]["peak_facility_mw"] >= summary["power"]["mean_facility_mw"] > 0
    assert summary["power"]["energy_mwh"] > 0
    assert summary["config"]["model"]["name"] == "tiny"


def test_read_run_reads_the_finished_files(run_dir: Path) -> None:
    tables = read_run(run_dir)
    assert set(tables) == set(TABLES)
    for name in TABLES:
        assert tables[name].equals(read_ipc(run_dir / f"{name}.arrow"))


def test_zero_steps_writes_no_arrow_file(tmp_path: Path) -> None:
    proc = cli([*SMALL, "run.steps=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert (run / "summary.json").is_file()
    assert not list(run.glob("*.arrow*"))
    summary = json.loads((run / "summary.json").read_text())
    assert "fleet" not in summary and "power" not in summary
