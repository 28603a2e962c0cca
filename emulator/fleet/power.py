"""GPU and site power per step, power caps and the clock they cost.

Per GPU of a TP group, within a step of ``step`` seconds whose busy time is ``busy`` (its stage's
micro-batches) and whose exposed DP/PP/optimizer time is ``fixed``:

    E = P_compute * q * busy + P_comm * ((1 - q) * busy + fixed) + P_idle * (step - busy - fixed)

with ``q`` the compute share of the busy time. Site power = (sum of GPU power + host and network
overhead per GPU) x PUE. The within-step peak is every GPU computing at once (the swing between it
and the idle floor is what Llama 3's operators saw as tens of MW).

Caps: a facility cap ``C`` (or a demand-response window's) leaves each GPU at most
``L = (C / PUE - overhead) / G`` watts in every phase. A GPU whose compute power exceeds ``L`` lowers its clock;
with dynamic power ~ f V^2 and V ~ f (DVFS), dynamic power goes as ``f^3``, so the clock factor is
``((L - P_idle) / (P_compute - P_idle))^(1/3)`` and compute time is divided by it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emulator.fleet.topology import Topology
from emulator.spec import JobSpec


class PowerModel:
    def __init__(self, job: JobSpec, topo: Topology, xp: Any) -> None:
        self.xp, self.topo = xp, topo
        pw = job.power
        self.enabled = pw is not None
        pools = job.cluster.pools
        tdp = np.asarray([p.gpu.tdp_w for p in pools])
        idle = np.asarray([p.gpu.idle_w for p in pools])
        comp_frac = pw.compute_fraction_of_tdp if pw else 1.0
        comm_frac = pw.comm_fraction_of_tdp if pw else 0.35
        self.p_compute_T = comp_frac * tdp
        self.p_comm_T = np.maximum(idle, comm_frac * tdp)
        self.p_idle_T = idle
        G = job.cluster.num_gpus
        self.num_gpus = G
        self.overhead_w = G * ((pw.host_w_per_gpu + pw.network_w_per_gpu) if pw else 0.0)
        self.pue = pw.pue if pw else 1.0
        facility = pw.facility_cap_w if pw else 0.0
        self.windows = [(w.start_s, w.end_s, min(w.cap_w, facility) if facility else w.cap_w)
                        for w in (pw.windows if pw else ())]
        caps = [facility] + [cap for _, _, cap in self.windows]
        self._caps = caps
        self.idle_energy_j = 0.0
        type_N = topo.type_N
        self.p_idle_N = xp.asarray(self.p_idle_T[type_N])
        self._p_comm_N = [xp.asarray(np.minimum(self.p_comm_T, self._limit(cap))[type_N]) for cap in caps]
        self._clock_T = [self._clock_T_for(cap) for cap in caps]
        self._p_compute_N = [xp.asarray(np.minimum(self.p_compute_T, self._limit(cap))[type_N]) for cap in caps]
        self._clock_N = [xp.asarray(c[type_N]) for c in self._clock_T]

    def _limit(self, cap_w: float) -> float:
        if cap_w <= 0:
            return float("inf")
        return (cap_w / self.pue - self.overhead_w) / self.num_gpus

    def _clock_T_for(self, cap_w: float) -> np.ndarray:
        limit = self._limit(cap_w)
        over = self.p_compute_T > limit
        ratio = np.clip((limit - self.p_idle_T) / (self.p_compute_T - self.p_idle_T), 1e-6, 1.0)
        return np.where(over, np.cbrt(ratio), 1.0)

    def levels(self) -> list[int]:
        """Clock levels: 0 the facility cap (or none), k the k-th demand-response window."""
        return list(range(len(self._caps)))

    def clock_N(self, level: int) -> Any:
        return self._clock_N[level]

    def clock_of_level(self, level_B: np.ndarray) -> np.ndarray:
        """The slowest pool's clock factor at each step's level."""
        mins = np.asarray([float(np.min(c)) for c in self._clock_T])
        return mins[level_B]

    def level_at(self, t_s: float) -> int:
        for k, (start, end, _) in enumerate(self.windows):
            if start <= t_s < end:
                return k + 1
        return 0

    def step_energy(self, busy_BN: Any, step_B: Any, level_B: Any, fixed_s: float,
                    share_N: Any) -> tuple[Any, Any, Any]:
        """Joules per TP group and step (B, N), mean GPU watts per step (B,), peak GPU watts (B,)."""
        xp, tp = self.xp, float(self.topo.tp)
        p_c = self._p_compute_N[0][None, :]
        p_m = self._p_comm_N[0][None, :]
        for k in range(1, len(self._p_compute_N)):
            at_k = (level_B == k)[:, None]
            p_c = xp.where(at_k, self._p_compute_N[k][None, :], p_c)
            p_m = xp.where(at_k, self._p_comm_N[k][None, :], p_m)
        idle_s = xp.maximum(step_B[:, None] - busy_BN - fixed_s, 0.0)
        e_BN = tp * (p_c * share_N[None, :] * busy_BN
                     + p_m * ((1.0 - share_N[None, :]) * busy_BN + fixed_s)
                     + self.p_idle_N[None, :] * idle_s)
        gpu_w_B = xp.sum(e_BN, axis=1) / step_B
        peak_B = tp * xp.sum(p_c, axis=1) + 0.0 * step_B
        return e_BN, gpu_w_B, peak_B

    def facility_w(self, gpu_w: np.ndarray) -> np.ndarray:
        return (gpu_w + self.overhead_w) * self.pue

    def idle_facility_w(self) -> float:
        return (float(np.sum(self.p_idle_T[self.topo.type_G])) + self.overhead_w) * self.pue
