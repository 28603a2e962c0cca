"""Per-op forward work (emulator/cost/ops.py) recomputed by hand.

Notation of the module docstring: ``T = micro_batch * seq_len / cp`` tokens per GPU, ``t`` = tp,
``Tn = T / t`` with sequence parallelism, ``q = heads * head_dim``, ``kv = kv_heads * head_dim``,
a GEMM ``m x k @ k x n`` costs ``2 m k n`` FLOPs. Every expected number below is written out from
the model's dimensions, never taken from the module's helpers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.ops import Op, layer_ops, logits_ops, mean_attended_keys
from emulator.cost.roofline import op_time
from emulator.spec import ModelSpec, TrainSpec
from emulator.spec.errors import ConfigError
from tests.conftest import one_layout

DENSE = ModelSpec(name="t", num_layers=2, hidden_size=1024, num_heads=8, num_kv_heads=2, head_dim=128,
                  ffn_hidden_size=4096, vocab_size=32000, gated_mlp=True)
TRAIN = TrainSpec(seq_len=2048, global_batch=8)

# Dimensions of DENSE written out.
H, A, KVH, D, F, V, S = 1024, 8, 2, 128, 4096, 32000, 2048
Q, KV = A * D, KVH * D  # 1024, 256


def by_name(ops: list[Op]) -> dict[str, Op]:
    names = [op.name for op in ops]
    assert len(names) == len(set(names)), names
    return {op.name: op for op in ops}


def flops(op: Op) -> float:
    return float(op.flops_L[0])


def nbytes(op: Op) -> float:
    return float(op.bytes_L[0])


def dense_ops(**layout: object) -> dict[str, Op]:
    return by_name(layer_ops(DENSE, TRAIN, one_layout(**layout), np, moe=False))


# ---------------------------------------------------------------- dense layer GEMMs, tp=2, mb=2


def test_dense_layer_has_the_documented_ops() -> None:
    """A dense layer: norm, QKV, rotary, attention core, out-proj, residual, norm, fc1, act, fc2, residual."""
    ops = dense_ops(tp=2, dp=4, micro_batch=2)
    assert list(ops) == ["attn_norm", "qkv_proj", "rotary", "attention_core", "out_proj", "attn_residual",
                         "mlp_norm", "mlp_fc1", "mlp_act", "mlp_fc2", "mlp_residual"]


def test_qkv_proj_flops_and_bytes() -> None:
    """QKV projection: 2 T h (q + 2 kv) / t FLOPs; reads T x h input and h x (q+2kv)/t weights, writes T x (q+2kv)/t
    (BF16, 2 B each)."""
    tp, T = 2, 2 * 2048  # micro_batch * seq_len / cp
    op = dense_ops(tp=tp, dp=4, micro_batch=2)["qkv_proj"]
    assert flops(op) == pytest.approx(2 * T * H * (Q + 2 * KV) / tp, rel=1e-12)
    assert flops(op) == pytest.approx(2 * 4096 * 1024 * 1536 / 2, rel=1e-12)
    width = (Q + 2 * KV) / tp
    assert nbytes(op) == pytest.approx(2 * T * H + 2 * H * width + 2 * T * width, rel=1e-12)
    assert op.kind == "gemm"


def test_out_proj_flops() -> None:
    """Output projection: 2 T q h / t."""
    T, tp = 4096, 2
    assert flops(dense_ops(tp=tp, dp=4, micro_batch=2)["out_proj"]) == pytest.approx(2 * T * Q * H / tp, rel=1e-12)


def test_gated_mlp_fc1_and_fc2_flops() -> None:
    """Gated MLP: fc1 produces gate and up (2 f columns): 2 T h 2f / t; fc2: 2 T f h / t."""
    T, tp = 4096, 2
    ops = dense_ops(tp=tp, dp=4, micro_batch=2)
    assert flops(ops["mlp_fc1"]) == pytest.approx(2 * T * H * 2 * F / tp, rel=1e-12)
    assert flops(ops["mlp_fc2"]) == pytest.approx(2 * T * F * H / tp, rel=1e-12)


def test_plain_mlp_fc1_is_half_the_gated_one() -> None:
    """A plain (not gated) MLP's fc1 has f columns: 2 T h f / t."""
    plain = ModelSpec(name="p", num_layers=2, hidden_size=H, num_heads=A, num_kv_heads=KVH, head_dim=D,
                      ffn_hidden_size=F, vocab_size=V, gated_mlp=False)
    ops = by_name(layer_ops(plain, TRAIN, one_layout(tp=2, dp=4, micro_batch=2), np, moe=False))
    assert flops(ops["mlp_fc1"]) == pytest.approx(2 * 4096 * H * F / 2, rel=1e-12)


def test_flash_attention_core_flops_use_the_causal_mean() -> None:
    """Flash attention: QK^T and PV over the causal triangle, 2 T ((s+1)/2) (a/t) (d_qk + d_v)."""
    T, tp = 4096, 2
    op = dense_ops(tp=tp, dp=4, micro_batch=2)["attention_core"]
    assert flops(op) == pytest.approx(2 * T * ((S + 1) / 2) * (A / tp) * (2 * D), rel=1e-12)
    assert op.kind == "attention"
    assert op.modules == ("core_attn",)


def test_unfused_attention_scores_are_not_causally_halved() -> None:
    """Unfused attention materialises all s x s scores: QK^T = 2 T s (a/t) d, PV the same."""
    T, tp = 4096, 2
    train = TrainSpec(seq_len=S, global_batch=8, attention_kernel="unfused")
    ops = by_name(layer_ops(DENSE, train, one_layout(tp=tp, dp=4, micro_batch=2), np, moe=False))
    assert flops(ops["attention_scores"]) == pytest.approx(2 * T * S * (A / tp) * D, rel=1e-12)
    assert flops(ops["attention_values"]) == pytest.approx(2 * T * S * (A / tp) * D, rel=1e-12)
    # fused scale-mask-softmax without dropout: read scores, write probs (2 + 2 B per score)
    assert nbytes(ops["softmax"]) == pytest.approx(4 * T * S * A / tp, rel=1e-12)


def test_logits_flops_split_the_vocabulary() -> None:
    """Output layer: 2 T h V / t (vocabulary-parallel)."""
    T, tp = 4096, 2
    ops = by_name(logits_ops(DENSE, TRAIN, one_layout(tp=tp, dp=4, micro_batch=2), np))
    assert flops(ops["logits"]) == pytest.approx(2 * T * H * V / tp, rel=1e-12)
    assert ops["logits"].kind == "gemm_bf16"
    # vocab-parallel cross entropy: 38 B per logit forward (module docstring tally)
    assert nbytes(ops["cross_entropy"]) == pytest.approx((2 + 4 + 4 + 8 + 8 + 4 + 8) * T * V / tp, rel=1e-12)


# ---------------------------------------------------------------- sequence and context parallelism


def test_sequence_parallel_divides_norm_and_residual_bytes_by_tp() -> None:
    """With SP the norms and bias-dropout-add run on T/t tokens: norm 2*2*Tn*h bytes, residual 3*2*Tn*h."""
    T, tp = 4096, 2
    sp = dense_ops(tp=tp, dp=4, micro_batch=2, sequence_parallel=True)
    no = dense_ops(tp=tp, dp=4, micro_batch=2, sequence_parallel=False)
    for name in ("attn_norm", "mlp_norm"):
        assert nbytes(no[name]) == pytest.approx(2 * 2 * T * H, rel=1e-12)
        assert nbytes(sp[name]) == pytest.approx(2 * 2 * (T / tp) * H, rel=1e-12)
    for name in ("attn_residual", "mlp_residual"):
        assert nbytes(no[name]) == pytest.approx(3 * 2 * T * H, rel=1e-12)
        assert nbytes(sp[name]) == pytest.approx(3 * 2 * (T / tp) * H, rel=1e-12)
    # GEMMs are unaffected by SP
    assert flops(sp["qkv_proj"]) == flops(no["qkv_proj"])


def test_dropout_adds_a_one_byte_mask_to_the_residual() -> None:
    """Bias-dropout-add with dropout: read branch + residual, write sum (3 x 2 B) plus a 1-byte mask."""
    train = TrainSpec(seq_len=S, global_batch=8, dropout=0.1)
    ops = by_name(layer_ops(DENSE, train, one_layout(tp=1, dp=4, micro_batch=2), np, moe=False))
    assert nbytes(ops["attn_residual"]) == pytest.approx(7 * 4096 * H, rel=1e-12)


def test_context_parallel_halves_the_tokens_per_gpu() -> None:
    """cp=2 splits the sequence: T = mb * s / cp, so every GEMM does half the work of cp=1."""
    cp1 = dense_ops(tp=2, dp=4, micro_batch=2)
    cp2 = dense_ops(tp=2, dp=2, cp=2, micro_batch=2)
    T2 = 2 * 2048 / 2
    assert flops(cp2["qkv_proj"]) == pytest.approx(2 * T2 * H * (Q + 2 * KV) / 2, rel=1e-12)
    for name in ("qkv_proj", "out_proj", "mlp_fc1", "mlp_fc2", "attention_core"):
        assert flops(cp2[name]) == pytest.approx(flops(cp1[name]) / 2, rel=1e-12), name


# ---------------------------------------------------------------- MoE

MOE = ModelSpec(name="m", num_layers=2, hidden_size=512, num_heads=8, num_kv_heads=8, head_dim=64,
                ffn_hidden_size=0, num_experts=8, experts_per_token=2, expert_ffn_hidden_size=1024,
                vocab_size=1000, gated_mlp=True)


def test_expert_gemm_flops() -> None:
    """Balanced routing: each GPU runs T k token-expert pairs; expert fc1 = 2 T k h 2 f_e / t, fc2 = 2 T k f_e h / t,
    one grouped-GEMM launch per local expert (E / ep)."""
    h, E, k, fe, tp, ep = 512, 8, 2, 1024, 2, 4
    T = 1 * 2048  # micro_batch 1, cp 1
    ops = by_name(layer_ops(MOE, TRAIN, one_layout(tp=tp, dp=4, ep=ep, micro_batch=1), np, moe=True))
    fc1, fc2 = ops["expert_fc1"], ops["expert_fc2"]
    assert flops(fc1) == pytest.approx(2 * T * k * h * 2 * fe / tp, rel=1e-12)
    assert flops(fc2) == pytest.approx(2 * T * k * fe * h / tp, rel=1e-12)
    assert fc1.kernels == pytest.approx(E / ep)
    assert float(fc1.kernel_flops_L[0]) == pytest.approx(flops(fc1) / (E / ep), rel=1e-12)
    # router logits: Tn x h @ h x E in BF16 (Tn = T / t with SP)
    assert flops(ops["router"]) == pytest.approx(2 * (T / tp) * h * E, rel=1e-12)
    assert ops["router"].kind == "gemm_bf16"
    assert "shared_fc1" not in ops  # no shared MLP when ffn_hidden_size = 0


def test_shared_expert_mlp_is_added() -> None:
    """An MoE layer with ffn_hidden_size > 0 also runs a shared MLP on all T tokens: 2 T h 2 f / t."""
    shared = ModelSpec(name="s", num_layers=2, hidden_size=512, num_heads=8, num_kv_heads=8, head_dim=64,
                       ffn_hidden_size=256, num_experts=8, experts_per_token=2, expert_ffn_hidden_size=1024,
                       vocab_size=1000, gated_mlp=True)
    ops = by_name(layer_ops(shared, TRAIN, one_layout(tp=1, dp=4, ep=4), np, moe=True))
    assert flops(ops["shared_fc1"]) == pytest.approx(2 * 2048 * 512 * 2 * 256, rel=1e-12)


def test_qk_norm_by_hand() -> None:
    """Per-head RMSNorm of queries and keys (model.qk_norm): forward reads and writes q + kv per token on this GPU,
    2 * 2 B * T * (q + kv) / t, in two kernels, after the QKV projection and before rotary; backward 1.5x (a norm)."""
    tp, T = 2, 2 * 2048
    ops = layer_ops(dataclasses.replace(DENSE, qk_norm=True), TRAIN, one_layout(tp=tp, dp=4, micro_batch=2), np,
                    moe=False)
    named = by_name(ops)
    assert nbytes(named["qk_norm"]) == pytest.approx(2 * 2 * T * (Q + KV) / tp, rel=1e-12)
    assert named["qk_norm"].kernels == 2.0 and named["qk_norm"].backward_factor == 1.5
    assert named["qk_norm"].graph_scope == "attn"
    names = [op.name for op in ops]
    assert names.index("qkv_proj") < names.index("qk_norm") < names.index("rotary")
    assert "qk_norm" not in dense_ops(tp=tp, dp=4, micro_batch=2)


def test_fp8_padding_copies_by_hand() -> None:
    """FP8, dropless, all-to-all dispatcher: Fp8Padding copies the T k / tp routed rows of h (BF16, expert TP 1) into
    a padded buffer and Fp8Unpadding copies fc2's output back: forward bytes 2 copies x (read 2 B + write 2 B) x
    T k h / tp, backward the same (factor 1), 3 launches (input, probabilities, output)."""
    h, k, tp = 512, 2, 2
    T = 2048
    fp8 = dataclasses.replace(TRAIN, precision="fp8")
    ops = by_name(layer_ops(MOE, fp8, one_layout(tp=tp, dp=4, ep=4, etp=1, micro_batch=1), np, moe=True))
    pad = ops["expert_fp8_pad"]
    assert nbytes(pad) == pytest.approx(2 * (2 + 2) * T * k * h / tp, rel=1e-12)
    assert pad.backward_factor == 1.0 and pad.kernels == 3.0
    names = list(ops)
    assert names.index("moe_permute") < names.index("expert_fp8_pad") < names.index("expert_fc1")


def test_alltoall_sort_by_local_expert_by_hand() -> None:
    """All-to-all dispatcher, 2 local experts (E 8 / ep 4), tp 2 with expert TP 2: each GPU holds T k etp / tp
    received rows of h and sorts them by local expert after the dispatch and back before the combine: forward
    bytes 2 copies x (read 2 B + write 2 B) x rows x h, backward the same (factor 1), 2 launches per sort; between
    the permutation and the expert GEMMs."""
    h, k, tp, etp, T = 512, 2, 2, 2, 2048
    ops = layer_ops(MOE, TRAIN, one_layout(tp=tp, dp=4, ep=4, etp=etp, micro_batch=1), np, moe=True)
    sort = by_name(ops)["moe_sort_chunks"]
    rows = T * k * etp / tp
    assert nbytes(sort) == pytest.approx(2 * (2 + 2) * rows * h, rel=1e-12)
    assert sort.backward_factor == 1.0 and float(np.asarray(sort.kernels)[0]) == 4.0
    names = [op.name for op in ops]
    assert names.index("moe_permute") < names.index("moe_sort_chunks") < names.index("expert_fc1")


@pytest.mark.parametrize(("ep", "dispatcher", "sorted_"), [
    (4, "alltoall", True),
    (8, "alltoall", False),  # one local expert: received rows are already grouped
    (4, "flex", False),  # DeepEP / HybridEP: the one local permutation is moe_permute
])
def test_sort_by_local_expert_only_for_alltoall_with_several_local_experts(ep: int, dispatcher: str,
                                                                           sorted_: bool) -> None:
    train = dataclasses.replace(TRAIN, moe_dispatcher=dispatcher)
    ops = by_name(layer_ops(MOE, train, one_layout(tp=1, dp=8, ep=ep), np, moe=True))
    if dispatcher == "flex":
        assert "moe_sort_chunks" not in ops
        return
    sort = ops["moe_sort_chunks"]
    assert (nbytes(sort) > 0.0) is sorted_
    assert (float(np.asarray(sort.kernels)[0]) > 0.0) is sorted_


@pytest.mark.parametrize(("changes", "copies"), [
    ({}, True),  # fp8, dropless (host sync), all-to-all, auto
    ({"moe_dispatcher": "flex"}, False),  # auto: flex pads inside its permutation
    ({"moe_dispatcher": "flex", "moe_fp8_padding": "copy"}, True),  # a stack before Megatron-LM PR #4071
    ({"moe_fp8_padding": "fused"}, False),  # router padding / fused permute-and-pad
    ({"moe_host_sync": False}, False),  # token drop padded to capacity: equal, aligned counts
    ({"precision": "bf16"}, False),
])
def test_fp8_padding_copies_only_where_nothing_padded_before(changes: dict[str, object], copies: bool) -> None:
    train = dataclasses.replace(TRAIN, **{"precision": "fp8", "moe_host_sync": True, **changes})  # type: ignore[arg-type]
    assert train.fp8_padding_copies is copies
    ops = by_name(layer_ops(MOE, train, one_layout(tp=1, dp=4, ep=4), np, moe=True))
    assert ("expert_fp8_pad" in ops) is copies


def test_fp8_padding_rejects_an_unknown_mode() -> None:
    with pytest.raises(ConfigError, match=r"train\.moe_fp8_padding"):
        TrainSpec(seq_len=1, global_batch=1, moe_fp8_padding="pad")


# ---------------------------------------------------------------- sliding window


def test_sliding_window_mean_attended_keys_by_hand() -> None:
    """w=128, s=4096, half the layers local: full causal (s+1)/2 = 2048.5; local
    (w(w+1)/2 + (s-w) w) / s = (8256 + 507904) / 4096 = 126.015625; mean 1087.2578125."""
    m = ModelSpec(name="sw", num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=4, head_dim=64,
                  ffn_hidden_size=512, vocab_size=100, sliding_window=128, local_layers_fraction=0.5)
    w, s = 128, 4096
    full = (s + 1) / 2
    local = (w * (w + 1) / 2 + (s - w) * w) / s
    assert full == 2048.5
    assert local == 126.015625
    assert mean_attended_keys(m, s) == pytest.approx(0.5 * full + 0.5 * local, rel=1e-15)
    assert mean_attended_keys(m, s) == pytest.approx(1087.2578125, rel=1e-15)
    # a window at least as long as the sequence is full attention
    assert mean_attended_keys(m, 128) == pytest.approx((128 + 1) / 2)


def test_sliding_window_reduces_attention_core_flops() -> None:
    """The attention core multiplies by the mean attended keys: 2 T keys (a/t) 2d."""
    m = ModelSpec(name="sw", num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=4, head_dim=64,
                  ffn_hidden_size=512, vocab_size=100, sliding_window=128, local_layers_fraction=0.5)
    train = TrainSpec(seq_len=4096, global_batch=8)
    ops = by_name(layer_ops(m, train, one_layout(dp=8), np, moe=False))
    assert flops(ops["attention_core"]) == pytest.approx(2 * 4096 * 1087.2578125 * 4 * (2 * 64), rel=1e-12)


def test_gpt_oss_uses_half_local_layers() -> None:
    """gpt-oss-120b alternates full and 128-token sliding-window layers (model card): fraction 0.5, w = 128."""
    m = catalogue.model("gpt_oss_120b")
    assert (m.sliding_window, m.local_layers_fraction) == (128, 0.5)


# ---------------------------------------------------------------- backward factors


def test_backward_factors() -> None:
    """Backward / forward work: GEMM 2x (dgrad + wgrad), fused attention 2.5x (5 vs 2 s x s matmuls, FA2 Sec 3.1)."""
    ops = dense_ops(tp=2, dp=4, micro_batch=2)
    for name in ("qkv_proj", "out_proj", "mlp_fc1", "mlp_fc2"):
        assert ops[name].backward_factor == 2.0
    assert ops["attention_core"].backward_factor == 2.5


def test_gemm_backward_time_is_twice_forward() -> None:
    """Roofline: a GEMM's backward takes exactly 2x its forward (two GEMMs of the same size)."""
    ops = dense_ops(tp=2, dp=4, micro_batch=2)
    gpu = catalogue.gpu("h100")
    t = op_time(ops["mlp_fc1"], gpu, "bf16", np)
    assert float(t.bwd_s_L[0]) == pytest.approx(2 * float(t.fwd_s_L[0]), rel=1e-12)


def test_attention_backward_time_by_hand() -> None:
    """Fused attention: forward F / (peak * eff_fwd), backward 2.5 F / (peak * eff_bwd) (both compute-bound here)."""
    op = dense_ops(tp=2, dp=4, micro_batch=2)["attention_core"]
    gpu = catalogue.gpu("h100")
    F_ = 2 * 4096 * ((S + 1) / 2) * (A / 2) * (2 * D)
    peak = gpu.bf16_flops_per_s
    t = op_time(op, gpu, "bf16", np)
    fwd = max(F_ / (peak * gpu.efficiency.attention_fwd), nbytes(op) / (gpu.hbm_bytes_per_s * gpu.efficiency.hbm))
    bwd = max(2.5 * F_ / (peak * gpu.efficiency.attention_bwd),
              2.5 * nbytes(op) / (gpu.hbm_bytes_per_s * gpu.efficiency.hbm))
    assert float(t.fwd_s_L[0]) == pytest.approx(fwd, rel=1e-12)
    assert float(t.bwd_s_L[0]) == pytest.approx(bwd, rel=1e-12)
