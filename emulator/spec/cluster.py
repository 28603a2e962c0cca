"""A cluster: pools of GPU types on an NVLink + RDMA scale-out fabric (SI units)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_fraction, require_non_negative, require_positive
from emulator.spec.gpu import GpuSpec

PLACEMENTS = ("rank_order", "by_replica")


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    """GPUs of one type within the cluster."""

    gpu: GpuSpec
    num_gpus: int


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    name: str
    num_gpus: int
    gpus_per_node: int
    pools: tuple[PoolSpec, ...]
    """One pool for a homogeneous cluster; several for a mixed one (their sizes add up to num_gpus)."""
    nic_bytes_per_s: float
    """Scale-out NIC line rate per GPU, bytes/s."""
    nic_efficiency: float
    """Large-collective bus bandwidth as a fraction of the NIC line rate."""
    nic_all_to_all_efficiency: float
    """Per-GPU scale-out bandwidth of a large all-to-all (expert-parallel dispatch and combine) as a
    fraction of the NIC line rate (many-to-many flows: below a ring's ``nic_efficiency``)."""
    scaleout_latency_s: float
    """Alpha (per step) of a collective over the scale-out fabric."""
    nvlink_domain: int
    """GPUs that share one NVLink domain (8 for HGX, 72 for NVL72)."""
    nvlink_latency_s: float
    """Alpha (per step) of a collective over NVLink."""
    oversubscription: float = 1.0
    """Scale-out fabric oversubscription (1: full bisection)."""
    speed_sigma: float = 0.01
    """Spread (sd of log speed) of the persistent per-GPU speed factor: silicon, cooling, clocks. Sinha et
    al., "Not All GPUs Are Created Equal" (SC'22), measured up to ~8% spread between the fastest and slowest
    GPUs of large clusters on compute-bound kernels: about 3.5 sd either side, so sd ~ 1%."""
    jitter_sigma: float = 0.01
    """Standard deviation of the per-step, per-GPU relative slowdown (Gumbel-distributed: right-skewed).
    ASSUMPTION: 1%; Llama 3 saw 1-2% diurnal throughput swings from DVFS (published.yaml pow.llama3_power_swings)."""
    slow_node_fraction: float = 0.0
    """Fraction of nodes that are persistently degraded (a 'lemon' or straggler host). Default 0: at 10^4-10^5
    GPUs any non-zero fraction puts one in nearly every job, pacing it at the degraded speed, while MegaScale
    measured only +0.7% MFU from removing its 10%-slow straggler hosts (published.yaml rel.megascale_operations):
    operators find and drain them. Set it to study lemons (Kokolis et al. 2025, rel.meta_rsc_revisiting_reliability)."""
    slow_node_slowdown: float = 0.10
    """Relative slowdown of a degraded node: MegaScale's straggler hosts ran ~10% slower (published.yaml
    rel.megascale_operations)."""
    placement: str = "rank_order"
    """Mixed pools: rank_order (pools fill Megatron rank order: a pipeline may span GPU types) or
    by_replica (each data-parallel replica, i.e. each pipeline, on one GPU type)."""
    use_extra_memory: bool = True
    """Mixed pools: ranks on a GPU type with more HBM drop activation recompute where that still fits."""
    source: str = ""

    def __post_init__(self) -> None:
        p = "cluster"
        require_positive(self.num_gpus, f"{p}.num_gpus")
        require_positive(self.gpus_per_node, f"{p}.gpus_per_node")
        require_positive(self.nvlink_domain, f"{p}.nvlink_domain")
        require_positive(self.nic_bytes_per_s, f"{p}.nic_gbps")
        require_fraction(self.nic_efficiency, f"{p}.nic_efficiency")
        require_fraction(self.nic_all_to_all_efficiency, f"{p}.nic_all_to_all_efficiency")
        require_non_negative(self.scaleout_latency_s, f"{p}.scaleout_latency_us")
        require_non_negative(self.nvlink_latency_s, f"{p}.nvlink_latency_us")
        require(self.oversubscription >= 1.0, f"{p}.oversubscription", self.oversubscription, "must be >= 1")
        require(len(self.pools) > 0, f"{p}.pools", "[]", "at least one pool")
        require(0.0 <= self.speed_sigma < 1.0, f"{p}.speed_sigma", self.speed_sigma, "must be in [0, 1)")
        require(0.0 <= self.jitter_sigma < 1.0, f"{p}.jitter_sigma", self.jitter_sigma, "must be in [0, 1)")
        require(0.0 <= self.slow_node_fraction <= 1.0, f"{p}.slow_node_fraction", self.slow_node_fraction,
                "must be in [0, 1]")
        require(self.slow_node_slowdown >= 0.0, f"{p}.slow_node_slowdown", self.slow_node_slowdown, "must be >= 0")
        require(self.placement in PLACEMENTS, f"{p}.placement", self.placement,
                f"must be one of {', '.join(PLACEMENTS)}")
        total = sum(pool.num_gpus for pool in self.pools)
        require(total == self.num_gpus, f"{p}.pools", f"sum {total}",
                f"pool sizes must add up to cluster.num_gpus={self.num_gpus}")
        for i, pool in enumerate(self.pools):
            require_positive(pool.num_gpus, f"{p}.pools[{i}].num_gpus")
            require(pool.num_gpus % self.gpus_per_node == 0, f"{p}.pools[{i}].num_gpus", pool.num_gpus,
                    f"must be a multiple of cluster.gpus_per_node={self.gpus_per_node}")

    @property
    def is_mixed(self) -> bool:
        return len({pool.gpu.name for pool in self.pools}) > 1

    @property
    def gpu_types(self) -> tuple[GpuSpec, ...]:
        """Distinct GPU types, in pool order."""
        seen: dict[str, GpuSpec] = {}
        for pool in self.pools:
            seen.setdefault(pool.gpu.name, pool.gpu)
        return tuple(seen.values())

    @property
    def scaleout_bus_bytes_per_s(self) -> float:
        """Achievable per-GPU scale-out bandwidth of a large collective."""
        return self.nic_bytes_per_s * self.nic_efficiency / self.oversubscription

    @property
    def scaleout_all_to_all_bytes_per_s(self) -> float:
        """Achievable per-GPU scale-out send bandwidth of a large all-to-all."""
        return self.nic_bytes_per_s * self.nic_all_to_all_efficiency / self.oversubscription
