"""MoE all-to-all overlap (``parallel.ep_comm_overlap``, Megatron-Core overlap_moe_expert_parallel_comm),
recomputed by hand.

Per layer, a merged forward/backward runs three phases (communication | compute): backward combine |
attention forward; forward + backward dispatch | MLP forward + backward; forward combine | attention
backward. Each all-to-all takes ``a = ep_one / 2``; a phase exposes ``max(s E, E - C)`` with
``s = moe_comm_sms / sm_count``. Per micro-batch: ``u ep + (1 - u) ep_paired``, ``u = w / (m vpp)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import Tokens, attention_ops, layer_ops
from emulator.cost.roofline import block_time
from emulator.cost.step import layer_time, nominal
from emulator.spec import ConfigError, ModelSpec, ParallelSpec, TrainSpec
from tests.conftest import make_cluster, one_layout

MOE = ModelSpec(name="m", num_layers=8, hidden_size=2048, num_heads=16, num_kv_heads=4, head_dim=128,
                ffn_hidden_size=0, num_experts=64, experts_per_token=8, expert_ffn_hidden_size=1024,
                vocab_size=32000, gated_mlp=True)


def _train(sms: int = 20) -> TrainSpec:
    return TrainSpec(seq_len=4096, global_batch=256, moe_comm_sms=sms)


def test_paired_layer_exposure_by_hand() -> None:
    """EP 32 over 4 nodes (etp 1): the all-to-all crosses the network, so a phase can outlast its compute."""
    cluster = make_cluster(num_gpus=32)
    gpu = catalogue.gpu("h100")
    fabric = Fabric.of(cluster, gpu)
    lay = one_layout(dp=32, ep=32, etp=1)
    train = _train()
    lt = layer_time(MOE, train, lay, gpu, fabric, np, True)
    blk = block_time(layer_ops(MOE, train, lay, np, True), gpu, "bf16", np)
    n = len(attention_ops(MOE, train, lay, Tokens.of(train, lay), np))
    attn_f = sum(float(t.fwd_s_L[0]) for t in blk.by_op[:n])
    attn_b = sum(float(t.bwd_s_L[0]) for t in blk.by_op[:n])
    mlp = sum(float(t.fwd_s_L[0] + t.bwd_s_L[0]) for t in blk.by_op[n:])
    a = float(lt.ep_fwd_s_L[0]) / 2
    s = 20 / 132
    want = max(s * a, a - attn_f) + max(s * 2 * a, 2 * a - mlp) + max(s * a, a - attn_b)
    assert float(lt.ep_paired_s_L[0]) == pytest.approx(want, rel=1e-12)
    assert float(lt.ep_paired_s_L[0]) < 4 * a  # overlap hides something
    # With no SMs held the compute-covered phases expose nothing.
    free = layer_time(MOE, _train(0), lay, gpu, fabric, np, True)
    assert float(free.ep_paired_s_L[0]) == pytest.approx(
        max(0.0, a - attn_f) + max(0.0, 2 * a - mlp) + max(0.0, a - attn_b), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("pp", "vpp", "warm"), [(1, 1, 1), (2, 2, 2 * 1 + 1 * 2), (4, 2, 2 * 3 + 1 * 4)])
def test_unpaired_passes_stay_exposed(pp: int, vpp: int, warm: int) -> None:
    """ep_comm = m (u ep + (1 - u) ep_paired) with u = w / (m vpp); without the overlap m ep."""
    cluster = make_cluster(num_gpus=64)
    train = _train()
    par = dict(pp=pp, vpp=vpp, dp=64 // pp, ep=8, etp=1)
    off = nominal(MOE, train, cluster, LayoutBatch.from_specs([ParallelSpec(**par)], np), np)  # type: ignore[arg-type]
    on = nominal(MOE, train, cluster,
                 LayoutBatch.from_specs([ParallelSpec(**par, ep_comm_overlap=True)], np), np)  # type: ignore[arg-type]
    m = 256 / (64 // pp)
    u = warm / (m * vpp)
    gpu = catalogue.gpu("h100")
    fabric = Fabric.of(cluster, gpu)
    lt = layer_time(MOE, train, one_layout(**par), gpu, fabric, np, True)
    layers = 8 / (pp * vpp) * vpp  # layers on a pipeline rank
    ep, paired = 2 * float(lt.ep_fwd_s_L[0]) * layers, float(lt.ep_paired_s_L[0]) * layers
    assert float(off.breakdown_s["ep_comm"][0]) == pytest.approx(m * ep, rel=1e-9)
    assert float(on.breakdown_s["ep_comm"][0]) == pytest.approx(m * (u * ep + (1 - u) * paired), rel=1e-9)
    assert float(on.step_time_s_L[0]) < float(off.step_time_s_L[0])


@pytest.mark.parametrize(("par", "why"), [
    (dict(dp=8), "needs parallel.ep > 1"),
    (dict(pp=2, dp=4, ep=4), "needs parallel.vpp > 1 with parallel.pp=2"),
    (dict(dp=8, ep=8, recompute="full"), "cannot be combined with parallel.recompute=full"),
    (dict(dp=8, ep=8, recompute="selective", recompute_modules=("moe_act", "moe")),
     "cannot be combined with moe in parallel.recompute_modules"),
])
def test_the_gate_refuses_what_megatron_core_refuses(par: dict[str, object], why: str) -> None:
    """Megatron-Core's TransformerConfig asserts, under overlap_moe_expert_parallel_comm: ep > 1, a virtual
    pipeline size with pp > 1, no full recomputation and no recomputed moe module."""
    with pytest.raises(ConfigError, match="parallel.ep_comm_overlap=true: " + why):
        ParallelSpec(**par, ep_comm_overlap=True)  # type: ignore[arg-type]
    ParallelSpec(**par)  # type: ignore[arg-type]  # valid without the overlap
