"""Roofline time of one op (emulator/cost/roofline.py), recomputed by hand from the GPU config.

``time = max(flops / (peak * eff_flops), bytes / (hbm * eff_hbm))`` (+ launch overhead for element-wise kernels),
with the GEMM curve ``eff_flops(F) = gemm_max * F / (F + F_half)``, i.e. ``time = (F + F_half) / (peak * gemm_max)``
for a compute-bound GEMM. The GPU numbers are read from the spec (calibration may change them), never hard-coded.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.ops import ATTENTION, ATTENTION_FA2, GEMM, GEMM_BF16, MEMORY, Op, Tokens, attention_ops
from emulator.cost.roofline import block_time, op_time, recomputed_weights, weighted_fwd_s
from emulator.spec import ModelSpec, TrainSpec
from tests.conftest import one_layout

GPU = catalogue.gpu("h100")
EFF = GPU.efficiency
HBM = GPU.hbm_bytes_per_s * EFF.hbm


def a(x: float) -> np.ndarray:
    return np.asarray([float(x)])


def gemm(flops: float, nbytes: float, kind: str = GEMM, kernels: float = 1.0) -> Op:
    return Op("g", kind, a(flops), a(nbytes), a(flops / kernels), kernels=kernels)


def test_large_compute_bound_gemm() -> None:
    """A 1 TFLOP GEMM reading 100 MB: (F + F_half) / (peak x gemm_max); backward 2x; not memory-bound."""
    F = 1e12
    t = op_time(gemm(F, 1e8), GPU, "bf16", np)
    expected = (F + EFF.gemm_half_flops) / (GPU.bf16_flops_per_s * EFF.gemm_bf16)
    assert float(t.fwd_s_L[0]) == pytest.approx(expected, rel=1e-12)
    assert float(t.bwd_s_L[0]) == pytest.approx(2 * expected, rel=1e-12)
    assert float(t.memory_bound_s_L[0]) == 0.0


def test_gemm_of_half_flops_runs_at_half_efficiency() -> None:
    """A GEMM of exactly F_half FLOPs runs at gemm_max / 2 of the peak."""
    F = EFF.gemm_half_flops
    t = float(op_time(gemm(F, 1.0), GPU, "bf16", np).fwd_s_L[0])
    assert F / t == pytest.approx(GPU.bf16_flops_per_s * EFF.gemm_bf16 / 2, rel=1e-12)


def test_memory_bound_gemm() -> None:
    """A skinny GEMM moving 10 GB for 1 GFLOP is set by HBM: bytes / (hbm x eff); all of fwd+bwd is memory-bound."""
    t = op_time(gemm(1e9, 1e10), GPU, "bf16", np)
    assert float(t.fwd_s_L[0]) == pytest.approx(1e10 / HBM, rel=1e-12)
    assert float(t.memory_bound_s_L[0]) == pytest.approx(3 * 1e10 / HBM, rel=1e-12)


def test_fp8_gemm_uses_the_fp8_peak_but_bf16_gemm_does_not() -> None:
    """Under fp8 a GEMM runs at fp8 peak x gemm_fp8; a GEMM_BF16 (output layer, router) stays at BF16."""
    F = 1e12
    fp8 = float(op_time(gemm(F, 1.0), GPU, "fp8", np).fwd_s_L[0])
    assert fp8 == pytest.approx((F + EFF.gemm_half_flops) / (GPU.fp8_flops_per_s * EFF.gemm_fp8), rel=1e-12)
    bf16 = float(op_time(gemm(F, 1.0, kind=GEMM_BF16), GPU, "fp8", np).fwd_s_L[0])
    assert bf16 == pytest.approx((F + EFF.gemm_half_flops) / (GPU.bf16_flops_per_s * EFF.gemm_bf16), rel=1e-12)


def test_grouped_gemm_pays_the_curve_per_kernel() -> None:
    """E kernels of F/E FLOPs each: the per-kernel size sets the curve, (F + E F_half) / (peak gemm_max)."""
    F, E = 1e12, 8.0
    t = float(op_time(gemm(F, 1.0, kernels=E), GPU, "bf16", np).fwd_s_L[0])
    assert t == pytest.approx((F + E * EFF.gemm_half_flops) / (GPU.bf16_flops_per_s * EFF.gemm_bf16), rel=1e-12)


def test_elementwise_kernel() -> None:
    """Element-wise: bytes / (hbm x eff) + kernels x overhead; backward = factor x forward; all memory-bound."""
    op = Op("m", MEMORY, a(0.0), a(1e9), a(0.0), kernels=3.0, bwd_factor=1.5)
    t = op_time(op, GPU, "bf16", np)
    fwd = 1e9 / HBM + 3 * EFF.kernel_overhead_s
    assert float(t.fwd_s_L[0]) == pytest.approx(fwd, rel=1e-12)
    assert float(t.bwd_s_L[0]) == pytest.approx(1.5 * fwd, rel=1e-12)
    assert float(t.memory_bound_s_L[0]) == pytest.approx(2.5 * fwd, rel=1e-12)


def test_attention_forward_and_backward_efficiencies() -> None:
    """Fused attention: forward F / (bf16 peak x attention_fwd), backward 2.5 F / (peak x attention_bwd), also
    under fp8 (the attention core stays BF16)."""
    F = 1e12
    op = Op("attn", ATTENTION, a(F), a(1e6), a(F))
    t = op_time(op, GPU, "fp8", np)
    assert float(t.fwd_s_L[0]) == pytest.approx(F / (GPU.bf16_flops_per_s * EFF.attention_fwd), rel=1e-12)
    assert float(t.bwd_s_L[0]) == pytest.approx(2.5 * F / (GPU.bf16_flops_per_s * EFF.attention_bwd), rel=1e-12)


def test_block_time_sums_ops_and_selective_part() -> None:
    """A block's forward/backward are the sums over its ops; the selective-recompute time is the forward of the ops
    in a module that parallel.recompute_modules names (an op in two named modules once), none without selective."""
    g = gemm(1e12, 1e8)
    attn = Op("attn", ATTENTION, a(1e11), a(1e6), a(1e11), modules=("core_attn",))
    mem = Op("m", MEMORY, a(0.0), a(1e9), a(0.0), modules=("moe_act", "moe"))
    blk = block_time([g, attn, mem], GPU, "bf16", np)
    parts = [op_time(o, GPU, "bf16", np) for o in (g, attn, mem)]
    assert float(blk.fwd_s_L[0]) == pytest.approx(sum(float(p.fwd_s_L[0]) for p in parts), rel=1e-12)
    assert float(blk.bwd_s_L[0]) == pytest.approx(sum(float(p.bwd_s_L[0]) for p in parts), rel=1e-12)
    attn_f, mem_f = float(parts[1].fwd_s_L[0]), float(parts[2].fwd_s_L[0])
    cases = [(dict(recompute="none"), 0.0),
             (dict(recompute="selective"), attn_f),  # Megatron's default module list: core_attn
             (dict(recompute="selective", recompute_modules=("moe_act",)), mem_f),
             (dict(recompute="selective", recompute_modules=("core_attn", "moe", "moe_act")), attn_f + mem_f),
             (dict(recompute="selective", recompute_modules=("layernorm",)), 0.0)]
    for kwargs, expected in cases:
        weights = recomputed_weights([t.modules for t in blk.by_op], one_layout(**kwargs), np)
        got = float(weighted_fwd_s(blk.by_op, weights, blk.fwd_s_L)[0])
        assert got == pytest.approx(expected, rel=1e-12, abs=0.0), kwargs


def test_flashattention2_core_runs_at_its_own_fractions() -> None:
    """train.attention_kernel=flash2: the same FLOPs and bytes as the fused core, at attention_fa2_fwd/bwd of the
    BF16 peak (FlashAttention-2: 35% on H100, Shah et al. 2024)."""
    model = ModelSpec(name="m", num_layers=2, hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                      ffn_hidden_size=8192, vocab_size=1000)
    lay = one_layout(tp=1)
    gpu = catalogue.gpu("h100")
    cores = {}
    for kernel in ("flash", "flash2"):
        train = TrainSpec(seq_len=8192, global_batch=8, attention_kernel=kernel)
        op = next(o for o in attention_ops(model, train, lay, Tokens.of(train, lay), np) if o.name == "attention_core")
        cores[kernel] = (op, op_time(op, gpu, "bf16", np))
    (f_op, f_t), (a_op, a_t) = cores["flash"], cores["flash2"]
    assert (f_op.kind, a_op.kind) == (ATTENTION, ATTENTION_FA2)
    assert float(a_op.flops_L[0]) == float(f_op.flops_L[0])
    F = float(a_op.flops_L[0])
    eff = gpu.efficiency
    assert float(a_t.fwd_s_L[0]) == pytest.approx(F / (gpu.bf16_flops_per_s * eff.attention_fa2_fwd), rel=1e-12)
    assert float(a_t.bwd_s_L[0]) == pytest.approx(2.5 * F / (gpu.bf16_flops_per_s * eff.attention_fa2_bwd), rel=1e-12)
    assert float(a_t.fwd_s_L[0]) > float(f_t.fwd_s_L[0])
