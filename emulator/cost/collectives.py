"""Alpha-beta cost of NCCL collectives over the tier a group spans (NVLink domain vs scale-out).

Ranks are laid out as in Megatron-Core: tp fastest, then cp, then dp (with ep carved out of
dp x cp), then pp; consecutive ranks fill an NVLink domain. A group of ``n`` ranks at rank stride
``st`` has ``k = clip(floor(D / st), 1, n)`` members in each domain of ``D`` GPUs.

Costs (``M``: bytes of the full buffer each rank holds before a reduce-scatter / after an
all-gather; ``B_nv``, ``B_net``: per-GPU achievable bus bandwidths; ``a_nv``, ``a_net``: per-step
latencies):

- ring reduce-scatter or all-gather in one tier: ``(n-1)/n * M / B + (n-1) * a``
  (each rank sends ``n-1`` chunks of ``M/n``: Patarasuk & Yuan 2009; NCCL's busbw definition).
- hierarchical (the group crosses domains, ``m = n/k`` domains): an intra-domain ring over ``k``
  ranks on ``M`` then an inter-domain phase over ``m`` ranks on ``M/k`` per rank, each GPU using
  its own NIC (rail-optimised fabric): ``(k-1)/k * M/B_nv + (m-1)/m * (M/k)/B_net`` plus latency
  ``(k-1) a_nv + ceil(log2 m) a_net`` (NCCL's tree/PAT algorithms keep the scale-out latency
  logarithmic in the number of domains).
- all-reduce = reduce-scatter + all-gather (twice the above).
- all-to-all of ``M`` bytes sent per rank: ``M (k-1)/n`` bytes stay in the domain, ``M (n-k)/n``
  cross it; the two tiers run concurrently: ``max(intra/A_nv, inter/A_net) + a``. ``A_nv``,
  ``A_net`` are the all-to-all bandwidths (``gpu.efficiency.nvlink_all_to_all``,
  ``cluster.nic_all_to_all_efficiency``): every rank sends to every other at once, which reaches
  less of the link than a ring (measured: 0.72 of NVLink 4, 0.63 of NVLink 5 on NVL72, 0.88 of a
  400G NIC; NVIDIA's Megatron Core MoE report, arXiv:2603.07685, Table 7).
- node-deduplicating dispatch (DeepEP / HybridEP) of tokens of ``t`` bytes per rank (one per
  token), each reaching ``r`` other domains and ``q`` other ranks of the group on average
  (:mod:`routing`): a token crosses the network once per other domain, ``r t`` bytes, and reaches
  each destination rank once whatever the number of its experts there. Of the ``q n/(n-1)``
  destination ranks (self included) a share ``(k_d-1)/k_d`` is another GPU of the domain it lands
  in (``k_d`` group members per domain), so NVLink carries ``q n/(n-1) (k_d-1)/k_d t`` bytes; in
  one domain (``k_d = n``) that is ``q t``. Both tiers run concurrently:
  ``max(intra/A_nv, inter/A_net) + a``.
- point-to-point of ``M`` bytes: ``M / B + a`` on the tier it crosses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import where
from emulator.spec.cluster import ClusterSpec
from emulator.spec.gpu import GpuSpec


@dataclass(frozen=True)
class Fabric:
    """Per-GPU achievable bandwidths and latencies of the two tiers for one GPU type."""

    nvlink_bus_bytes_per_s: float
    nvlink_alpha_s: float
    net_bus_bytes_per_s: float
    net_alpha_s: float
    domain: float
    nvlink_a2a_bytes_per_s: float
    net_a2a_bytes_per_s: float

    @classmethod
    def of(cls, cluster: ClusterSpec, gpu: GpuSpec) -> Fabric:
        return cls(
            nvlink_bus_bytes_per_s=gpu.nvlink_unidirectional_bytes_per_s * gpu.efficiency.nvlink,
            nvlink_alpha_s=cluster.nvlink_latency_s,
            net_bus_bytes_per_s=cluster.scaleout_bus_bytes_per_s,
            net_alpha_s=cluster.scaleout_latency_s,
            domain=float(cluster.nvlink_domain),
            nvlink_a2a_bytes_per_s=gpu.nvlink_unidirectional_bytes_per_s * gpu.efficiency.nvlink_all_to_all,
            net_a2a_bytes_per_s=cluster.scaleout_all_to_all_bytes_per_s,
        )

    def members_per_domain(self, n_L: Any, stride_L: Any, xp: Any) -> Any:
        """Ranks of the group inside one NVLink domain."""
        return xp.clip(xp.floor(self.domain / stride_L), 1.0, n_L)

    def ring_cost(self, n_L: Any, stride_L: Any, xp: Any) -> tuple[Any, Any]:
        """Reduce-scatter time as ``seconds_per_byte * bytes + latency`` for a group: the two arrays.

        ``seconds_per_byte = (k-1)/k / B_nv + (m-1)/m / k / B_net`` and
        ``latency = (k-1) a_nv + ceil(log2 m) a_net`` (module docstring), computed once per group so
        several collectives over the same group cost one multiply-add each."""
        k_L = self.members_per_domain(n_L, stride_L, xp)
        m_L = n_L / k_L
        per_byte = (k_L - 1.0) / k_L / self.nvlink_bus_bytes_per_s \
            + (m_L - 1.0) / m_L / k_L / self.net_bus_bytes_per_s
        # m >= 1 (k <= n): one domain (m = 1) adds ceil(log2 1) = 0 scale-out steps.
        latency = (k_L - 1.0) * self.nvlink_alpha_s + xp.ceil(xp.log2(m_L)) * self.net_alpha_s
        return per_byte, latency

    def reduce_scatter_s(self, bytes_L: Any, n_L: Any, stride_L: Any, xp: Any) -> Any:
        """Reduce-scatter (or all-gather) of a buffer of ``bytes_L`` over ``n_L`` ranks."""
        per_byte, latency = self.ring_cost(n_L, stride_L, xp)
        return per_byte * bytes_L + latency

    def all_gather_s(self, bytes_L: Any, n_L: Any, stride_L: Any, xp: Any) -> Any:
        return self.reduce_scatter_s(bytes_L, n_L, stride_L, xp)

    def all_reduce_s(self, bytes_L: Any, n_L: Any, stride_L: Any, xp: Any) -> Any:
        return 2.0 * self.reduce_scatter_s(bytes_L, n_L, stride_L, xp)

    def all_to_all_s(self, bytes_L: Any, n_L: Any, stride_L: Any, xp: Any) -> Any:
        """All-to-all where each rank sends ``bytes_L`` in total (spread evenly over the group)."""
        k_L = self.members_per_domain(n_L, stride_L, xp)
        intra = bytes_L * (k_L - 1.0) / n_L / self.nvlink_a2a_bytes_per_s
        inter = bytes_L * (n_L - k_L) / n_L / self.net_a2a_bytes_per_s
        alpha = where(n_L > k_L, self.net_alpha_s, self.nvlink_alpha_s, xp)
        return where(n_L > 1.0, xp.maximum(intra, inter) + alpha, 0.0, xp)

    def node_dedup_all_to_all_s(self, token_bytes_L: Any, remote_nodes_L: Any, remote_ranks_L: Any, n_L: Any,
                                stride_L: Any, xp: Any) -> Any:
        """Dispatch (or combine) through a node-deduplicating dispatcher: ``token_bytes_L`` of distinct
        tokens per rank, each reaching ``remote_nodes_L`` other domains and ``remote_ranks_L`` other
        ranks of the group (module docstring)."""
        k_L = self.members_per_domain(n_L, stride_L, xp)
        ranks_L = remote_ranks_L * n_L / xp.maximum(n_L - 1.0, 1.0)
        intra = token_bytes_L * ranks_L * (k_L - 1.0) / k_L / self.nvlink_a2a_bytes_per_s
        inter = token_bytes_L * remote_nodes_L / self.net_a2a_bytes_per_s
        alpha = where(n_L > k_L, self.net_alpha_s, self.nvlink_alpha_s, xp)
        return where(n_L > 1.0, xp.maximum(intra, inter) + alpha, 0.0, xp)

    def p2p_s(self, bytes_L: Any, stride_L: Any, xp: Any) -> Any:
        """Send/receive between ranks ``stride_L`` apart (pipeline neighbours)."""
        crosses = stride_L >= self.domain
        bw = where(crosses, self.net_bus_bytes_per_s, self.nvlink_bus_bytes_per_s, xp)
        alpha = where(crosses, self.net_alpha_s, self.nvlink_alpha_s, xp)
        return bytes_L / bw + alpha
