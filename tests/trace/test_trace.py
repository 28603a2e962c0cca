"""The step trace (emulator/report/trace.py): Trace Event Format, lanes, slots, span, nesting, mixed clusters."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from emulator.app import evaluate_nominal
from emulator.config.compose import compose_config
from emulator.config.job import build_job
from emulator.cost.step import NominalResult
from emulator.report.trace import _interleaved_plan, _place, _plain_plan, build_trace, write_trace
from emulator.spec import JobSpec

TINY = ["model=tiny", "cluster=single_node", "cluster.num_gpus=64", "parallel=default", "parallel.tp=2",
        "parallel.pp=4", "train.seq_len=1024", "train.global_batch=64", "run.steps=0"]
MIXED = ["cluster=colossus_200k", "cluster.num_gpus=256", "cluster.pools=[{gpu: h100, num_gpus: 192}, "
         "{gpu: h200, num_gpus: 64}]", "model=tiny", "parallel=default", "parallel.tp=2", "parallel.pp=4",
         "train.seq_len=1024", "train.global_batch=64", "run.steps=0"]
JOBS = {
    "tiny_1f1b": TINY,
    # the tiny model has 4 layers: pp x vpp <= 4
    "tiny_interleaved": [*TINY, "parallel.pp=2", "parallel.vpp=2"],
    "tiny_no_pp_overlap_full_recompute": [*TINY, "parallel.pp_comm_overlap=false", "parallel.recompute=full"],
    "default_grok2": ["run.steps=0"],  # grok2, tp8 cp4 ep8 etp4, no pipeline, 20k H100
    "mixed": MIXED,
}
SLOT_CATS = {"forward", "backward"}
NESTED_CATS = {"comm", "host"}

NAME_ARGS = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}
SORT_ARGS = {"type": "object", "required": ["sort_index"], "properties": {"sort_index": {"type": "integer"}}}
SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Trace Event Format (JSON Object Format), the subset the step trace emits",
    "type": "object",
    "required": ["traceEvents", "displayTimeUnit", "metadata"],
    "properties": {
        "traceEvents": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/event"}},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "metadata": {"type": "object"},
    },
    "definitions": {
        "event": {
            "type": "object",
            "required": ["name", "ph", "pid", "tid"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "ph": {"enum": ["X", "M"]},
                "pid": {"type": "integer", "minimum": 0},
                "tid": {"type": "integer", "minimum": 0},
                "cat": {"type": "string", "minLength": 1},
                "args": {"type": "object"},
            },
            "allOf": [
                {
                    "if": {"properties": {"ph": {"const": "X"}}},
                    "then": {
                        "required": ["ts", "dur", "cat"],
                        "properties": {"ts": {"type": "number", "minimum": 0}, "dur": {"type": "number", "minimum": 0}},
                    },
                },
                {
                    "if": {"properties": {"ph": {"const": "M"}}},
                    "then": {
                        "required": ["args"],
                        "properties": {"name": {"enum": ["process_name", "thread_name", "process_sort_index",
                                                         "thread_sort_index"]}},
                        "if": {"properties": {"name": {"enum": ["process_name", "thread_name"]}}},
                        "then": {"properties": {"args": NAME_ARGS}},
                        "else": {"properties": {"args": SORT_ARGS}},
                    },
                },
            ],
        },
    },
}


@dataclass(frozen=True)
class Traced:
    job: JobSpec
    res: NominalResult
    path: Path
    trace: dict[str, Any]

    @property
    def m(self) -> int:
        return self.job.train.global_batch // (self.job.parallel.dp * self.job.parallel.micro_batch)

    @property
    def step(self) -> float:
        return float(self.res.step_time_s_L[0])

    def slices(self, pid: int | None = None, tid: int | None = None) -> list[dict[str, Any]]:
        return [e for e in self.trace["traceEvents"] if e["ph"] == "X" and (pid is None or e["pid"] == pid)
                and (tid is None or e["tid"] == tid)]

    def pids(self) -> list[int]:
        return sorted({e["pid"] for e in self.trace["traceEvents"]})


@pytest.fixture(scope="module", params=list(JOBS))
def traced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Traced:
    job = build_job(compose_config(JOBS[request.param]))
    res = evaluate_nominal(job)
    path = write_trace(job, res, tmp_path_factory.mktemp("trace") / "sub" / "step_trace.json")
    return Traced(job, res, path, json.loads(path.read_text()))


def _ns(x: float) -> int:
    return round(x * 1000.0)


# ---------------------------------------------------------------- format


def test_trace_opens_as_json_and_matches_schema(traced: Traced) -> None:
    assert traced.path.name == "step_trace.json" and traced.path.is_file()
    data = json.loads(traced.path.read_text())
    assert data["displayTimeUnit"] == "ms"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(data, SCHEMA, cls=jsonschema.Draft7Validator)
    assert data["metadata"]["step_time_s"] == pytest.approx(traced.step, rel=1e-12)


def test_schema_rejects_what_the_format_does_not_allow() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    ok = {"name": "F0", "cat": "forward", "ph": "X", "ts": 0.0, "dur": 1.0, "pid": 1, "tid": 0, "args": {}}
    assert validator.is_valid({"traceEvents": [ok], "displayTimeUnit": "ms", "metadata": {}})
    bad_events = [
        {**ok, "ts": -1.0},
        {**ok, "dur": -0.5},
        {k: v for k, v in ok.items() if k != "dur"},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {}},
        {"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "x"}},
    ]
    for bad in bad_events:
        assert not validator.is_valid({"traceEvents": [bad], "displayTimeUnit": "ms", "metadata": {}}), bad


# ---------------------------------------------------------------- processes, lanes, slots


def test_one_lane_per_stage_in_every_process(traced: Traced) -> None:
    pp = traced.job.parallel.pp
    events = traced.trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert set(names) == set(traced.pids())
    assert len(names) == len(traced.res.by_gpu_type)
    for pid in traced.pids():
        lanes = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name" and e["pid"] == pid}
        assert sorted(lanes) == list(range(pp))
        assert {e["tid"] for e in traced.slices(pid)} == set(range(pp))


def test_every_lane_has_m_forward_and_m_backward_slots(traced: Traced) -> None:
    p = traced.job.parallel
    expected = sorted(itertools.product(range(traced.m), range(p.vpp)))
    for pid in traced.pids():
        for tid in range(p.pp):
            lane = traced.slices(pid, tid)
            for cat in SLOT_CATS:
                slots = [e for e in lane if e["cat"] == cat]
                assert len(slots) == traced.m * p.vpp, (pid, tid, cat)
                got = sorted((e["args"]["micro_batch"], e["args"].get("chunk", 0)) for e in slots)
                assert got == expected


def test_span_is_the_nominal_step(traced: Traced) -> None:
    step_us = traced.step * 1e6
    for pid in traced.pids():  # every process (GPU type) ends at the pace-setting type's step
        xs = traced.slices(pid)
        start = min(e["ts"] for e in xs)
        end = max(e["ts"] + e["dur"] for e in xs)
        assert start == 0.0
        assert end - start == pytest.approx(step_us, rel=1e-6)


def test_slices_on_a_lane_never_overlap_except_nested_comm(traced: Traced) -> None:
    """Sweep each lane in start order: a slice either starts after the open one ends or nests inside a slot."""
    for pid in traced.pids():
        for tid in range(traced.job.parallel.pp):
            lane = sorted(traced.slices(pid, tid), key=lambda e: (_ns(e["ts"]), -_ns(e["dur"])))
            assert lane
            open_slot: dict[str, Any] | None = None
            last_end = 0
            nested = 0
            for e in lane:
                a, b = _ns(e["ts"]), _ns(e["ts"]) + _ns(e["dur"])
                assert b > a, e
                if open_slot is not None and a < _ns(open_slot["ts"]) + _ns(open_slot["dur"]):
                    assert e["cat"] in NESTED_CATS, (e, open_slot)
                    assert b <= _ns(open_slot["ts"]) + _ns(open_slot["dur"]), (e, open_slot)
                    assert e["args"]["parent"] == open_slot["name"]
                    assert a >= last_end, e  # nested slices do not overlap one another
                    last_end = b
                    nested += 1
                    continue
                assert a >= last_end, (e, last_end)  # top level: after everything before it
                assert "parent" not in e["args"], e  # a nested slice outside its slot
                open_slot = e if e["cat"] in SLOT_CATS else None
                last_end = a if open_slot is not None else b
            assert nested == sum(1 for e in lane if "parent" in e["args"])


def test_slot_times_and_bubble_follow_the_model(traced: Traced) -> None:
    """Per lane: slots add up to m t_fb; the last lane to finish ends at steady + bubble + pp_comm."""
    p = traced.job.parallel
    per_type = traced.trace["metadata"]["gpu_types"]
    for name, st in traced.res.by_gpu_type.items():
        pid = per_type[name]["pid"]
        b = {k: float(v[0]) for k, v in st.breakdown_s.items()}
        steady = b["compute"] + b["tp_comm"] + b["cp_comm"] + b["ep_comm"] + b["other"]
        n_slots = 2 * traced.m * p.vpp
        sends = b["pp_comm"] if not p.pp_comm_overlap else 0.0
        sends *= (n_slots / 2) / (traced.m * p.vpp + p.pp - 1) if p.pp > 1 else 0.0
        ratio = 1.0 / 3.0 if p.recompute == "full" else 0.5
        last_slot_end = 0.0
        for tid in range(p.pp):
            slots = [e for e in traced.slices(pid, tid) if e["cat"] in SLOT_CATS]
            busy = sum(e["dur"] for e in slots) * 1e-6
            assert busy == pytest.approx(steady + sends, abs=n_slots * 1e-9)
            fwd = [e["dur"] for e in slots if e["cat"] == "forward"]
            bwd = [e["dur"] for e in slots if e["cat"] == "backward"]
            if sends == 0.0:
                assert sum(fwd) / sum(bwd) == pytest.approx(ratio, rel=1e-5)
            last_slot_end = max(last_slot_end, max(e["ts"] + e["dur"] for e in slots) * 1e-6)
        bubble_and_pp = b["bubble"] + b["pp_comm"]
        assert last_slot_end == pytest.approx(steady + bubble_and_pp, rel=1e-6)
        tail = {e["args"]["kind"]: e["dur"] * 1e-6 for e in traced.slices(pid, 0) if e["cat"] in
                {"optimizer", "wait"} or e["name"].startswith("DP ")}
        assert tail.get("dp_comm", 0.0) == pytest.approx(b["dp_comm"], abs=1e-9)
        assert tail["optimizer"] == pytest.approx(b["optimizer"], abs=1e-9)
        assert tail.get("wait", 0.0) == pytest.approx(traced.step - float(st.step_time_s_L[0]), abs=1e-9)


def test_exposed_comm_is_drawn(traced: Traced) -> None:
    p = traced.job.parallel
    xs = traced.slices()
    kinds = {e["args"].get("kind") for e in xs if e["cat"] == "comm"}
    assert "tp_comm" in kinds  # tp = 2 or 8 everywhere here
    assert ("pp_comm" in kinds) == (p.pp > 1)
    recv = [e for e in xs if e["name"].startswith("PP recv")]
    if p.pp_comm_overlap:
        # the first micro-batch's activations down, the last gradients back up: 2 (pp - 1) per process
        assert len(recv) == 2 * (p.pp - 1) * len(traced.pids())
    else:
        assert not recv


# ---------------------------------------------------------------- jobs


def test_schedule_names(traced: Traced) -> None:
    p = traced.job.parallel
    names = {v["schedule"] for v in traced.trace["metadata"]["gpu_types"].values()}
    if p.vpp == 1:
        assert names == {"1F1B"}
    elif traced.m % p.pp == 0:
        assert names == {"interleaved 1F1B"}
    else:
        assert len(names) == 1 and "approximated" in names.pop()


def test_mixed_cluster_gives_one_process_per_gpu_type(tmp_path: Path) -> None:
    job = build_job(compose_config(MIXED))
    res = evaluate_nominal(job)
    data = json.loads(write_trace(job, res, tmp_path / "t.json").read_text())
    names = sorted(e["args"]["name"] for e in data["traceEvents"] if e["name"] == "process_name")
    assert len(names) == 2
    assert names[0].startswith("h100 (192 GPUs)") and names[1].startswith("h200 (64 GPUs)")
    assert sum("sets the pace" in n for n in names) == 1
    slower = res.pace_gpu_type
    faster = next(n for n in res.by_gpu_type if n != slower)
    pid = data["metadata"]["gpu_types"][faster]["pid"]
    waits = [e for e in data["traceEvents"] if e["ph"] == "X" and e["pid"] == pid and e["cat"] == "wait"]
    assert len(waits) == job.parallel.pp


def test_one_gpu_type_only(tmp_path: Path) -> None:
    job = build_job(compose_config(MIXED))
    res = evaluate_nominal(job)
    data = json.loads(write_trace(job, res, tmp_path / "t.json", gpu_type="h200").read_text())
    assert {e["pid"] for e in data["traceEvents"]} == {1}
    assert list(data["metadata"]["gpu_types"]) == ["h200"]
    with pytest.raises(ValueError, match="b200"):
        build_trace(job, res, gpu_type="b200")


# ---------------------------------------------------------------- the list schedule itself


@pytest.mark.parametrize(("pp", "m", "vpp"), [(pp, m, vpp) for pp, m, vpp in itertools.product(
    (1, 2, 3, 4, 8), (1, 2, 3, 4, 8, 12), (1, 2, 4)) if vpp == 1 or pp > 1])
def test_list_schedule_reproduces_the_model(pp: int, m: int, vpp: int) -> None:
    """Equal stages: makespan m t_fb + (pp - 1) t_fb / vpp + 2 (pp - 1) hops, for every plan that applies."""
    t_f, t_b, hop = 1.0 / 3.0 / vpp, 2.0 / 3.0 / vpp, 0.01
    plans = [_plain_plan(pp, m, vpp)]
    if vpp > 1 and m % pp == 0:
        plans.append(_interleaved_plan(pp, m, vpp))
    for plan in plans:
        placed = _place(plan, pp, t_f, t_b, hop)
        assert max(x.end for x in placed) == pytest.approx(m + (pp - 1) / vpp + 2 * (pp - 1) * hop, rel=1e-12)
        per_lane: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for x in placed:
            per_lane[x.lane].append((x.start, x.end))
        for spans in per_lane.values():
            assert len(spans) == 2 * m * vpp
            assert all(b[0] >= a[1] - 1e-12 for a, b in itertools.pairwise(spans))
