"""Arrow outputs: streamed while the run goes, finalised into IPC files when it ends cleanly.

During a run each table is an Arrow IPC *stream* (``NAME.arrow.part``): every appended batch is a
complete message, so a run killed at any moment (even kill -9) leaves every finished batch
readable. A clean run rewrites each stream as an IPC *file* (``NAME.arrow``, readable by
``pyarrow.ipc.open_file``, ``pyarrow.dataset`` and ``polars.scan_ipc``) and removes the stream.
Schema metadata carries the resolved config and the emulator version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import ipc

from emulator import __version__

PART = ".part"

STEPS_SCHEMA = pa.schema([
    ("attempt", pa.int64()), ("step", pa.int64()), ("wall_time_s", pa.float64()), ("step_time_s", pa.float64()),
    ("tokens", pa.int64()), ("tokens_per_s", pa.float64()), ("mfu", pa.float64()),
    ("facility_power_mw", pa.float64()), ("facility_peak_mw", pa.float64()), ("clock_factor", pa.float64()),
    ("kept", pa.bool_()),
])
EVENTS_SCHEMA = pa.schema([
    ("time_s", pa.float64()), ("step", pa.int64()), ("kind", pa.string()), ("gpu", pa.int64()), ("node", pa.int64()),
    ("lost_s", pa.float64()), ("attempt", pa.int64()), ("first_lost_attempt", pa.int64()), ("detail", pa.string()),
])
GPUS_SCHEMA = pa.schema([
    ("gpu", pa.int64()), ("node", pa.int64()), ("gpu_type", pa.dictionary(pa.int8(), pa.string())),
    ("pp_stage", pa.int64()), ("speed_factor", pa.float64()), ("busy_s", pa.float64()),
    ("hbm_peak_bytes", pa.float64()), ("energy_j", pa.float64()), ("failures", pa.int64()),
])


def with_metadata(schema: pa.Schema, config: dict[str, Any]) -> pa.Schema:
    return schema.with_metadata({"emulator_version": __version__, "config": json.dumps(config, default=str)})


class StreamWriter:
    """Appends record batches to ``path.part`` as an IPC stream; ``finalize`` turns it into ``path``."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.part = path.with_name(path.name + PART)
        self.schema = schema
        self._sink = pa.OSFile(str(self.part), "wb")
        self._writer = ipc.new_stream(self._sink, schema)

    def append(self, columns: dict[str, Any]) -> None:
        batch = pa.record_batch([pa.array(columns[f.name], type=f.type) for f in self.schema], schema=self.schema)
        self._writer.write_batch(batch)
        self._sink.flush()

    def close(self) -> None:
        self._writer.close()
        self._sink.close()

    def finalize(self, transform: Any = None) -> Path:
        """Close the stream and write the IPC file atomically (``transform`` may edit the table first)."""
        self.close()
        table = read_stream(self.part, self.schema)
        if transform is not None:
            table = transform(table)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, self.path)
        self.part.unlink()
        return self.path


def write_table(path: Path, schema: pa.Schema, columns: dict[str, Any]) -> None:
    """Write a whole table as an IPC file, atomically."""
    table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_stream(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """Every complete batch of an IPC stream, even one cut off mid-write (a killed run)."""
    batches = []
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = ipc.open_stream(source)
            read_schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError):  # a batch cut off by a killed writer: keep the rest
                    break
    except (pa.ArrowInvalid, OSError):
        read_schema = schema
        if read_schema is None:
            raise
    return pa.Table.from_batches(batches, schema=read_schema if batches or read_schema else schema)


def apply_lost_attempts(steps: pa.Table, events: pa.Table) -> pa.Table:
    """Mark attempts lost to a later failure (their batch was written before the failure happened)."""
    if events.num_rows == 0 or steps.num_rows == 0:
        return steps
    kinds = events.column("kind").to_numpy(zero_copy_only=False)
    first = events.column("first_lost_attempt").to_numpy()[kinds == "failure"]
    last = events.column("attempt").to_numpy()[kinds == "failure"]
    attempt = steps.column("attempt").to_numpy()
    kept = steps.column("kept").to_numpy(zero_copy_only=False).copy()
    for lo, hi in zip(first, last, strict=True):
        kept[(attempt >= lo) & (attempt <= hi)] = False
    return steps.set_column(steps.schema.get_field_index("kept"), "kept", pa.array(kept))


def read_run(run_dir: Path | str) -> dict[str, pa.Table]:
    """The tables of a run directory: finished IPC files, or the streams of a run still going or killed."""
    run = Path(run_dir)
    out: dict[str, pa.Table] = {}
    for name, schema in (("steps", STEPS_SCHEMA), ("events", EVENTS_SCHEMA), ("gpus", GPUS_SCHEMA)):
        final, part = run / f"{name}.arrow", run / f"{name}.arrow{PART}"
        if final.exists():
            with pa.memory_map(str(final), "r") as source:
                out[name] = ipc.open_file(source).read_all()
        elif part.exists():
            out[name] = read_stream(part, schema)
    if "steps" in out and "events" in out and (run / f"steps.arrow{PART}").exists():
        out["steps"] = apply_lost_attempts(out["steps"], out["events"])
    return out
