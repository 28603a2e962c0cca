"""Where a token's routed experts live: the expected number of other nodes one token reaches.

A node-deduplicating dispatcher (DeepEP, HybridEP: ``train.moe_dispatcher=flex``) sends a token over
the scale-out network once per destination node, whatever the number of its experts there
(DeepSeek-V3 report Sec 3.2.2). Its network traffic per token is the number of *other* nodes that
hold at least one of the token's experts. This module computes that expectation.

Assumptions (balanced routing, as in throughput benchmarks that force load balance):

- The ``E`` experts are laid out in order over the expert-parallel ranks, so each of the ``N``
  nodes an expert-parallel group spans holds ``E / N`` consecutive experts; the router's ``G``
  groups are consecutive experts too (Megatron-Core and DeepSeek-V3 both number them this way).
- A token picks ``M`` of the ``G`` groups uniformly (``M = G`` without group-limited routing),
  then its ``k`` experts uniformly without replacement among the ``M E / G`` experts of its groups.

Derivation of ``P(a given node is missed)``:

- ``G >= N`` (a node holds ``a = G / N`` whole groups): ``j`` of the node's groups are picked with
  the hypergeometric probability ``C(a, j) C(G - a, M - j) / C(G, M)``; then none of the ``k`` draws
  among the ``P = M E / G`` experts lands on the ``j E / G`` of the node:
  ``prod_{i<k} (P - j E/G - i) / (P - i)``. Sum over ``j = 0..M``.
- ``G < N`` (a group spans ``N / G`` nodes): the node's group is picked with probability ``M / G``;
  then none of the ``k`` draws among ``P`` lands on the node's ``E / N`` experts:
  ``1 - M/G + M/G * prod_{i<k} (P - E/N - i) / (P - i)``.

The expected number of other nodes reached is ``(N - 1) * (1 - P(missed))``, by symmetry. Worked
example, DeepSeek-V3 on EP64 over 8 nodes (``E=256, G=8, M=4, k=8``): ``P(j=0) = C(7,4)/C(8,4) =
1/2``; with ``j=1`` the miss probability is ``prod_{i<8} (96-i)/(128-i) = 0.0888``; ``P(missed) =
0.544``; other nodes per token ``7 * 0.456 = 3.19``, against the ``7`` network copies per token of
an all-to-all that sends each of the 8 routed copies on its own (``k (N-1)/N``).
"""

from __future__ import annotations

from typing import Any

from emulator.cost.arrays import where
from emulator.spec.model import ModelSpec


def _falling_ratio(pool_L: Any, held_L: Any, draws: int, xp: Any) -> Any:
    """``prod_{i<draws} (pool - held - i) / (pool - i)``: no draw (without replacement) of ``draws``
    from ``pool`` lands on ``held`` items; terms below zero are clipped to 0."""
    out = xp.ones_like(pool_L)
    for i in range(draws):
        out = out * xp.clip((pool_L - held_L - i) / (pool_L - i), 0.0, 1.0)
    return out


def _choose(n_L: Any, r: int, xp: Any) -> Any:
    """Binomial coefficient ``C(n, r)`` for a real array ``n`` and integer ``r >= 0`` (0 when ``n < r``
    for integer ``n``)."""
    out = xp.ones_like(n_L)
    for i in range(r):
        out = out * xp.clip(n_L - i, 0.0, None) / (i + 1.0)
    return out


def remote_nodes_per_token(model: ModelSpec, nodes_L: Any, xp: Any) -> Any:
    """Expected number of other nodes holding at least one of a token's experts, for an expert-
    parallel group spread over ``nodes_L`` nodes (module docstring)."""
    E, G, M, k = float(model.num_experts), float(model.router_groups), model.routable_groups, model.experts_per_token
    pool = M * E / G
    pool_L = xp.full_like(nodes_L, pool)
    groups_per_node_L = G / nodes_L
    # G >= N: sum over the number j of the node's groups among the M picked.
    whole = xp.zeros_like(nodes_L)
    total = _choose(xp.full_like(nodes_L, G), M, xp)
    for j in range(M + 1):
        pick_L = _choose(groups_per_node_L, j, xp) * _choose(G - groups_per_node_L, M - j, xp) / total
        whole = whole + pick_L * _falling_ratio(pool_L, xp.full_like(nodes_L, j * E / G), k, xp)
    # G < N: the node's part of one group.
    part = 1.0 - M / G + M / G * _falling_ratio(pool_L, E / nodes_L, k, xp)
    missed_L = where(groups_per_node_L >= 1.0, whole, part, xp)
    return where(nodes_L > 1.0, (nodes_L - 1.0) * (1.0 - missed_L), 0.0, xp)
