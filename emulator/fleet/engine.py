"""The step engine: emulated attempts in batches, failures and checkpoints, power and caps.

Per attempt (a step that may later be lost to a failure), with ``w_BN`` the per-micro-batch time
of every TP group (its pool's nominal stage time x its persistent factor x its step jitter, the
compute share slowed by the power-cap clock factor):

    pipeline_BR = m * max over stages of w + (pp - 1) / vpp * mean over stages of w      (1F1B)
    step_B      = fixed + max over replicas of pipeline_BR       (the step waits for the slowest replica)

``fixed`` is the nominal exposed data-parallel and pipeline communication plus the optimizer step,
which do not scale with GPU speed. With every factor at 1 this is the nominal step exactly.

Time is kept in integer nanoseconds on the host so that wall times are exact sums, identical for
any batching. Failures are Poisson per component with the summed hazard of the job; a failure at
an attempt loses the attempts since the last checkpoint, costs detection + restart, and the run
goes on from the checkpointed step. Checkpoints every K steps (K from Young's formula when 0).
Device arrays: one persistent factor per group, one (B, N) batch at a time; nothing grows with steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from emulator.backend import rng, to_numpy
from emulator.cost.flops import model_flops_per_token
from emulator.cost.layout import LayoutBatch
from emulator.cost.step import StepTime, nominal
from emulator.fleet.power import PowerModel
from emulator.fleet.topology import Topology
from emulator.fleet.variability import group_jitter_BN, group_max, persistent_factor_G
from emulator.spec import JobSpec, ParallelSpec
from emulator.spec.parallel import DEFAULT_RECOMPUTE_MODULES
from emulator.spec.reliability import PER

NS = 1_000_000_000
STREAM_FAIL = 11
STREAM_FAIL_WHAT = 12
STREAM_FAIL_WHERE = 13
AUTO_BATCH_ELEMENTS = 4_000_000
"""Auto batch size: steps per batch such that a (B, N) array holds about this many elements."""
HIST_BINS = 4096
HIST_LO, HIST_HI = -3.0, 5.0
"""Step-time histogram over log10(seconds) for the p99 without storing every step."""


@dataclass(frozen=True)
class StageTiming:
    """Per-pool timing of one micro-batch on the pace-setting stage, from the nominal model."""

    t_fb_T: np.ndarray
    """Seconds per micro-batch (forward + backward + exposed TP/CP/EP + host idle) per pool."""
    compute_share_T: np.ndarray
    """Share of ``t_fb`` that is GPU compute (slowed by a power cap); the rest is communication."""
    fixed_s: float
    """Exposed DP + PP communication and the optimizer: seconds per step, not scaled by speed."""
    recompute_T: tuple[str, ...]
    """Recompute mode each pool runs with (a pool with spare HBM may drop it)."""
    hbm_peak_bytes_T: np.ndarray


def stage_timing(job: JobSpec, topo: Topology) -> StageTiming:
    """Nominal per-pool stage times; pools with more HBM drop recompute where it still fits."""
    par = job.parallel
    m = job.train.global_batch // (par.dp * par.micro_batch)
    t_fb, share, fixed, modes, hbm = [], [], [], [], []
    for pool in job.cluster.pools:
        st, mode = _pool_step(job, pool.gpu.name, par)
        b = st.breakdown_s
        per_mb = sum(float(b[k][0]) for k in ("compute", "tp_comm", "cp_comm", "ep_comm", "other")) / m
        t_fb.append(per_mb)
        share.append(float(b["compute"][0]) / m / per_mb if per_mb > 0 else 1.0)
        fixed.append(sum(float(b[k][0]) for k in ("dp_comm", "pp_comm", "optimizer")))
        modes.append(mode)
        hbm.append(float(st.memory.total_L[0]))
    return StageTiming(np.asarray(t_fb), np.asarray(share), max(fixed), tuple(modes), np.asarray(hbm))


def _pool_step(job: JobSpec, gpu_name: str, par: ParallelSpec) -> tuple[StepTime, str]:
    options = [par.recompute]
    if job.cluster.is_mixed and job.cluster.use_extra_memory:
        options = [mode for mode in ("none", "selective", "full") if _order(mode) <= _order(par.recompute)]
    for mode in options:
        lay = LayoutBatch.from_specs([_with_recompute(par, mode)], np)
        res = nominal(job.model, job.train, job.cluster, lay, np)
        st = res.by_gpu_type[gpu_name]
        if bool(st.memory.fits_L[0]) or mode == par.recompute:
            return st, mode
    raise AssertionError("unreachable: the configured recompute mode is always accepted")


def _order(mode: str) -> int:
    return ("none", "selective", "full").index(mode)


def _with_recompute(par: ParallelSpec, mode: str) -> ParallelSpec:
    """The layout with recompute ``mode``: a selective layout keeps its modules; a lighter mode drops them (they only
    apply to selective), and selective reached from full re-runs Megatron's default, the attention core."""
    if mode == par.recompute:
        return par
    return replace(par, recompute=mode, recompute_modules=DEFAULT_RECOMPUTE_MODULES)


@dataclass
class StepBatch:
    """Host copies of one batch of attempts and the events among them (suffix _B: per attempt)."""

    attempt_B: np.ndarray
    step_B: np.ndarray
    wall_time_s_B: np.ndarray
    step_time_s_B: np.ndarray
    tokens_B: np.ndarray
    tokens_per_s_B: np.ndarray
    mfu_B: np.ndarray
    facility_power_mw_B: np.ndarray
    facility_peak_mw_B: np.ndarray
    clock_factor_B: np.ndarray
    kept_B: np.ndarray
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FleetTotals:
    """Running totals of a run: fixed size, whatever the number of steps."""

    attempts: int = 0
    steps: int = 0
    total_dt_ns: int = 0
    lost_dt_ns: int = 0
    downtime_ns: int = 0
    checkpoint_ns: int = 0
    wall_ns: int = 0
    interruptions: int = 0
    checkpoints: int = 0
    energy_uj: int = 0
    peak_facility_w: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))


class FleetEngine:
    """Emulates ``job.run.steps`` training steps of the whole cluster, yielding batches of attempts."""

    def __init__(self, job: JobSpec, xp: Any) -> None:
        self.job, self.xp = job, xp
        self.topo = Topology.of(job)
        self.timing = stage_timing(job, self.topo)
        cl, par = job.cluster, job.parallel
        seed = job.run.seed
        self.m = job.train.global_batch // (par.dp * par.micro_batch)
        self.bubble = (par.pp - 1) / par.vpp
        factor_G = persistent_factor_G(seed, cl.num_gpus, cl.gpus_per_node, cl.speed_sigma, cl.slow_node_fraction,
                                       cl.slow_node_slowdown)
        self.factor_G = factor_G
        base_N = self.timing.t_fb_T[self.topo.type_N] * group_max(factor_G, par.tp)
        self.base_N = xp.asarray(base_N)
        self.share_N = xp.asarray(self.timing.compute_share_T[self.topo.type_N])
        self.power = PowerModel(job, self.topo, xp)
        self.totals = FleetTotals()
        N = self.topo.num_groups
        rel = job.reliability
        self.hazard_by = _hazards(job) if rel is not None and rel.enabled else {}
        self.hazard_per_s = sum(self.hazard_by.values())
        # The step the engine emulates with every factor at 1 (the nominal model, per-pool recompute applied).
        self.base_step_s = self.timing.fixed_s + (self.m + self.bubble) * float(self.timing.t_fb_T.max())
        self.batch = job.run.steps_per_batch or self._auto_batch(N)
        self.ckpt_write_ns = round((rel.checkpoint_write_s if rel else 0.0) * NS)
        self.ckpt_interval = _checkpoint_interval(job, self.hazard_per_s, rel.checkpoint_write_s if rel else 0.0,
                                                  self.base_step_s)
        self.downtime_ns = round(((rel.detect_s + rel.restart_s) if rel else 0.0) * NS)
        self.tokens_per_step = job.tokens_per_step
        peak = sum(p.num_gpus * p.gpu.peak_flops_per_s(job.train.precision) for p in cl.pools)
        self.model_flops_per_step = model_flops_per_token(job.model, job.train.seq_len) * self.tokens_per_step
        self.peak_flops = peak
        self.busy_ns_N = xp.zeros((N,), dtype=xp.int64)
        self.energy_uj_N = xp.zeros((N,), dtype=xp.int64)
        self.failures_G = np.zeros(cl.num_gpus, dtype=np.int64)

    def _auto_batch(self, num_groups: int) -> int:
        """About AUTO_BATCH_ELEMENTS (B, N) elements, and few enough steps that a failure (which discards
        the rest of its batch) rarely wastes much: at most 1/20 of the mean steps between failures."""
        by_size = max(1, AUTO_BATCH_ELEMENTS // num_groups)
        if self.hazard_per_s <= 0:
            return by_size
        steps_between = 1.0 / (self.hazard_per_s * self.base_step_s)
        return max(16, min(by_size, int(steps_between / 20.0)))

    # -- the device part: step times of a batch under one clock level --------------------------
    def _step_BN(self, attempt0: int, steps: int, clock: Any) -> tuple[Any, Any]:
        """Per-group per-micro-batch times (B, N) and step times (B,) for a uniform clock factor per pool."""
        xp, topo, cl = self.xp, self.topo, self.job.cluster
        jit_BN = group_jitter_BN(xp, self.job.run.seed, attempt0, steps, topo.num_groups, topo.tp, cl.jitter_sigma)
        slow_N = self.share_N / clock + (1.0 - self.share_N)
        w_BN = (self.base_N * slow_N)[None, :] * (1.0 + jit_BN)
        w_BSR = xp.reshape(w_BN, (steps, topo.pp, topo.replicas))
        pipe_BR = self.m * xp.max(w_BSR, axis=1) + self.bubble * xp.mean(w_BSR, axis=1)
        return w_BN, self.timing.fixed_s + xp.max(pipe_BR, axis=1)

    def run(self) -> Iterator[StepBatch]:
        """Yield batches of attempts until ``run.steps`` steps are kept."""
        target = self.job.run.steps
        t = self.totals
        attempt, step, wall_ns = 0, 0, 0
        last_ckpt_step, last_ckpt_wall_ns = 0, 0
        first_since_ckpt, since_ckpt_dt_ns = 0, 0
        idle_w = self.power.idle_facility_w()
        while step < target:
            B = min(self.batch, target - step)
            step_LB, w_by_level = [], []
            for level in self.power.levels():
                w_BN, s_B = self._step_BN(attempt, B, self.power.clock_N(level))
                w_by_level.append(w_BN)
                step_LB.append(to_numpy(s_B))
            fail_u = rng.uniform(np, self.job.run.seed, STREAM_FAIL, np.arange(attempt, attempt + B, dtype=np.uint64))
            rows: dict[str, list[Any]] = {k: [] for k in ("attempt", "step", "wall", "dt", "level", "kept")}
            events: list[dict[str, Any]] = []
            n_valid = 0
            for b in range(B):
                this = attempt + b
                level = self.power.level_at(wall_ns / NS)
                dt_ns = round(float(step_LB[level][b]) * NS)
                step += 1
                wall_ns += dt_ns
                since_ckpt_dt_ns += dt_ns
                t.total_dt_ns += dt_ns
                n_valid = b + 1
                for key, value in (("attempt", this), ("step", step), ("wall", wall_ns), ("dt", dt_ns),
                                   ("level", level), ("kept", True)):
                    rows[key].append(value)
                p_fail = -math.expm1(-self.hazard_per_s * dt_ns / NS)
                if self.hazard_per_s > 0 and fail_u[b] < p_fail:
                    events.append(self._failure(this, step, wall_ns, first_since_ckpt, wall_ns - last_ckpt_wall_ns))
                    for i, a in enumerate(rows["attempt"]):
                        if a >= first_since_ckpt:
                            rows["kept"][i] = False
                    t.lost_dt_ns += since_ckpt_dt_ns
                    t.interruptions += 1
                    wall_ns += self.downtime_ns
                    t.downtime_ns += self.downtime_ns
                    self.power.idle_energy_j += idle_w * self.downtime_ns / NS
                    events.append({"time_s": wall_ns / NS, "step": last_ckpt_step, "kind": "restart", "gpu": -1,
                                   "node": -1, "lost_s": 0.0, "attempt": this, "first_lost_attempt": -1,
                                   "detail": f"from the checkpoint of step {last_ckpt_step}"})
                    step = last_ckpt_step
                    first_since_ckpt, since_ckpt_dt_ns, last_ckpt_wall_ns = this + 1, 0, wall_ns
                    break
                if self.ckpt_interval and step % self.ckpt_interval == 0:
                    wall_ns += self.ckpt_write_ns
                    t.checkpoint_ns += self.ckpt_write_ns
                    self.power.idle_energy_j += idle_w * self.ckpt_write_ns / NS
                    t.checkpoints += 1
                    events.append({"time_s": wall_ns / NS, "step": step, "kind": "checkpoint", "gpu": -1, "node": -1,
                                   "lost_s": 0.0, "attempt": this, "first_lost_attempt": -1,
                                   "detail": f"{self.ckpt_write_ns / NS:.2f} s write"})
                    last_ckpt_step, last_ckpt_wall_ns = step, wall_ns
                    first_since_ckpt, since_ckpt_dt_ns = this + 1, 0
            batch = self._finish_batch(n_valid, rows, w_by_level, events)
            attempt += n_valid
            t.wall_ns = wall_ns
            t.steps = step
            yield batch

    def _failure(self, attempt: int, step: int, wall_ns: int, first_lost: int, lost_ns: int) -> dict[str, Any]:
        seed, G = self.job.run.seed, self.job.cluster.num_gpus
        key = np.asarray([attempt], dtype=np.uint64)
        u = float(rng.uniform(np, seed, STREAM_FAIL_WHAT, key)[0]) * self.hazard_per_s
        names = list(self.hazard_by)
        acc, what = 0.0, names[-1]
        for name in names:
            acc += self.hazard_by[name]
            if u < acc:
                what = name
                break
        gpu = int(rng.hash_u64(np, seed, STREAM_FAIL_WHERE, key)[0] % np.uint64(G))
        self.failures_G[gpu] += 1
        return {"time_s": wall_ns / NS, "step": step, "kind": "failure", "gpu": gpu,
                "node": gpu // self.job.cluster.gpus_per_node, "lost_s": lost_ns / NS, "attempt": attempt,
                "first_lost_attempt": first_lost, "detail": what}

    def _finish_batch(self, n: int, rows: dict[str, list[Any]], w_by_level: list[Any],
                      events: list[dict[str, Any]]) -> StepBatch:
        xp = self.xp
        level_B = np.asarray(rows["level"], dtype=np.int64)
        dt_s_B = np.asarray(rows["dt"], dtype=np.int64) / NS
        # Per-group busy time and energy of the valid attempts, under the clock level of each step.
        w_BN = w_by_level[0][:n, ...]
        if len(w_by_level) > 1:
            lvl = xp.asarray(level_B)[:, None]
            for k in range(1, len(w_by_level)):
                w_BN = xp.where(lvl == k, w_by_level[k][:n, ...], w_BN)
        busy_BN = self.m * w_BN
        # Accumulate in integer ns and uJ: exact sums, so totals do not depend on how steps are batched.
        self.busy_ns_N += xp.sum(xp.astype(xp.round(busy_BN * 1e9), xp.int64), axis=0)
        step_B = xp.asarray(dt_s_B)
        e_BN, gpu_w_B, peak_w_B = self.power.step_energy(busy_BN, step_B, xp.asarray(level_B), self.timing.fixed_s,
                                                         self.share_N)
        self.energy_uj_N += xp.sum(xp.astype(xp.round(e_BN * 1e6), xp.int64), axis=0)
        gpu_w = to_numpy(gpu_w_B)
        facility_w = self.power.facility_w(gpu_w)
        peak_w = to_numpy(peak_w_B)
        kept = np.asarray(rows["kept"], dtype=bool)
        tokens = np.full(n, self.tokens_per_step, dtype=np.int64)
        t = self.totals
        t.attempts += n
        t.energy_uj += int(np.sum(np.round(facility_w * dt_s_B * 1e6).astype(np.int64)))
        peak_facility = self.power.facility_w(peak_w)
        t.peak_facility_w = max(t.peak_facility_w, float(np.max(peak_facility)) if n else 0.0)
        log_dt = np.log10(dt_s_B)
        idx = np.clip(((log_dt - HIST_LO) / (HIST_HI - HIST_LO) * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
        np.add.at(t.hist, idx, 1)
        return StepBatch(
            attempt_B=np.asarray(rows["attempt"], dtype=np.int64),
            step_B=np.asarray(rows["step"], dtype=np.int64),
            wall_time_s_B=np.asarray(rows["wall"], dtype=np.int64) / NS,
            step_time_s_B=dt_s_B,
            tokens_B=tokens,
            tokens_per_s_B=self.tokens_per_step / dt_s_B,
            mfu_B=self.model_flops_per_step / (dt_s_B * self.peak_flops),
            facility_power_mw_B=facility_w / 1e6,
            facility_peak_mw_B=peak_facility / 1e6,
            clock_factor_B=self.power.clock_of_level(level_B),
            kept_B=kept,
            events=events,
        )


def _hazards(job: JobSpec) -> dict[str, float]:
    """Failure rate of the whole job per component (1/s): rate per unit x units."""
    rel = job.reliability
    assert rel is not None
    cl = job.cluster
    nodes = math.ceil(cl.num_gpus / cl.gpus_per_node)
    return {name: rate * (nodes if PER[name] == "node" else cl.num_gpus) for name, rate in rel.rates_per_s.items()}


def _checkpoint_interval(job: JobSpec, hazard: float, write_s: float, step_s: float) -> int:
    """Steps between checkpoints: configured, or Young's ``sqrt(2 * write * MTBF)`` over the nominal step
    ``step_s`` (the one the engine already derived: no second evaluation of the cost model)."""
    rel = job.reliability
    if rel is None or not rel.enabled or hazard <= 0:
        return rel.checkpoint_interval_steps if rel is not None else 0
    if rel.checkpoint_interval_steps > 0:
        return rel.checkpoint_interval_steps
    tau = math.sqrt(2.0 * max(write_s, 1e-3) / hazard)
    return max(1, round(tau / step_s))
