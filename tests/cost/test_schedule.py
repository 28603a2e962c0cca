"""The nominal step (emulator/cost/step.py): 1F1B schedule, exposed communication, optimizer, breakdown.

Schedule (Narayanan et al. 2021, Sec. 2.2): ``m = global_batch / (dp * micro_batch)`` micro-batches,
``steady = m * t_fb`` and ``bubble = (pp - 1) / vpp * t_fb`` where ``t_fb`` is one micro-batch's forward +
backward (+ recompute + exposed TP/CP/EP communication + host idle) on the heaviest stage. The breakdown keys
compute, tp_comm, cp_comm, ep_comm and other are ``m`` times the per-micro-batch parts of that stage.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from emulator.cost.flops import model_flops_per_token
from emulator.cost.layout import LayoutBatch
from emulator.cost.step import BREAKDOWN_KEYS, NominalResult, nominal
from emulator.spec import ModelSpec, ParallelSpec, TrainSpec
from tests.cost.conftest import sized_cluster

# 8 equal dense layers: pp=2 or 4 gives equal layer counts per stage.
MODEL = ModelSpec(name="eq", num_layers=8, hidden_size=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                  ffn_hidden_size=4096, vocab_size=32000, gated_mlp=True)
PER_MB_KEYS = ("compute", "tp_comm", "cp_comm", "ep_comm", "other")


def run(model: ModelSpec = MODEL, seq_len: int = 2048, global_batch: int = 32, precision: str = "bf16",
        gpu: str = "h100", **layout: object) -> NominalResult:
    par = ParallelSpec(**layout)  # type: ignore[arg-type]
    train = TrainSpec(seq_len=seq_len, global_batch=global_batch, precision=precision)
    cluster = sized_cluster(par.num_gpus, gpu)
    return nominal(model, train, cluster, LayoutBatch.from_specs([par], np), np)


def parts(res: NominalResult) -> dict[str, float]:
    return {k: float(v[0]) for k, v in res.breakdown_s.items()}


def step(res: NominalResult) -> float:
    return float(res.step_time_s_L[0])


# ---------------------------------------------------------------- breakdown


@pytest.mark.parametrize("layout", [dict(tp=2, pp=2, dp=2), dict(pp=4, vpp=2, dp=2), dict(tp=4, dp=2, cp=2),
                                    dict(dp=8, zero=3), dict(tp=8, recompute="full")])
def test_breakdown_sums_to_step_time(layout: dict[str, object]) -> None:
    """step = compute + tp + pp + dp + cp + ep comm + bubble + optimizer + other (the summary contract)."""
    res = run(**layout)
    b = parts(res)
    assert set(b) == set(BREAKDOWN_KEYS)
    assert all(v >= 0.0 for v in b.values()), b
    assert sum(b.values()) == pytest.approx(step(res), rel=1e-12)


# ---------------------------------------------------------------- bubble


@pytest.mark.parametrize(("pp", "vpp"), [(2, 1), (4, 1), (2, 2), (4, 2)])
def test_bubble_is_pp_minus_1_over_vpp_stage_times(pp: int, vpp: int) -> None:
    """bubble = (pp - 1) / vpp x t_fb, with t_fb = (compute + tp + cp + ep + other) / m on the heaviest stage."""
    gb, dp, mb = 32, 2, 1
    m = gb / (dp * mb)
    b = parts(run(global_batch=gb, pp=pp, vpp=vpp, dp=dp, micro_batch=mb))
    t_fb = sum(b[k] for k in PER_MB_KEYS) / m
    assert b["bubble"] == pytest.approx((pp - 1) / vpp * t_fb, rel=1e-12)


def test_interleaving_halves_the_bubble() -> None:
    """vpp=2 holds the same layers per stage in two chunks: half the bubble of vpp=1
    (Narayanan et al. 2021 Sec 2.2.2)."""
    b1 = parts(run(pp=4, vpp=1, dp=2))
    b2 = parts(run(pp=4, vpp=2, dp=2))
    assert b2["bubble"] == pytest.approx(b1["bubble"] / 2, rel=1e-12)
    assert b2["compute"] == pytest.approx(b1["compute"], rel=1e-12)


def test_doubling_the_batch_doubles_compute_not_bubble() -> None:
    """Twice the micro-batches: steady-state compute doubles, the fill/drain bubble stays."""
    one = parts(run(global_batch=32, pp=4, dp=2))
    two = parts(run(global_batch=64, pp=4, dp=2))
    assert two["compute"] == pytest.approx(2 * one["compute"], rel=1e-12)
    assert two["bubble"] == pytest.approx(one["bubble"], rel=1e-12)


def test_no_bubble_without_pipeline() -> None:
    """pp=1: no fill and drain."""
    assert parts(run(dp=8))["bubble"] == 0.0


# ---------------------------------------------------------------- communication terms vanish without the axis


def test_pp_comm_is_zero_when_pp_is_1() -> None:
    """No pipeline, no send/recv."""
    assert parts(run(tp=2, dp=4))["pp_comm"] == 0.0


def test_dp_comm_is_zero_when_dp_is_1() -> None:
    """One data-parallel replica (and cp=1): no gradient reduction."""
    assert parts(run(tp=8, dp=1))["dp_comm"] == 0.0
    assert parts(run(tp=4, pp=2, dp=1, zero=0))["dp_comm"] == 0.0


def test_tp_comm_is_zero_when_tp_is_1() -> None:
    """No tensor parallelism, no all-gather / reduce-scatter of activations."""
    assert parts(run(dp=8))["tp_comm"] == 0.0
    assert parts(run(dp=8, tp_comm_overlap=False))["tp_comm"] == 0.0


def test_cp_and_ep_comm_are_zero_for_a_dense_model_without_cp() -> None:
    """cp=1: no ring attention exchange; a dense model has no all-to-all."""
    b = parts(run(tp=2, dp=4))
    assert b["cp_comm"] == 0.0
    assert b["ep_comm"] == 0.0


def test_comm_terms_appear_with_their_axis() -> None:
    """tp > 1, pp > 1 and dp > 1 each cost something when not hidden (overlap off)."""
    b = parts(run(tp=2, pp=2, dp=2, tp_comm_overlap=False, pp_comm_overlap=False, dp_comm_overlap=False))
    assert b["tp_comm"] > 0.0
    assert b["pp_comm"] > 0.0
    assert b["dp_comm"] > 0.0


def test_pp_comm_by_hand() -> None:
    """Overlapped 1F1B exposes 2 (pp - 1) send/recv of the T x h / tp BF16 activation; neighbours tp*cp*dp = 4 ranks
    apart share the 8-GPU NVLink domain: each costs 2 T h / tp / B_nv + a_nv. Without overlap every transfer of every
    micro-batch is exposed: 2 (m vpp + pp - 1)."""
    gb, pp, dp, mb, s, h = 32, 2, 4, 1, 2048, 1024
    m = gb / (dp * mb)
    fabric = Fabric.of(sized_cluster(8), catalogue.gpu("h100"))
    one = 2 * mb * s * h / 1 / fabric.nvlink_bus_bytes_per_s + fabric.nvlink_alpha_s
    assert parts(run(global_batch=gb, pp=pp, dp=dp))["pp_comm"] == pytest.approx(2 * (pp - 1) * one, rel=1e-12)
    exposed = parts(run(global_batch=gb, pp=pp, dp=dp, pp_comm_overlap=False))["pp_comm"]
    assert exposed == pytest.approx(2 * (m * 1 + pp - 1) * one, rel=1e-12)


def test_tp_comm_without_overlap_by_hand() -> None:
    """Megatron TP+SP per layer and direction: 2 all-gathers + 2 reduce-scatters of the T x h BF16 activation, each
    (t-1)/t M / B_nv + (t-1) a_nv inside the node; exposed in forward and backward of every layer and micro-batch."""
    gb, tp, dp, s, h, L = 32, 2, 4, 2048, 1024, 8
    m = gb / dp
    fabric = Fabric.of(sized_cluster(8), catalogue.gpu("h100"))
    M = 2 * 1 * s * h
    one = (tp - 1) / tp * M / fabric.nvlink_bus_bytes_per_s + (tp - 1) * fabric.nvlink_alpha_s
    got = parts(run(global_batch=gb, tp=tp, dp=dp, tp_comm_overlap=False))["tp_comm"]
    assert got == pytest.approx(m * L * 2 * 4 * one, rel=1e-12)
    # full recompute repeats the forward collectives
    full = parts(run(global_batch=gb, tp=tp, dp=dp, tp_comm_overlap=False, recompute="full"))["tp_comm"]
    assert full == pytest.approx(m * L * 3 * 4 * one, rel=1e-12)




def test_dp_comm_without_overlap_by_hand() -> None:
    """ZeRO-1 without overlap: reduce-scatter of the fp32 gradients + all-gather of the BF16 weights over dp=8 ranks in
    one NVLink domain: 7/8 (4P)/B_nv + 7 a_nv + 7/8 (2P)/B_nv + 7 a_nv, P = all parameters (pp=1, tp=1)."""
    P = MODEL.total_params()
    fabric = Fabric.of(sized_cluster(8), catalogue.gpu("h100"))
    bw, a = fabric.nvlink_bus_bytes_per_s, fabric.nvlink_alpha_s
    expected = 7 / 8 * 4 * P / bw + 7 * a + 7 / 8 * 2 * P / bw + 7 * a
    assert parts(run(dp=8, zero=1, dp_comm_overlap=False))["dp_comm"] == pytest.approx(expected, rel=1e-12)
    # ZeRO-0 all-reduces the fp32 gradients: 2 x reduce-scatter of 4P
    ddp = parts(run(dp=8, zero=0, dp_comm_overlap=False))["dp_comm"]
    assert ddp == pytest.approx(2 * (7 / 8 * 4 * P / bw + 7 * a), rel=1e-12)


def test_optimizer_step_by_hand() -> None:
    """Adam step streams 30 B per locally owned (ZeRO-1 sharded) parameter plus 8 B per parameter of gradient
    norm and zeroing, at the achievable HBM bandwidth."""
    P = MODEL.total_params()
    gpu = catalogue.gpu("h100")
    expected = (30 * P / 8 + 8 * P) / (gpu.hbm_bytes_per_s * gpu.efficiency.hbm)
    assert parts(run(dp=8, zero=1))["optimizer"] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- recompute and precision


def test_recompute_costs_time() -> None:
    """Recomputation only adds work: none <= selective <= full (same layout otherwise)."""
    times = {rc: step(run(tp=2, pp=2, dp=2, recompute=rc)) for rc in ("none", "selective", "full")}
    assert times["none"] <= times["selective"] <= times["full"]
    assert times["none"] < times["full"]


def test_full_recompute_adds_one_forward() -> None:
    """Full recompute runs each layer's forward again: compute grows by about a third of fwd+bwd (less the
    embedding/logits, which are not recomputed), never by more."""
    none = parts(run(dp=8, recompute="none"))["compute"]
    full = parts(run(dp=8, recompute="full"))["compute"]
    assert none < full <= none * (1 + 1 / 3) * 1.0000001


def test_fp8_is_faster_than_bf16_for_a_large_dense_model_on_h100() -> None:
    """FP8 GEMMs on H100 (2x the dense BF16 peak) make a Llama 3 70B step shorter than BF16."""
    model = catalogue.model("llama3_70b")
    kw = dict(model=model, seq_len=8192, global_batch=64, tp=8, pp=2, dp=4, vpp=5, recompute="selective")
    assert step(run(precision="fp8", **kw)) < step(run(precision="bf16", **kw))  # type: ignore[arg-type]


def test_mfu_is_model_flops_over_peak() -> None:
    """MFU = 6N-style model FLOPs per token x tokens / step / GPUs / dense peak (Megatron convention)."""
    res = run(dp=8, global_batch=32)
    tokens = 32 * 2048
    expected = model_flops_per_token(MODEL, 2048) * tokens / step(res) / 8 / catalogue.gpu("h100").bf16_flops_per_s
    assert float(res.mfu_L[0]) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < float(res.mfu_L[0]) < 1.0
