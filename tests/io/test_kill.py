"""A run killed with SIGKILL leaves complete batches readable and nothing that looks finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from emulator.io.arrow import EVENTS_SCHEMA, STEPS_SCHEMA, StreamWriter, apply_lost_attempts, read_run, read_stream

from ..fleet.helpers import SMALL, merged

BATCH = 64
KILL_AFTER_ROWS = 3 * BATCH


def rows_in(part: Path) -> int:
    try:
        return read_stream(part, STEPS_SCHEMA).num_rows
    except (pa.ArrowInvalid, OSError):
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_leaves_complete_batches_and_no_summary(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = merged(SMALL, ["run.steps=2000000", f"run.steps_per_batch={BATCH}", "reliability=none"])
    proc = subprocess.Popen([sys.executable, "-m", "emulator", *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = run / "steps.arrow.part"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            if part.exists() and rows_in(part) >= KILL_AFTER_ROWS:
                break
            time.sleep(0.02)
        else:
            pytest.fail("steps.arrow.part never reached 3 batches")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists(), "a killed run must not look complete"
    assert not (run / "steps.arrow").exists()
    assert not (run / "gpus.arrow").exists()
    assert part.exists()

    tables = read_run(run)
    steps = tables["steps"]
    assert steps.num_rows >= KILL_AFTER_ROWS
    assert steps.num_rows % BATCH == 0, "only complete batches are read"
    np.testing.assert_array_equal(steps.column("attempt").to_numpy(), np.arange(steps.num_rows))
    np.testing.assert_array_equal(steps.column("step").to_numpy(), np.arange(1, steps.num_rows + 1))
    assert steps.schema.remove_metadata() == STEPS_SCHEMA
    assert b"config" in (steps.schema.metadata or {})
    assert "gpus" not in tables
    assert tables["events"].schema.remove_metadata() == EVENTS_SCHEMA


def write_batches(path: Path, n: int) -> tuple[StreamWriter, list[int]]:
    """A StreamWriter with ``n`` batches of 10 rows; the file size after each batch."""
    schema = pa.schema([("attempt", pa.int64()), ("value", pa.float64()), ("kept", pa.bool_())])
    writer = StreamWriter(path, schema)
    sizes = []
    for b in range(n):
        attempt = np.arange(10 * b, 10 * (b + 1))
        writer.append({"attempt": attempt, "value": attempt * 0.5, "kept": attempt % 3 > 0})
        sizes.append(writer.part.stat().st_size)
    return writer, sizes


def test_stream_cut_in_the_last_batch_reads_the_complete_ones(tmp_path: Path) -> None:
    writer, sizes = write_batches(tmp_path / "t.arrow", 3)
    # Killed mid-write: the stream holds two whole batches and part of the third (no end-of-stream marker).
    cut = (sizes[1] + sizes[2]) // 2
    with writer.part.open("r+b") as fh:
        fh.truncate(cut)
    table = read_stream(writer.part, writer.schema)
    assert table.num_rows == 20
    np.testing.assert_array_equal(table.column("attempt").to_numpy(), np.arange(20))
    assert table.schema == writer.schema


def test_stream_cut_at_a_batch_boundary(tmp_path: Path) -> None:
    writer, sizes = write_batches(tmp_path / "t.arrow", 3)
    with writer.part.open("r+b") as fh:
        fh.truncate(sizes[1])
    assert read_stream(writer.part, writer.schema).num_rows == 20


def test_stream_cut_inside_the_schema_gives_an_empty_table(tmp_path: Path) -> None:
    writer, _ = write_batches(tmp_path / "t.arrow", 1)
    with writer.part.open("r+b") as fh:
        fh.truncate(10)
    table = read_stream(writer.part, writer.schema)
    assert table.num_rows == 0
    assert table.schema == writer.schema


def test_stream_cut_without_a_schema_argument_reads_the_complete_batches(tmp_path: Path) -> None:
    writer, sizes = write_batches(tmp_path / "t.arrow", 3)
    with writer.part.open("r+b") as fh:
        fh.truncate((sizes[1] + sizes[2]) // 2)
    assert read_stream(writer.part).num_rows == 20


def test_finalize_turns_the_stream_into_an_ipc_file(tmp_path: Path) -> None:
    writer, _ = write_batches(tmp_path / "t.arrow", 3)
    path = writer.finalize(lambda t: t.slice(5))
    assert path == tmp_path / "t.arrow"
    assert not writer.part.exists()
    assert not list(tmp_path.glob(".*.tmp"))
    table = pa.ipc.open_file(str(path)).read_all()
    np.testing.assert_array_equal(table.column("attempt").to_numpy(), np.arange(5, 30))


def test_apply_lost_attempts_marks_each_failure_range() -> None:
    steps = pa.table({f.name: pa.array(np.zeros(12), type=f.type) for f in STEPS_SCHEMA}, schema=STEPS_SCHEMA)
    steps = steps.set_column(0, "attempt", pa.array(np.arange(12), pa.int64()))
    steps = steps.set_column(STEPS_SCHEMA.get_field_index("kept"), "kept", pa.array(np.ones(12, dtype=bool)))
    rows = [("checkpoint", 3, -1), ("failure", 6, 4), ("restart", 6, -1), ("failure", 10, 9)]
    events = pa.table({
        "time_s": [1.0, 2.0, 3.0, 4.0], "step": [4, 7, 4, 9], "kind": [r[0] for r in rows], "gpu": [-1, 3, -1, 5],
        "node": [-1, 0, -1, 0], "lost_s": [0.0, 1.0, 0.0, 1.0], "attempt": [r[1] for r in rows],
        "first_lost_attempt": [r[2] for r in rows], "detail": ["", "gpu", "", "hbm"],
    }, schema=EVENTS_SCHEMA)
    kept = apply_lost_attempts(steps, events).column("kept").to_pylist()
    assert kept == [True, True, True, True, False, False, False, True, True, False, False, True]
    assert apply_lost_attempts(steps, events.slice(0, 0)).equals(steps)
