"""Node-limited routing and the node-deduplicating (flex) dispatcher, recomputed by hand.

``remote_nodes_per_token``: expected other nodes holding one of a token's experts (emulator.cost.routing);
the flex dispatcher sends a token once over the network per such node and fans it out over NVLink.
"""

from __future__ import annotations

from math import comb, prod

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from emulator.cost.routing import remote_nodes_per_token
from emulator.cost.step import layer_time
from emulator.spec import ConfigError, ModelSpec, TrainSpec
from tests.conftest import make_cluster, one_layout


def _model(experts: int = 256, k: int = 8, groups: int = 1, group_topk: int = 0) -> ModelSpec:
    return ModelSpec(name="m", num_layers=4, hidden_size=1024, num_heads=8, num_kv_heads=8, head_dim=128,
                     ffn_hidden_size=0, num_experts=experts, experts_per_token=k, expert_ffn_hidden_size=512,
                     vocab_size=1000, router_groups=groups, router_group_topk=group_topk)


def _remote(model: ModelSpec, nodes: float) -> float:
    return float(remote_nodes_per_token(model, np.asarray([nodes]), np)[0])


def test_deepseek_v3_node_limited_routing_by_hand() -> None:
    """E=256 in G=8 groups, M=4 groups per token, k=8, EP over 8 nodes (one group per node):
    P(node's group not picked) = C(7,4)/C(8,4) = 1/2; picked, no draw among the 128 experts of the 4
    groups lands on its 32: prod_{i<8} (96-i)/(128-i). Other nodes reached: 7 (1 - P(missed)) = 3.18,
    against 7 network copies per token for an all-to-all of the 8 routed copies."""
    miss_given_picked = prod((96 - i) / (128 - i) for i in range(8))
    missed = comb(7, 4) / comb(8, 4) + (1 - comb(7, 4) / comb(8, 4)) * miss_given_picked
    assert _remote(_model(groups=8, group_topk=4), 8) == pytest.approx(7 * (1 - missed), rel=1e-12)
    assert 3.1 < 7 * (1 - missed) < 3.2


def test_deepseek_v3_config_is_node_limited() -> None:
    model = catalogue.model("deepseek_v3")
    assert (model.router_groups, model.router_group_topk) == (8, 4)
    assert _remote(model, 8) < 4.0  # 'sent to at most 4 nodes' (DeepSeek-V3 report Sec 4.2)


def test_without_groups_a_node_is_missed_when_no_draw_lands_on_it() -> None:
    """No group limit: the 8 draws among 256 experts miss a node's 32 with prob prod (224-i)/(256-i)."""
    missed = prod((224 - i) / (256 - i) for i in range(8))
    assert _remote(_model(), 8) == pytest.approx(7 * (1 - missed), rel=1e-12)


def test_groups_spanning_several_nodes_by_hand() -> None:
    """G=8 < N=16: a node holds half a group (16 experts); its group is picked with prob 4/8, then the 8 draws
    among 128 experts miss its 16 with prob prod (112-i)/(128-i)."""
    missed = 1 - 4 / 8 + 4 / 8 * prod((112 - i) / (128 - i) for i in range(8))
    assert _remote(_model(groups=8, group_topk=4), 16) == pytest.approx(15 * (1 - missed), rel=1e-12)


def test_one_node_sends_nothing_over_the_network() -> None:
    assert _remote(_model(groups=8, group_topk=4), 1) == 0.0


def test_matches_a_monte_carlo_of_the_stated_routing() -> None:
    """G=16 groups of 4 experts over N=4 nodes (4 groups per node), M=6, k=6: sample the routing."""
    rng = np.random.default_rng(7)
    model = _model(experts=64, k=6, groups=16, group_topk=6)
    n_tok, nodes = 40_000, 4
    hits = 0.0
    for _ in range(n_tok):
        groups = rng.choice(16, size=6, replace=False)
        experts = rng.choice(np.concatenate([np.arange(g * 4, g * 4 + 4) for g in groups]), size=6, replace=False)
        hits += len({int(e) // 16 for e in experts} - {0})  # this token lives on node 0
    assert _remote(model, nodes) == pytest.approx(hits / n_tok, rel=0.02)


def test_flex_dispatch_by_hand() -> None:
    """EP64 over 8 H100 nodes, etp 1, T = 4096 tokens: the flex dispatcher moves r T h bytes per rank over
    the network (r other nodes per token) and one copy per other rank reached, q 64/63 7/8 T h, over NVLink
    (q other ranks per token; both from remote_nodes_per_token), per dispatch and per combine; the
    all-to-all moves 56/64 of the T k h routed copies over the network."""
    model = _model(groups=8, group_topk=4)
    cluster = make_cluster(num_gpus=512)
    gpu = catalogue.gpu("h100")
    fabric = Fabric.of(cluster, gpu)
    lay = one_layout(tp=1, dp=512, ep=64, etp=1)
    tokens, h, k = 4096, 1024, 8
    r = _remote(model, 8)
    q = _remote(model, 64)

    def ep_fwd(dispatcher: str) -> float:
        train = TrainSpec(seq_len=4096, global_batch=512, moe_dispatcher=dispatcher)
        return float(layer_time(model, train, lay, gpu, fabric, np, True).ep_fwd_s_L[0])

    token_bytes = 2 * tokens * h
    intra = q * 64 / 63 * 7 / 8 * token_bytes / fabric.nvlink_a2a_bytes_per_s
    inter = r * token_bytes / fabric.net_a2a_bytes_per_s
    assert ep_fwd("flex") == pytest.approx(2 * (max(intra, inter) + fabric.net_alpha_s), rel=1e-12)
    a2a_inter = 56 / 64 * token_bytes * k / fabric.net_a2a_bytes_per_s
    a2a_intra = 7 / 64 * token_bytes * k / fabric.nvlink_a2a_bytes_per_s
    assert ep_fwd("alltoall") == pytest.approx(2 * (max(a2a_intra, a2a_inter) + fabric.net_alpha_s), rel=1e-12)
    assert ep_fwd("flex") < 0.5 * ep_fwd("alltoall")


@pytest.mark.parametrize(("groups", "topk", "key"), [(3, 0, "model.router_groups"),
                                                       (8, 9, "model.router_group_topk"),
                                                       (64, 1, "model.experts_per_token")])
def test_bad_routing_groups_are_refused(groups: int, topk: int, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _model(groups=groups, group_topk=topk)


def test_bad_dispatcher_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train\.moe_dispatcher"):
        TrainSpec(seq_len=1, global_batch=1, moe_dispatcher="deepep")
