"""Step trace: one nominal training step as Chrome trace / Perfetto JSON (the Trace Event Format).

``write_trace(job, nominal_result, path)`` writes ``{"traceEvents": [...], "displayTimeUnit": "ms",
"metadata": {...}}``, which opens in https://ui.perfetto.dev and chrome://tracing:

- one process per GPU type (one for a homogeneous cluster), each with its own stage times
  (``NominalResult.by_gpu_type``);
- one thread (lane) per pipeline stage, ``tid = stage``;
- complete events (``"ph": "X"``, ``ts``/``dur`` in microseconds): the forward (``F<mb>``) and backward
  (``B<mb>``) slot of every micro-batch (``F<mb>c<chunk>`` per model chunk when ``vpp > 1``), the exposed
  TP/CP/EP communication and host-launch wait of the slot as nested slices at its end (cat ``comm``/``host``),
  exposed pipeline receives before a slot (cat ``comm``), then per lane the data-parallel sync wait of a
  non-pace GPU type (cat ``wait``), the exposed data-parallel communication (cat ``comm``) and the optimizer
  step (cat ``optimizer``). The pipeline bubble is the idle time between slices.
- metadata events (``"ph": "M"``) name the processes and lanes and fix their order.

Slot durations (the model of :mod:`emulator.cost.step`, whose heaviest stage sets the pace of every stage):
one micro-batch takes ``t_fb = (compute + tp_comm + cp_comm + ep_comm + other) / m`` on every stage,
``m = global_batch / (dp * micro_batch)``. It is split forward:backward 1:2 (the backward runs two GEMMs of
the forward's size per forward GEMM: data and weight gradients); with full recompute the backward also
re-runs the forward, 1:3. Selective recompute is drawn 1:2 (its recompute is small). The exposed
communication and host wait of a slot are the same share of the per-micro-batch totals.

Schedule: an event-driven list schedule of the 1F1B order of Megatron-Core (Narayanan et al. 2021, Sec. 2.2):
each lane runs its passes in a fixed order, each pass starting when the lane is free and its input has arrived
(forward from the previous stage, backward from the next). Stage ``s`` runs ``min(pp - 1 - s, m)`` warm-up
forwards, then 1F1B pairs, then cool-down backwards. With equal stage times this gives ``m * t_fb`` of work and
``(pp - 1) * t_fb`` of bubble per lane, as the model has it. With ``vpp > 1`` the lanes run Megatron-Core's
interleaved order (warm-up ``2 (pp - 1 - s) + (vpp - 1) pp`` chunk passes, chunk ``c`` of stage ``s`` being
virtual stage ``c pp + s``), whose bubble is ``(pp - 1) / vpp * t_fb``; where that order does not reproduce the
model (``m`` not a multiple of ``pp``, which Megatron-Core and the validation gate reject), the lanes run
plain 1F1B over the ``m vpp`` chunk passes, which has the same totals and bubble but ignores the wrap-around
from the last stage back to the first (the metadata says which schedule was drawn).

Pipeline communication: with ``pp_comm_overlap`` only the ``2 (pp - 1)`` warm-up and cool-down transfers are
exposed (``pp_comm / (2 (pp - 1))`` each): the first micro-batch's activations on its way down the pipeline and
the last micro-batch's gradients on their way back, drawn as receive slices on the waiting lane. Without the
overlap every transfer is exposed; each pass then ends with its send (nested). Either way the step is
``m t_fb + bubble + pp_comm``, then ``dp_comm + optimizer`` after each lane's last backward. For a GPU type that
does not set the pace, a sync wait (``pace step - own step``) precedes the data-parallel communication, so that
every process ends at the pace-setting type's step: the trace spans ``NominalResult.step_time_s_L[0]``.

Times are rounded to whole nanoseconds (three decimals of a microsecond, like PyTorch profiler traces) at the
slice boundaries, so that nested slices stay exactly inside their parent; the span is exact to 1 ns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.cost.step import NominalResult, StepTime
from emulator.spec import JobSpec

FORWARD_SHARE = {"none": 1.0 / 3.0, "selective": 1.0 / 3.0, "full": 1.0 / 4.0}
"""Forward part of one micro-batch's forward + backward, by ``parallel.recompute``."""
SLOT_PARTS = (
    ("tp_comm", "TP comm (exposed)", "comm"),
    ("cp_comm", "CP ring exchange (exposed)", "comm"),
    ("ep_comm", "EP all-to-all (exposed)", "comm"),
    ("other", "host launch wait", "host"),
)
"""Per micro-batch parts of the breakdown drawn nested at the end of each slot: key, slice name, cat."""
SCHEDULE_REL_TOL = 1e-9
"""How closely the drawn schedule must reproduce the model's steady + bubble + pp_comm."""

Key = tuple[str, int, int]
"""One pass: ("F" or "B", position in the pipeline of virtual stages, item: micro-batch or chunk-pass index)."""


@dataclass(frozen=True)
class _Plan:
    """A pass order per lane, and how it maps onto the model."""

    name: str
    orders: list[list[Key]]
    positions: int
    """Pipeline positions: pp * vpp virtual stages (interleaved) or pp (plain 1F1B)."""
    label: Callable[[Key], tuple[int, int]]
    """Pass -> (micro-batch, model chunk)."""
    first_item: int
    last_item: int


@dataclass(frozen=True)
class _Placed:
    key: Key
    lane: int
    start: float
    end: float
    recv_from: float | None
    """Start of the exposed pipeline receive that the pass waited for (None: no exposed receive)."""


def _one_f_one_b(warmup: int, total: int) -> list[tuple[str, int]]:
    """Pass order of one lane: ``warmup`` forwards, then forward/backward pairs, then the remaining backwards."""
    w = min(warmup, total)
    order = [("F", k) for k in range(w)]
    for k in range(total - w):
        order += [("F", k + w), ("B", k)]
    order += [("B", k) for k in range(total - w, total)]
    return order


def _plain_plan(pp: int, m: int, vpp: int) -> _Plan:
    """1F1B over ``m * vpp`` passes per lane (vpp = 1: the 1F1B schedule itself)."""
    units = m * vpp
    labels = [(mb, c) for g in range(0, m, pp) for c in range(vpp) for mb in range(g, min(g + pp, m))]
    orders = [[(kind, s, k) for kind, k in _one_f_one_b(pp - 1 - s, units)] for s in range(pp)]
    name = "1F1B" if vpp == 1 else "interleaved 1F1B approximated as 1F1B over chunk passes"
    return _Plan(name, orders, pp, lambda key: labels[key[2]], 0, units - 1)


def _interleaved_plan(pp: int, m: int, vpp: int) -> _Plan:
    """Megatron-Core's interleaved 1F1B (forward_backward_pipelining_with_interleaving), m a multiple of pp."""
    total = m * vpp

    def pass_of(k: int, forward: bool) -> tuple[int, int]:
        group, r = divmod(k, pp * vpp)
        chunk = r // pp
        return group * pp + r % pp, chunk if forward else vpp - 1 - chunk

    orders = []
    for s in range(pp):
        order: list[Key] = []
        for kind, k in _one_f_one_b(2 * (pp - 1 - s) + (vpp - 1) * pp, total):
            mb, chunk = pass_of(k, kind == "F")
            order.append((kind, chunk * pp + s, mb))
        orders.append(order)
    return _Plan("interleaved 1F1B", orders, pp * vpp, lambda key: (key[2], key[1] // pp), 0, m - 1)


def _place(plan: _Plan, pp: int, t_f: float, t_b: float, hop_s: float) -> list[_Placed]:
    """Earliest start of every pass given the lane orders; ``hop_s``: exposed warm-up/cool-down transfer."""
    done: dict[Key, float] = {}
    placed: list[_Placed] = []
    nxt, free = [0] * pp, [0.0] * pp
    left = sum(len(o) for o in plan.orders)
    while left:
        progressed = False
        for s in range(pp):
            order = plan.orders[s]
            while nxt[s] < len(order):
                key = order[nxt[s]]
                kind, pos, item = key
                latency = 0.0
                dep: Key | None
                if kind == "F":
                    dep = ("F", pos - 1, item) if pos > 0 else None
                    if dep is not None and pos < pp and item == plan.first_item:
                        latency = hop_s  # warm-up: the first micro-batch on its way down the pipeline
                elif pos < plan.positions - 1:
                    dep = ("B", pos + 1, item)
                    if pos + 1 < pp and item == plan.last_item:
                        latency = hop_s  # cool-down: the last gradients on their way back
                else:
                    dep = ("F", pos, item)
                if dep is not None and dep not in done:
                    break
                arrival = done[dep] + latency if dep is not None else 0.0
                start = max(free[s], arrival)
                recv = max(free[s], done[dep]) if dep is not None and latency > 0.0 and arrival > free[s] else None
                end = start + (t_f if kind == "F" else t_b)
                done[key] = end
                placed.append(_Placed(key, s, start, end, recv))
                free[s] = end
                nxt[s] += 1
                left -= 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"{plan.name}: the pass order deadlocks")
    return placed


@dataclass(frozen=True)
class _TypeTimes:
    """One GPU type's per-pass times, from its breakdown."""

    m: int
    fwd_share: float
    t_f: float
    t_b: float
    """Per chunk pass (1/vpp of a micro-batch), sends included where every transfer is exposed."""
    send_s: float
    """Nested exposed send at the end of every pass (pp_comm_overlap off)."""
    hop_s: float
    """Exposed warm-up / cool-down transfer (pp_comm_overlap on)."""
    parts: dict[str, float]
    """Per micro-batch seconds of each breakdown key."""
    steady_end: float
    """Model's m t_fb + bubble + pp_comm."""


def _times(job: JobSpec, st: StepTime) -> _TypeTimes:
    p = job.parallel
    m = job.train.global_batch // (p.dp * p.micro_batch)
    parts = {k: float(v[0]) / m for k, v in st.breakdown_s.items()}
    t_fb = parts["compute"] + sum(parts[k] for k, _, _ in SLOT_PARTS)
    share = FORWARD_SHARE[p.recompute]
    pp_comm = float(st.breakdown_s["pp_comm"][0])
    send = hop = 0.0
    if p.pp > 1:
        if p.pp_comm_overlap:
            hop = pp_comm / (2.0 * (p.pp - 1))
        else:
            send = pp_comm / (2.0 * (m * p.vpp + p.pp - 1))
    steady_end = float(st.step_time_s_L[0]) - float(st.breakdown_s["dp_comm"][0]) \
        - float(st.breakdown_s["optimizer"][0])
    return _TypeTimes(m, share, share * t_fb / p.vpp + send, (1.0 - share) * t_fb / p.vpp + send, send, hop, parts,
                      steady_end)


def _schedule(job: JobSpec, tt: _TypeTimes) -> tuple[_Plan, list[_Placed]]:
    """The first plan whose lanes reproduce the model's steady + bubble + pp_comm."""
    p = job.parallel
    plans = []
    if p.vpp > 1 and tt.m % p.pp == 0:
        plans.append(_interleaved_plan(p.pp, tt.m, p.vpp))
    plans.append(_plain_plan(p.pp, tt.m, p.vpp))
    span = 0.0
    for plan in plans:
        placed = _place(plan, p.pp, tt.t_f, tt.t_b, tt.hop_s)
        span = max(x.end for x in placed)
        if abs(span - tt.steady_end) <= SCHEDULE_REL_TOL * tt.steady_end:
            return plan, placed
    raise RuntimeError(f"pipeline schedule spans {span} s, the model {tt.steady_end} s")  # pragma: no cover


def _ns(t_s: float) -> int:
    return round(t_s * 1e9)


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def meta(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        self.events.append({"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args})

    def slice(self, pid: int, tid: int, name: str, cat: str, start_s: float, end_s: float,
              args: dict[str, Any]) -> None:
        """A complete event between two instants (rounded to whole ns); empty ones are left out."""
        a, b = _ns(start_s), _ns(end_s)
        if b > a:
            self.events.append({"name": name, "cat": cat, "ph": "X", "ts": a / 1000.0, "dur": (b - a) / 1000.0,
                                "pid": pid, "tid": tid, "args": args})


def _type_events(ev: _Events, pid: int, job: JobSpec, st: StepTime, tt: _TypeTimes, plan: _Plan,
                 placed: list[_Placed], wait_s: float, pace: str) -> None:
    p = job.parallel
    us = 1e6
    for x in placed:
        kind = x.key[0]
        mb, chunk = plan.label(x.key)
        forward = kind == "F"
        share = tt.fwd_share if forward else 1.0 - tt.fwd_share
        if x.recv_from is not None:
            what = "activations" if forward else "gradients"
            ev.slice(pid, x.lane, f"PP recv {what} (exposed)", "comm", x.recv_from, x.start,
                     {"kind": "pp_comm", "micro_batch": mb, "stage": x.lane})
        nested = [(name, cat, key, share * tt.parts[key] / p.vpp) for key, name, cat in SLOT_PARTS]
        if tt.send_s > 0.0:
            nested.append(("PP send (exposed)", "comm", "pp_comm", tt.send_s))
        exposed = sum(d for *_, d in nested)
        name = f"{kind}{mb}" + (f"c{chunk}" if p.vpp > 1 else "")
        args: dict[str, Any] = {"pass": "forward" if forward else "backward", "micro_batch": mb, "stage": x.lane}
        if p.vpp > 1:
            args |= {"chunk": chunk, "virtual_stage": chunk * p.pp + x.lane}
        args |= {"compute_us": (x.end - x.start - exposed) * us, "exposed_us": exposed * us}
        ev.slice(pid, x.lane, name, "forward" if forward else "backward", x.start, x.end, args)
        t = x.end
        for sub, cat, key, d in reversed(nested):
            ev.slice(pid, x.lane, sub, cat, t - d, t, {"kind": key, "parent": name, "exposed_us": d * us})
            t -= d
    dp, opt = float(st.breakdown_s["dp_comm"][0]), float(st.breakdown_s["optimizer"][0])
    for s in range(p.pp):
        t = max(x.end for x in placed if x.lane == s)
        tail = [(f"DP sync wait (pace: {pace})", "wait", "wait", wait_s),
                ("DP grad reduce / param gather (exposed)", "comm", "dp_comm", dp),
                ("optimizer step", "optimizer", "optimizer", opt)]
        for name, cat, key, d in tail:
            ev.slice(pid, s, name, cat, t, t + d, {"kind": key, "stage": s, "seconds": d})
            t += d


def _pool_gpus(job: JobSpec, name: str) -> int:
    return sum(pool.num_gpus for pool in job.cluster.pools if pool.gpu.name == name)


def build_trace(job: JobSpec, nominal_result: NominalResult, gpu_type: str | None = None) -> dict[str, Any]:
    """The trace of one nominal step (see the module docstring); ``gpu_type``: only that type's process."""
    res = nominal_result
    names = list(res.by_gpu_type)
    if gpu_type is not None:
        if gpu_type not in res.by_gpu_type:
            raise ValueError(f"gpu_type {gpu_type!r} is not in the cluster; choose one of {', '.join(names)}")
        names = [gpu_type]
    p = job.parallel
    step = float(res.step_time_s_L[0])
    ev = _Events()
    per_type: dict[str, Any] = {}
    for pid, name in enumerate(names, start=1):
        st = res.by_gpu_type[name]
        tt = _times(job, st)
        plan, placed = _schedule(job, tt)
        own = float(st.step_time_s_L[0])
        wait = max(step - own, 0.0)
        pace = name == res.pace_gpu_type
        label = f"{name} ({_pool_gpus(job, name):,} GPUs)" + (", sets the pace" if pace else "")
        ev.meta("process_name", pid, 0, {"name": label})
        ev.meta("process_sort_index", pid, 0, {"sort_index": pid})
        for s in range(p.pp):
            lane = f"PP stage {s}"
            if p.vpp > 1:
                lane += " (virtual stages " + ", ".join(str(c * p.pp + s) for c in range(p.vpp)) + ")"
            ev.meta("thread_name", pid, s, {"name": lane})
            ev.meta("thread_sort_index", pid, s, {"sort_index": s})
        _type_events(ev, pid, job, st, tt, plan, placed, wait, res.pace_gpu_type)
        t_fb = tt.t_f + tt.t_b - 2.0 * tt.send_s
        per_type[name] = {
            "pid": pid,
            "num_gpus": _pool_gpus(job, name),
            "step_time_s": own,
            "sync_wait_s": wait,
            "breakdown_s": {k: float(v[0]) for k, v in st.breakdown_s.items()},
            "forward_s_per_micro_batch": tt.fwd_share * t_fb * p.vpp,
            "backward_s_per_micro_batch": (1.0 - tt.fwd_share) * t_fb * p.vpp,
            "schedule": plan.name,
        }
    meta = {
        "generator": "colossus-emulator step trace",
        "model": job.model.name,
        "cluster": job.cluster.name,
        "num_gpus": job.cluster.num_gpus,
        "layout": {"tp": p.tp, "pp": p.pp, "dp": p.dp, "cp": p.cp, "ep": p.ep, "etp": p.expert_tp,
                   "vpp": p.vpp, "micro_batch": p.micro_batch, "zero": p.zero, "recompute": p.recompute,
                   "recompute_modules": list(p.recompute_modules) if p.recompute == "selective" else [],
                   "pp_comm_overlap": p.pp_comm_overlap},
        "seq_len": job.train.seq_len,
        "global_batch": job.train.global_batch,
        "micro_batches_per_step": job.train.global_batch // (p.dp * p.micro_batch),
        "step_time_s": step,
        "pace_gpu_type": res.pace_gpu_type,
        "gpu_types": per_type,
        "notes": [
            "Every stage runs the heaviest stage's per-micro-batch time (the model's pace-setting stage).",
            f"Forward:backward split {FORWARD_SHARE[p.recompute]:.3g} of a micro-batch's time "
            f"(1:2; 1:3 with full recompute); exposed comm and host wait split the same way.",
            "Exposed TP/CP/EP comm and host wait are drawn at the end of each slot; in reality they are "
            "spread over its layers.",
            "DP comm (including a ZeRO parameter gather) is drawn after the last backward of each lane.",
            "Times are rounded to whole nanoseconds at slice boundaries.",
        ],
    }
    return {"traceEvents": ev.events, "displayTimeUnit": "ms", "metadata": meta}


def write_trace(job: JobSpec, nominal_result: NominalResult, path: Path | str, gpu_type: str | None = None) -> Path:
    """Write the trace of one nominal step of ``job`` to ``path`` (JSON, atomically); return the path."""
    out = Path(path)
    trace = build_trace(job, nominal_result, gpu_type)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(trace, fh, separators=(",", ":"))
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(out)
    return out
