"""Expert tensor parallelism (parallel.etp) and MoE parallel folding, recomputed by hand.

With ``etp = e`` experts are split ``e`` ways; the expert grid ``e x ep`` is carved out of the ``tp x cp x dp``
GPUs of a stage, ranks ordered etp fastest, then ep (Megatron-Core >= 0.10). Per GPU and micro-batch (``T``
tokens of the local sequence shard, top-``k`` routing, SP on):

- routed pairs computed: ``T k e / tp``, on an expert slice of ``f / e``: fc1 FLOPs ``2 T k h g f / tp`` for
  every ``e``;
- expert parameters held: ``E P_expert / (ep e)``; expert replicas (expert data parallelism) ``tp cp dp / (e ep)``;
- fc1 input kept for backward: ``2 T k e h / tp`` bytes;
- exposed expert-TP traffic: an all-gather and a reduce-scatter per direction of ``2 T k e h / tp`` bytes over
  ``e`` adjacent GPUs;
- dispatch + combine all-to-all of ``2 T k h / tp`` bytes per GPU over ``ep`` ranks ``e`` apart.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from emulator.cost.memory import activation_bytes_per_layer, memory_per_gpu
from emulator.cost.ops import layer_ops
from emulator.cost.step import layer_time
from emulator.spec import ConfigError, ModelSpec, ParallelSpec, TrainSpec
from tests.conftest import make_cluster, one_layout

H, E, K, FE = 512, 8, 2, 1024
MOE = ModelSpec(name="m", num_layers=2, hidden_size=H, num_heads=8, num_kv_heads=8, head_dim=64,
                ffn_hidden_size=0, num_experts=E, experts_per_token=K, expert_ffn_hidden_size=FE,
                vocab_size=1000, gated_mlp=True)
TRAIN = TrainSpec(seq_len=2048, global_batch=64)
T = 2048  # micro_batch 1, cp 1


def _ops(**layout: object) -> dict[str, object]:
    return {op.name: op for op in layer_ops(MOE, TRAIN, one_layout(**layout), np, moe=True)}


@pytest.mark.parametrize("etp", [1, 2, 4])
def test_expert_gemms_by_hand(etp: int) -> None:
    """tp=2, ep=4: FLOPs per GPU do not depend on etp; each of the E/ep local experts' GEMMs has
    T k etp / tp / (E/ep) rows and a slice f/etp wide; the weights read are (E/ep) h 2 f / etp."""
    tp, ep = 2, 4
    ops = _ops(tp=tp, dp=8, ep=ep, etp=etp)
    fc1 = ops["expert_fc1"]
    total = 2 * T * K * H * 2 * FE / tp
    assert float(fc1.flops_L[0]) == pytest.approx(total, rel=1e-12)  # type: ignore[attr-defined]
    rows = T * K * etp / tp / (E / ep)
    assert float(fc1.kernel_flops_L[0]) == pytest.approx(2 * rows * H * 2 * FE / etp, rel=1e-12)  # type: ignore[attr-defined]
    pairs = T * K * etp / tp
    weights = (E / ep) * H * 2 * FE / etp
    expected_bytes = 2 * pairs * H + 2 * weights + 2 * pairs * 2 * FE / etp
    assert float(fc1.bytes_L[0]) == pytest.approx(expected_bytes, rel=1e-12)  # type: ignore[attr-defined]


def test_etp_equal_to_tp_is_the_default() -> None:
    """parallel.etp=0 means tp (Megatron-Core's default): the same ops as etp=tp."""
    a, b = _ops(tp=2, dp=8, ep=4), _ops(tp=2, dp=8, ep=4, etp=2)
    for name, op in a.items():
        assert float(op.bytes_L[0]) == float(b[name].bytes_L[0]), name  # type: ignore[attr-defined]


def test_expert_parameters_and_replicas_by_hand() -> None:
    """tp=2, dp=4, ep=4, etp=2: 2 layers hold (attention 4 h^2 / tp + router h E) each, two vocabulary tables
    V h / tp, and experts 2 * E * (2 h f) / (ep etp) (plain MLP: 2 matrices); ZeRO-1 shards the 12 B of
    optimizer state over dp cp = 4 dense replicas and tp cp dp / (etp ep) = 1 expert replica."""
    moe = ModelSpec(name="moe_state", num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=4, head_dim=32,
                    ffn_hidden_size=0, num_experts=8, experts_per_token=2, expert_ffn_hidden_size=256,
                    vocab_size=500, gated_mlp=False)
    tp, dp, ep, etp = 2, 4, 4, 2
    dense = 2 * (4 * 128 * 128 / tp + 128 * 8) + 2 * 500 * 128 / tp
    experts = 2 * 8 * (2 * 128 * 256) / (ep * etp)
    mem = memory_per_gpu(moe, TrainSpec(seq_len=256, global_batch=64), one_layout(tp=tp, dp=dp, ep=ep, etp=etp,
                                                                                   zero=1), catalogue.gpu("h100"), np)
    assert float(mem.weights_L[0]) == pytest.approx(2 * (dense + experts), rel=1e-12)
    assert float(mem.optimizer_L[0]) == pytest.approx(12 * (dense / dp + experts / 1), rel=1e-12)


def test_fc1_input_grows_with_etp() -> None:
    """The fc1 input kept for backward is the T k etp / tp pairs of h a GPU computes (2 B each): going from
    etp=1 to etp=2 at tp=2 adds 2 T k h (2 - 1) / 2 bytes per layer; nothing else changes."""
    one = float(activation_bytes_per_layer(MOE, TRAIN, one_layout(tp=2, dp=8, ep=4, etp=1), np, moe=True)[0])
    two = float(activation_bytes_per_layer(MOE, TRAIN, one_layout(tp=2, dp=8, ep=4, etp=2), np, moe=True)[0])
    assert two - one == pytest.approx(2 * T * K * H * (2 - 1) / 2, rel=1e-12)


def test_expert_tp_traffic_is_exposed_by_hand() -> None:
    """Per direction the dispatcher all-gathers and reduce-scatters M = 2 T k etp h / tp bytes over etp
    adjacent GPUs: 2 ((e-1)/e M / B_nv + (e-1) a_nv), on top of the attention's (overlapped) TP traffic,
    which does not depend on etp. etp=1 adds nothing."""
    cluster = make_cluster(num_gpus=16)
    gpu = catalogue.gpu("h100")
    fabric = Fabric.of(cluster, gpu)
    tp, e = 2, 2

    def tp_fwd(etp: int) -> float:
        lay = one_layout(tp=tp, dp=8, ep=4, etp=etp)
        return float(layer_time(MOE, TRAIN, lay, gpu, fabric, np, True).tp_fwd_s_L[0])

    m = 2 * T * K * e * H / tp
    by_hand = 2 * ((e - 1) / e * m / fabric.nvlink_bus_bytes_per_s + (e - 1) * fabric.nvlink_alpha_s)
    assert tp_fwd(2) - tp_fwd(1) == pytest.approx(by_hand, rel=1e-9)


def test_all_to_all_ranks_are_etp_apart() -> None:
    """tp=4, cp=2, ep=8 on 8-GPU nodes, M = 2 T k h / tp bytes sent per GPU (T = 2048 / cp = 1024):
    etp=1: the 8 expert-parallel ranks are one node, 7/8 M / A_nv + a_nv per all-to-all;
    etp=4: ranks 4 apart, 2 per node, so 6/8 of M crosses the scale-out fabric: 6/8 M / A_net + a_net
    (A: the all-to-all bandwidths of the two tiers).
    Dispatch + combine: twice that per direction."""
    cluster = make_cluster(num_gpus=64)
    gpu = catalogue.gpu("h100")
    fabric = Fabric.of(cluster, gpu)
    tokens = 2048 / 2
    m = 2 * tokens * K * H / 4

    def ep_fwd(etp: int) -> float:
        lay = one_layout(tp=4, cp=2, dp=8, ep=8, etp=etp)
        return float(layer_time(MOE, TRAIN, lay, gpu, fabric, np, True).ep_fwd_s_L[0])

    assert ep_fwd(1) == pytest.approx(2 * (7 / 8 * m / fabric.nvlink_a2a_bytes_per_s + fabric.nvlink_alpha_s),
                                      rel=1e-12)
    intra = 1 / 8 * m / fabric.nvlink_a2a_bytes_per_s
    inter = 6 / 8 * m / fabric.net_a2a_bytes_per_s
    assert ep_fwd(4) == pytest.approx(2 * (max(intra, inter) + fabric.net_alpha_s), rel=1e-12)


def test_folding_allows_expert_parallelism_beyond_dp_cp() -> None:
    """Without folding ep must divide dp x cp; with etp=1 it must only divide tp x cp x dp: Grok 2's 8 experts
    on 20,000 GPUs (tp=8, pp=4, dp=625) fit one per GPU of a node."""
    with pytest.raises(ConfigError) as err:
        ParallelSpec(tp=8, pp=4, dp=625, ep=8)
    assert err.value.key == "parallel.ep"
    assert ParallelSpec(tp=8, pp=4, dp=625, ep=8, etp=1).expert_tp == 1
    with pytest.raises(ConfigError) as err:
        ParallelSpec(tp=8, pp=4, dp=625, ep=8, etp=2)  # 16 does not divide 5,000
    assert err.value.key == "parallel.etp"
