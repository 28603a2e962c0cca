"""Alpha-beta collective costs (emulator/cost/collectives.py) recomputed by hand.

A group of ``n`` ranks at stride ``st`` has ``k = clip(floor(D / st), 1, n)`` members per NVLink domain of
``D`` GPUs and spans ``m = n / k`` domains. Ring reduce-scatter: ``(k-1)/k M/B_nv + (k-1) a_nv`` inside a
domain, plus ``(m-1)/m (M/k)/B_net + ceil(log2 m) a_net`` across domains; all-reduce is twice that;
all-to-all ``max(M (k-1)/n / A_nv, M (n-k)/n / A_net) + a`` with its own (lower) all-to-all bandwidths
``A``; point-to-point ``M / B + a``.

A fabric with round numbers keeps the hand arithmetic readable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from tests.conftest import make_cluster

B_NV, A_NV = 300e9, 3e-6  # NVLink bus bandwidth (B/s) and per-step latency (s)
B_NET, A_NET = 40e9, 10e-6  # scale-out bus bandwidth and per-step latency
A2A_NV, A2A_NET = 200e9, 30e9  # all-to-all bandwidths of the two tiers
D = 8  # GPUs per NVLink domain
M = 1e9  # bytes

FABRIC = Fabric(nvlink_bus_bytes_per_s=B_NV, nvlink_alpha_s=A_NV, net_bus_bytes_per_s=B_NET, net_alpha_s=A_NET,
                domain=float(D), nvlink_a2a_bytes_per_s=A2A_NV, net_a2a_bytes_per_s=A2A_NET)


def arr(x: float) -> np.ndarray:
    return np.asarray([float(x)])


def rs(n: int, stride: int, nbytes: float = M) -> float:
    return float(FABRIC.reduce_scatter_s(arr(nbytes), arr(n), arr(stride), np)[0])


def ar(n: int, stride: int) -> float:
    return float(FABRIC.all_reduce_s(arr(M), arr(n), arr(stride), np)[0])


def a2a(n: int, stride: int) -> float:
    return float(FABRIC.all_to_all_s(arr(M), arr(n), arr(stride), np)[0])


def p2p(stride: int) -> float:
    return float(FABRIC.p2p_s(arr(M), arr(stride), np)[0])


# ---------------------------------------------------------------- members per domain


@pytest.mark.parametrize(("n", "stride", "k"), [(8, 1, 8), (8, 8, 1), (32, 2, 4), (4, 1, 4), (2, 4, 2), (16, 16, 1)])
def test_members_per_domain(n: int, stride: int, k: int) -> None:
    """k = clip(floor(D / stride), 1, n)."""
    assert float(FABRIC.members_per_domain(arr(n), arr(stride), np)[0]) == k


# ---------------------------------------------------------------- one NVLink domain (n=8, stride 1)


def test_reduce_scatter_inside_one_domain() -> None:
    """n=8 ranks of one domain: pure NVLink ring, 7/8 M / B_nv + 7 a_nv."""
    assert rs(8, 1) == pytest.approx(7 / 8 * M / B_NV + 7 * A_NV, rel=1e-12)


def test_all_to_all_inside_one_domain() -> None:
    """n=k=8: 7/8 of the bytes go over NVLink, none over the network; NVLink latency."""
    assert a2a(8, 1) == pytest.approx(M * 7 / 8 / A2A_NV + A_NV, rel=1e-12)


def test_p2p_inside_a_domain() -> None:
    """Neighbours 1 apart share a domain: M / B_nv + a_nv."""
    assert p2p(1) == pytest.approx(M / B_NV + A_NV, rel=1e-12)
    assert p2p(7) == pytest.approx(M / B_NV + A_NV, rel=1e-12)


# ---------------------------------------------------------------- pure scale-out (n=8, stride 8, k=1)


def test_reduce_scatter_pure_scale_out() -> None:
    """n=8 at stride 8: one member per domain (k=1, m=8): 7/8 M / B_net + ceil(log2 8) a_net."""
    assert rs(8, 8) == pytest.approx(7 / 8 * M / B_NET + 3 * A_NET, rel=1e-12)


def test_all_to_all_pure_scale_out() -> None:
    """k=1: (n-1)/n of the bytes cross the network; network latency."""
    assert a2a(8, 8) == pytest.approx(M * 7 / 8 / A2A_NET + A_NET, rel=1e-12)


def test_p2p_across_domains() -> None:
    """Neighbours D or more apart cross the scale-out fabric: M / B_net + a_net."""
    assert p2p(8) == pytest.approx(M / B_NET + A_NET, rel=1e-12)
    assert p2p(64) == pytest.approx(M / B_NET + A_NET, rel=1e-12)


# ---------------------------------------------------------------- hierarchical (n=32, stride 2 -> k=4, m=8)


def test_reduce_scatter_hierarchical() -> None:
    """n=32 at stride 2 in domains of 8: k=4 per domain, m=8 domains:
    3/4 M/B_nv + 3 a_nv + 7/8 (M/4)/B_net + 3 a_net."""
    k, m = 4, 8
    expected = (k - 1) / k * M / B_NV + (k - 1) * A_NV + (m - 1) / m * (M / k) / B_NET \
        + math.ceil(math.log2(m)) * A_NET
    assert rs(32, 2) == pytest.approx(expected, rel=1e-12)


def test_all_to_all_hierarchical() -> None:
    """n=32, k=4: 3/32 of the bytes stay in the domain, 28/32 cross it; tiers concurrent; network latency."""
    expected = max(M * 3 / 32 / A2A_NV, M * 28 / 32 / A2A_NET) + A_NET
    assert a2a(32, 2) == pytest.approx(expected, rel=1e-12)


def dedup(n: int, stride: int, remote_nodes: float, remote_ranks: float, token_bytes: float = M) -> float:
    return float(FABRIC.node_dedup_all_to_all_s(arr(token_bytes), arr(remote_nodes), arr(remote_ranks), arr(n),
                                                arr(stride), np)[0])


def test_node_dedup_inside_one_domain_sends_one_copy_per_other_rank() -> None:
    """n=k=8, a token reaching q=3 other ranks: 3 t bytes over NVLink (q n/(n-1) (k-1)/k t = q t), none over
    the network."""
    assert dedup(8, 1, 0.0, 3.0) == pytest.approx(3.0 * M / A2A_NV + A_NV, rel=1e-12)


def test_node_dedup_across_domains() -> None:
    """n=32 at stride 2 (k=4 per domain, 8 domains), r=2.5 other domains and q=6 other ranks per token:
    network r t / A_net; NVLink q n/(n-1) (k-1)/k t / A_nv = 6 * 32/31 * 3/4 t / A_nv; the larger plus a_net."""
    nv = 6.0 * 32.0 / 31.0 * 3.0 / 4.0 * M / A2A_NV
    net = 2.5 * M / A2A_NET
    assert dedup(32, 2, 2.5, 6.0) == pytest.approx(max(nv, net) + A_NET, rel=1e-12)


def test_non_power_of_two_domain_count_rounds_latency_up() -> None:
    """m=3 domains (n=24, stride 1, k=8): ceil(log2 3) = 2 network latencies."""
    expected = 7 / 8 * M / B_NV + 7 * A_NV + 2 / 3 * (M / 8) / B_NET + 2 * A_NET
    assert rs(24, 1) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize(("n", "stride"), [(8, 1), (8, 8), (32, 2), (2, 1), (1024, 8)])
def test_all_reduce_is_twice_reduce_scatter(n: int, stride: int) -> None:
    """All-reduce = reduce-scatter + all-gather (ring), and all-gather costs what reduce-scatter costs."""
    assert ar(n, stride) == pytest.approx(2 * rs(n, stride), rel=1e-12)
    ag = float(FABRIC.all_gather_s(arr(M), arr(n), arr(stride), np)[0])
    assert ag == pytest.approx(rs(n, stride), rel=1e-12)


@pytest.mark.parametrize("stride", [1, 2, 8, 64])
def test_single_rank_groups_cost_nothing(stride: int) -> None:
    """A group of one rank communicates nothing: reduce-scatter, all-reduce and all-to-all are 0."""
    assert rs(1, stride) == 0.0
    assert ar(1, stride) == 0.0
    assert a2a(1, stride) == 0.0


def test_batch_of_groups_is_element_wise() -> None:
    """Several (n, stride) groups in one call give the single-group results element by element."""
    n = np.asarray([8.0, 8.0, 32.0, 1.0])
    st = np.asarray([1.0, 8.0, 2.0, 4.0])
    out = FABRIC.reduce_scatter_s(np.full(4, M), n, st, np)
    assert [float(x) for x in out] == pytest.approx([rs(8, 1), rs(8, 8), rs(32, 2), 0.0], rel=1e-12)


# ---------------------------------------------------------------- fabric of a shipped cluster


def test_fabric_of_dgx_h100_uses_the_config_numbers() -> None:
    """NVLink bus = unidirectional NVLink (half of the bidirectional aggregate) x NCCL efficiency;
    network bus = NIC line rate (Gb/s / 8) x NIC efficiency / oversubscription; latencies in seconds."""
    gpu = catalogue.gpu("h100")
    raw_cluster = catalogue.raw("cluster", "dgx_h100")
    raw_gpu = catalogue.raw("gpu", "h100")
    fabric = Fabric.of(make_cluster("dgx_h100", "h100"), gpu)
    assert fabric.nvlink_bus_bytes_per_s == pytest.approx(
        raw_gpu["nvlink_gbps"] * 1e9 / 2 * raw_gpu["efficiency"]["nvlink"], rel=1e-12)
    assert fabric.net_bus_bytes_per_s == pytest.approx(
        raw_cluster["nic_gbps"] * 1e9 / 8 * raw_cluster["nic_efficiency"] / raw_cluster["oversubscription"], rel=1e-12)
    assert fabric.nvlink_alpha_s == pytest.approx(raw_cluster["nvlink_latency_us"] * 1e-6)
    assert fabric.net_alpha_s == pytest.approx(raw_cluster["scaleout_latency_us"] * 1e-6)
    assert fabric.domain == raw_cluster["nvlink_domain"]


def test_nvl72_keeps_a_64_rank_group_on_nvlink() -> None:
    """In a 72-GPU NVLink domain a 64-rank group at stride 1 never touches the network (GB200 NVL72)."""
    cluster = make_cluster("gb200_nvl72", "gb200", num_gpus=72)
    fabric = Fabric.of(cluster, catalogue.gpu("gb200"))
    got = float(fabric.reduce_scatter_s(arr(M), arr(64), arr(1), np)[0])
    expected = 63 / 64 * M / fabric.nvlink_bus_bytes_per_s + 63 * fabric.nvlink_alpha_s
    assert got == pytest.approx(expected, rel=1e-12)
