"""Per-op forward work of one micro-batch on one GPU: FLOPs, HBM bytes, kernel size.

Notation (per GPU, per micro-batch): ``T = micro_batch * seq_len / cp`` tokens; ``t`` = tp;
``Tn = T / t`` with sequence parallelism (norms, residuals and dropout run on a sequence shard),
else ``T``; ``h`` hidden; ``q = heads * head_dim``; ``kv = kv_heads * head_dim``; ``f`` MLP width;
``g = 2`` for a gated MLP (fc1 produces gate and up), else 1; ``e`` bytes per activation element
(2, BF16). A GEMM of an ``m x k`` by ``k x n`` product costs ``2 m k n`` FLOPs (multiply + add).

Backward work is a fixed multiple of forward work per kind (:data:`BACKWARD_FACTOR`): a GEMM's
backward is two GEMMs of the same size (data gradient and weight gradient, 2x); the fused
attention backward runs five ``s x s`` matmuls against the forward's two (2.5x, Dao 2023,
FlashAttention-2 Sec. 3.1); element-wise kernels read and write about twice the forward's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from emulator.cost.arrays import as_float
from emulator.cost.layout import LayoutBatch
from emulator.spec.model import ModelSpec
from emulator.spec.train import TrainSpec

ACT_BYTES = 2.0
"""Bytes per BF16 activation element."""
FP32_BYTES = 4.0
FP8_CAST_BYTES_PER_ELEMENT = 5.0
"""Current-scaling FP8 cast of a BF16 tensor: amax pass (read 2 B) + cast pass (read 2 B, write 1 B)."""
FP8_TRANSPOSE_BYTES_PER_ELEMENT = 2.0
"""FP8 transpose copy for the weight-gradient GEMM in backward (read 1 B, write 1 B)."""

ROUTER_KERNELS = 12.0
"""Router launches: logits GEMM aside, softmax, top-k, routing-map scatter and the load-balancing
loss terms (an estimate from Megatron-Core's TopKRouter code path)."""
PREPROCESS_KERNELS = 8.0
"""Dispatcher preprocessing launches: bincount and cumsum of tokens per expert, the split-size
exchange and the copy of the counts to the host (an estimate from Megatron-Core's alltoall dispatcher
code path; its ``moe_preprocess`` CUDA-graph scope)."""
PERMUTE_KERNELS = 8.0
"""Token permutation launches: sort/argsort, index-select permute and the weighted scatter-add
un-permute (an estimate from the same code path)."""
SORT_CHUNKS_KERNELS = 2.0
"""Launches of one sort of the received tokens by local expert under the alltoall dispatcher: Transformer
Engine's fused ``moe_sort_chunks_by_index`` builds the row map and then moves the rows (two kernels)."""

GEMM = "gemm"
"""A GEMM in the run's precision (FP8 under fp8 training)."""
GEMM_BF16 = "gemm_bf16"
"""A GEMM that stays in BF16 whatever the precision (output layer, router, unfused attention)."""
ATTENTION = "attention"
"""The fused (Flash) attention core."""
ATTENTION_FA2 = "attention_fa2"
"""The same fused attention core run by the FlashAttention-2 kernels (``train.attention_kernel=flash2``)."""
MEMORY = "memory"
"""A memory-bound element-wise kernel (norm, activation, residual, softmax, cast, permutation)."""

BACKWARD_FACTOR = {GEMM: 2.0, GEMM_BF16: 2.0, ATTENTION: 2.5, ATTENTION_FA2: 2.5, MEMORY: 2.0}

BACKWARD_LAUNCHES = {GEMM: 2.0, GEMM_BF16: 2.0, ATTENTION: 3.0, ATTENTION_FA2: 3.0, MEMORY: 1.0}
"""Backward kernel launches per forward kernel, by kind (what the host issues in backward, :mod:`host`). A GEMM:
its data-gradient and weight-gradient GEMMs. Fused attention: FlashAttention-2's backward is three kernels
(``flash_bwd_dot_do_o_kernel``, ``flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel``,
``flash_bwd_convert_dq_kernel``), the structure cuDNN's fused backward shares. An element-wise or copy kernel:
one kernel on the gradient (norms have their own count, :data:`NORM_BWD_LAUNCHES`; integer bookkeeping
without a gradient, none)."""
NORM_BWD_LAUNCHES = 2.0
"""Transformer Engine's RMSNorm/LayerNorm backward: ``rmsnorm_bwd_tuned_kernel`` and the cross-CTA weight-gradient
reduction ``rmsnorm_bwd_finalize_tuned_kernel`` per forward kernel."""


@dataclass(frozen=True)
class Op:
    """Forward work of one op kind in one layer, per GPU and micro-batch."""

    name: str
    kind: str
    flops_L: Any
    bytes_L: Any
    kernel_flops_L: Any
    """FLOPs of one kernel launch (for the GEMM efficiency curve); equals ``flops_L`` for a single GEMM."""
    kernels: float = 1.0
    """Kernel launches of this op in forward."""
    modules: tuple[str, ...] = ()
    """The recompute modules this op belongs to (:data:`emulator.spec.parallel.RECOMPUTE_MODULES`): selective
    recomputation runs its forward again in backward where ``parallel.recompute_modules`` names one of them."""
    bwd_factor: float = 0.0
    """Backward work / forward work; 0 takes the kind's default (:data:`BACKWARD_FACTOR`)."""
    graph_scope: str = ""
    """The ``train.cuda_graph_scope`` entry that captures this op (``attn``, ``mlp``, ``moe_router``,
    ``moe_preprocess``); empty: only a full-iteration graph does."""
    bwd_launches: float = -1.0
    """Backward kernel launches per forward kernel; negative takes the kind's default (:data:`BACKWARD_LAUNCHES`)."""

    @property
    def backward_factor(self) -> float:
        return self.bwd_factor or BACKWARD_FACTOR[self.kind]

    @property
    def backward_launches_per_kernel(self) -> float:
        return self.bwd_launches if self.bwd_launches >= 0.0 else BACKWARD_LAUNCHES[self.kind]


@dataclass(frozen=True)
class Tokens:
    """Token counts per GPU per micro-batch for a layout batch."""

    T_L: Any
    """Tokens of the local sequence shard entering a layer (after context parallelism)."""
    Tn_L: Any
    """Tokens each GPU runs norms/residuals on (``T/tp`` with sequence parallelism)."""

    @classmethod
    def of(cls, train: TrainSpec, lay: LayoutBatch) -> Tokens:
        T_L = lay.mb_L * float(train.seq_len) / lay.cp_L
        Tn_L = T_L / (1.0 + lay.sp_L * (lay.tp_L - 1.0))
        return cls(T_L=T_L, Tn_L=Tn_L)


def _gemm(name: str, flops_L: Any, m_L: Any, k: Any, n: Any, kind: str = GEMM, calls: float = 1.0,
          weight_bytes: float = ACT_BYTES, modules: tuple[str, ...] = ()) -> Op:
    """A GEMM ``m x k @ k x n``: FLOPs ``2mkn``; bytes read A and B, write C."""
    bytes_L = ACT_BYTES * m_L * k + weight_bytes * k * n + ACT_BYTES * m_L * n
    return Op(name, kind, flops_L, bytes_L * calls, flops_L / calls, kernels=calls, modules=modules)


def _memory(name: str, bytes_L: Any, kernels: float, xp: Any, like: Any, modules: tuple[str, ...] = (),
            bwd: float = 0.0, bwd_launches: float = -1.0) -> Op:
    zero_L = xp.zeros_like(like)
    return Op(name, MEMORY, zero_L, bytes_L, zero_L, kernels=kernels, modules=modules, bwd_factor=bwd,
              bwd_launches=bwd_launches)


def in_modules(ops: list[Op], *modules: str) -> list[Op]:
    """The same ops, each also belonging to the recompute ``modules``."""
    return [replace(op, modules=op.modules + tuple(m for m in modules if m not in op.modules)) for op in ops]


def in_scope(ops: list[Op], scope: str) -> list[Op]:
    """The same ops, each marked as captured by the CUDA-graph scope ``scope``."""
    return [replace(op, graph_scope=scope) for op in ops]


NORM_BWD = 1.5
"""Norm backward reads dy and x and writes dx (3 passes) against forward's read x, write y (2)."""
RESIDUAL_BWD = 1.0
"""Bias-dropout-add backward: one pass of the same size (the gradient passes through; mask applied)."""
ROTARY_BWD = 1.0
"""Rotary backward applies the inverse rotation: the same traffic as forward."""


def _norm(name: str, bytes_L: Any, kernels: float, xp: Any, like: Any, modules: tuple[str, ...] = ()) -> Op:
    """An RMSNorm/LayerNorm: memory-bound, backward traffic :data:`NORM_BWD`, launches :data:`NORM_BWD_LAUNCHES`."""
    return _memory(name, bytes_L, kernels, xp, like, modules=modules, bwd=NORM_BWD, bwd_launches=NORM_BWD_LAUNCHES)


def mean_attended_keys(model: ModelSpec, seq_len: int) -> float:
    """Keys one query attends to, averaged over positions and layers (causal mask).

    Full causal attention over ``s`` positions: ``sum_{i=1..s} i / s = (s + 1) / 2``.
    A sliding window ``w < s``: ``(w (w + 1) / 2 + (s - w) w) / s``. Local layers are the
    fraction ``local_layers_fraction`` of all layers.
    """
    s = float(seq_len)
    full = (s + 1.0) / 2.0
    w = float(model.sliding_window)
    if w <= 0 or w >= s or model.local_layers_fraction == 0.0:
        return full
    local = (w * (w + 1.0) / 2.0 + (s - w) * w) / s
    f = model.local_layers_fraction
    return (1.0 - f) * full + f * local


def attention_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, tok: Tokens, xp: Any) -> list[Op]:
    """Norm, QKV (or MLA) projections, rotary, attention core, output projection, residual.

    Recompute modules: the attention core is ``core_attn``; MLA's input norm is a module of its own
    (``layernorm``; a GQA layer's norm is fused into the QKV GEMM, Transformer Engine's LayerNormLinear,
    which recomputation does not split) and its up-projections are ``mla_up_proj``."""
    h, a, s = float(model.hidden_size), float(model.num_heads), float(train.seq_len)
    t_L, T_L, Tn_L = lay.tp_L, tok.T_L, tok.Tn_L
    e = ACT_BYTES
    wb = 1.0 if train.precision == "fp8" else ACT_BYTES
    ops: list[Op] = [_norm("attn_norm", 2.0 * e * Tn_L * h, 1.0, xp, T_L,
                           modules=("layernorm",) if model.is_mla else ())]
    dqk, dv = float(model.qk_head_dim), float(model.value_head_dim)
    if model.is_mla:
        # Down-projections (h -> q_lora, h -> kv_lora + rope) then per-head up-projections, two GEMMs each.
        qa = float(model.q_lora_rank)
        kva = float(model.kv_lora_rank + model.qk_rope_head_dim)
        down = h * (qa + kva)
        ops.append(_gemm("qkv_down_proj", 2.0 * T_L * down / t_L, T_L, h, down / h / t_L, calls=2.0, weight_bytes=wb))
        up = (qa * a * dqk if qa else h * a * dqk) + float(model.kv_lora_rank) * a * (model.head_dim + dv)
        up_in = ((qa or h) + float(model.kv_lora_rank)) / 2.0  # mean inner size of the two GEMMs
        ops.append(_gemm("qkv_up_proj", 2.0 * T_L * up / t_L, T_L, up_in, up / up_in / t_L, calls=2.0,
                         weight_bytes=wb, modules=("mla_up_proj",)))
        qkv_width_L = a * (dqk + dqk + dv) / t_L
    else:
        q, kv = a * model.head_dim, float(model.num_kv_heads * model.head_dim)
        flops_L = 2.0 * T_L * h * (q + 2.0 * kv) / t_L
        ops.append(_gemm("qkv_proj", flops_L, T_L, h, (q + 2.0 * kv) / t_L, weight_bytes=wb))
        qkv_width_L = (q + 2.0 * kv) / t_L
    if model.qk_norm and not model.is_mla:
        # Per-head RMSNorm of queries and keys (Qwen3): read and write q + kv per token, one kernel each.
        qk_L = (a * model.head_dim + float(model.num_kv_heads * model.head_dim)) / t_L
        ops.append(_norm("qk_norm", 2.0 * e * T_L * qk_L, 2.0, xp, T_L))
    # MLA's up-projection recompute re-runs the rotary embedding too (Megatron-Core recomputes "the MLA up
    # projection and RoPE applying parts").
    ops.append(_memory("rotary", 2.0 * e * T_L * qkv_width_L, 2.0, xp, T_L, bwd=ROTARY_BWD,
                       modules=("mla_up_proj",) if model.is_mla else ()))
    keys = mean_attended_keys(model, train.seq_len)
    heads_L = a / t_L
    if train.attention_kernel in ("flash", "flash2"):
        # QK^T and PV over the causal triangle: 2 * T * keys * (dqk + dv) per head.
        flops_L = 2.0 * T_L * keys * heads_L * (dqk + dv)
        io_L = e * T_L * heads_L * (2.0 * dqk + 2.0 * dv)
        kind = ATTENTION if train.attention_kernel == "flash" else ATTENTION_FA2
        ops.append(Op("attention_core", kind, flops_L, io_L, flops_L, 1.0, modules=("core_attn",)))
    else:
        # Unfused (Megatron 2021-22): full s x s scores via batched GEMMs, then fused scale-mask-softmax
        # and dropout on materialised scores (Korthikanti et al. 2022, Sec. 4.1: 5as^2b bytes stored).
        scores_L = T_L * s * heads_L  # score elements per micro-batch per GPU
        qk_L = 2.0 * scores_L * dqk
        pv_L = 2.0 * scores_L * dv
        # One strided-batched GEMM over all heads of the micro-batch (a single kernel each).
        ops.append(Op("attention_scores", GEMM_BF16, qk_L, e * (2.0 * scores_L + T_L * heads_L * 2.0 * dqk),
                      qk_L, 1.0, modules=("core_attn",)))
        drop = train.dropout > 0.0
        # Fused scale-mask-softmax: read scores, write probs (2 + 2 B). Dropout: read probs, write
        # probs and a 1-byte mask (5 B). Backward: dropout-grad reads grad + mask, writes grad (5 B);
        # softmax-grad reads grad + probs, writes grad (6 B).
        fwd_b = 4.0 + (5.0 if drop else 0.0)
        bwd_b = 6.0 + (5.0 if drop else 0.0)
        ops.append(_memory("softmax", scores_L * fwd_b, 2.0 if drop else 1.0, xp, T_L, modules=("core_attn",),
                           bwd=bwd_b / fwd_b))
        ops.append(Op("attention_values", GEMM_BF16, pv_L, e * (scores_L + 2.0 * T_L * heads_L * dv),
                      pv_L, 1.0, modules=("core_attn",)))
    out_in = a * dv
    ops.append(_gemm("out_proj", 2.0 * T_L * out_in * h / t_L, T_L, out_in / t_L, h, weight_bytes=wb))
    ops.append(_residual("attn_residual", train, Tn_L, h, xp))
    if train.precision == "fp8":
        ops.append(_fp8_casts("attn_fp8_cast", T_L, [h, out_in / t_L], [qkv_width_L, h], xp))
    return in_scope(ops, "attn")


def _residual(name: str, train: TrainSpec, Tn_L: Any, h: float, xp: Any) -> Op:
    """Bias-dropout-add: read branch and residual, write the sum (+ a 1-byte dropout mask)."""
    per = 3.0 * ACT_BYTES + (1.0 if train.dropout > 0.0 else 0.0)
    return _memory(name, per * Tn_L * h, 1.0, xp, Tn_L, bwd=RESIDUAL_BWD)


def _fp8_casts(name: str, T_L: Any, fwd_widths: list[Any], bwd_widths: list[Any], xp: Any) -> Op:
    """FP8 casts of GEMM inputs (forward) and output gradients plus transposes (folded into forward
    bytes scaled so that ``BACKWARD_FACTOR[MEMORY]`` reproduces the backward share)."""
    fwd = sum(FP8_CAST_BYTES_PER_ELEMENT * T_L * w for w in fwd_widths)
    bwd = sum((FP8_CAST_BYTES_PER_ELEMENT + FP8_TRANSPOSE_BYTES_PER_ELEMENT) * T_L * w for w in bwd_widths)
    total = fwd + bwd
    kernels = 2.0 * len(fwd_widths)
    # Forward+backward bytes = fwd * (1 + BACKWARD_FACTOR[MEMORY]); store the equivalent forward share.
    return _memory(name, total / (1.0 + BACKWARD_FACTOR[MEMORY]), kernels, xp, T_L)


def _act_bwd(g: float) -> float:
    """Activation backward reads dy (f) and the inputs (g f), writes input grads (g f); forward reads
    g f and writes f: ratio ``(1 + 2g) / (g + 1)``."""
    return (1.0 + 2.0 * g) / (g + 1.0)


def mlp_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, tok: Tokens, ffn: int, xp: Any,
            prefix: str = "mlp", with_norm: bool = True) -> list[Op]:
    """Dense (or shared-expert) MLP: norm, fc1 (gate+up if gated), activation, fc2, residual.

    A dense layer's fc1, activation and fc2 (and their FP8 casts) form the recompute module ``mlp``; its norm
    is fused into fc1 (Transformer Engine's LayerNormLinear), so the module recomputes from the norm's input.
    The shared experts (``with_norm=False``) are tagged by :func:`moe_ops`."""
    h, f, g = float(model.hidden_size), float(ffn), 2.0 if model.gated_mlp else 1.0
    t_L, T_L, Tn_L = lay.tp_L, tok.T_L, tok.Tn_L
    wb = 1.0 if train.precision == "fp8" else ACT_BYTES
    ops: list[Op] = []
    if with_norm:
        ops.append(_norm("mlp_norm", 2.0 * ACT_BYTES * Tn_L * h, 1.0, xp, T_L))
    ops.append(_gemm(f"{prefix}_fc1", 2.0 * T_L * h * g * f / t_L, T_L, h, g * f / t_L, weight_bytes=wb))
    ops.append(_memory(f"{prefix}_act", ACT_BYTES * T_L * (g + 1.0) * f / t_L, 1.0, xp, T_L, bwd=_act_bwd(g)))
    ops.append(_gemm(f"{prefix}_fc2", 2.0 * T_L * f * h / t_L, T_L, f / t_L, h, weight_bytes=wb))
    if train.precision == "fp8":
        ops.append(_fp8_casts(f"{prefix}_fp8_cast", T_L, [h, f / t_L], [g * f / t_L, h], xp))
    if not with_norm:
        return ops
    ops = ops[:1] + in_modules(ops[1:], "mlp")
    ops.insert(4, _residual("mlp_residual", train, Tn_L, h, xp))
    return in_scope(ops, "mlp")


def moe_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, tok: Tokens, xp: Any) -> list[Op]:
    """MoE block: router, token permutation, grouped expert GEMMs, un-permutation, shared MLP.

    Each GPU routes its ``T / tp`` sequence-parallel tokens (``T k / tp`` token-expert pairs, what it
    sends in the dispatch all-to-all). Experts are split ``etp`` ways (expert tensor parallelism): after
    the all-to-all, an all-gather over the ``etp`` GPUs that share an expert gives each of them
    ``T k etp / tp`` pairs (balanced routing), spread over its ``E / ep`` local experts, on an expert
    slice of width ``f / etp``. The FLOPs per GPU, ``2 T k h g f / tp`` for fc1, do not depend on
    ``etp``; the GEMM shapes and the expert weights per GPU do. ``etp = tp`` is Megatron-Core's default
    (``T k`` pairs per GPU on ``f / tp``); ``etp = 1`` keeps each expert whole (MoE parallel folding).

    Recompute modules: the pre-MLP norm is a module of its own (``layernorm``); everything from the router to
    the un-permutation, shared experts included, is ``moe``; the experts' activation is also ``moe_act`` and
    the shared MLP ``shared_experts``.
    """
    h, E, k = float(model.hidden_size), float(model.num_experts), float(model.experts_per_token)
    fe, g = float(model.expert_ffn_hidden_size), 2.0 if model.gated_mlp else 1.0
    t_L, T_L, Tn_L, e_L = lay.tp_L, tok.T_L, tok.Tn_L, lay.etp_L
    wb = 1.0 if train.precision == "fp8" else ACT_BYTES
    norm = _norm("mlp_norm", 2.0 * ACT_BYTES * Tn_L * h, 1.0, xp, T_L, modules=("layernorm",))
    ops: list[Op] = [norm, _gemm("router", 2.0 * Tn_L * h * E, Tn_L, h, E, kind=GEMM_BF16)]
    # softmax + top-k over E logits in fp32: read, write probabilities, write indices.
    ops.append(_memory("router_topk", 3.0 * FP32_BYTES * Tn_L * E, ROUTER_KERNELS, xp, T_L))
    ops = in_scope(ops, "moe_router")
    # Tokens per expert (Tn E int32 routing map read, E counts written); then, under moe_host_sync, the
    # counts go to the host (the sync of emulator.cost.host sits at the end of this op).
    ops.append(replace(_memory("moe_preprocess", FP32_BYTES * Tn_L * E, PREPROCESS_KERNELS, xp, T_L, bwd_launches=0.0),
                       graph_scope="moe_preprocess"))
    sent_L = T_L * k / t_L  # token-expert pairs this GPU routes
    # token-expert pairs the busiest GPU computes (train.moe_load_imbalance over the balanced mean)
    routed_L = sent_L * e_L * float(train.moe_load_imbalance)
    width_L = fe / e_L  # expert slice
    local_experts_L = E / lay.ep_L
    # permute (gather rows) and un-permute (weighted scatter-add) of the routed pairs: each reads and writes.
    ops.append(_memory("moe_permute", 4.0 * ACT_BYTES * sent_L * h, PERMUTE_KERNELS, xp, T_L))
    if train.moe_dispatcher == "alltoall":
        ops.append(_sort_chunks(routed_L, local_experts_L, h, xp))
    if train.fp8_padding_copies:
        ops.append(_fp8_padding(routed_L, h, xp, T_L))
    fc1_L = 2.0 * routed_L * h * g * width_L
    fc2_L = 2.0 * routed_L * width_L * h
    ops.append(Op("expert_fc1", GEMM, fc1_L,
                  ACT_BYTES * routed_L * h + wb * local_experts_L * h * g * width_L
                  + ACT_BYTES * routed_L * g * width_L, fc1_L / local_experts_L, local_experts_L))
    ops.append(_memory("expert_act", ACT_BYTES * routed_L * (g + 1.0) * width_L, 1.0, xp, T_L, modules=("moe_act",),
                       bwd=_act_bwd(g)))
    ops.append(Op("expert_fc2", GEMM, fc2_L,
                  ACT_BYTES * routed_L * width_L + wb * local_experts_L * width_L * h
                  + ACT_BYTES * routed_L * h, fc2_L / local_experts_L, local_experts_L))
    if train.precision == "fp8":
        cast = _fp8_casts("expert_fp8_cast", routed_L, [h, width_L], [g * width_L, h], xp)
        # Inputs are split per expert before quantisation: one cast per expert and GEMM input.
        ops.append(Op(cast.name, cast.kind, cast.flops_L, cast.bytes_L, cast.kernel_flops_L,
                      cast.kernels * local_experts_L))
    if model.ffn_hidden_size > 0:
        shared = mlp_ops(model, train, lay, tok, model.ffn_hidden_size, xp, prefix="shared", with_norm=False)
        ops.extend(in_modules(shared, "shared_experts"))
    ops = ops[:1] + in_modules(ops[1:], "moe")
    ops.append(_residual("mlp_residual", train, Tn_L, h, xp))
    return ops


def _sort_chunks(routed_L: Any, local_experts_L: Any, h: float, xp: Any) -> Op:
    """The alltoall dispatcher's second permutation: sort the received tokens by local expert, and its inverse
    before the combine.

    Megatron-Core's ``MoEAlltoAllTokenDispatcher`` permutes each GPU's tokens by destination expert before the
    all-to-all (``moe_permute``). What a GPU receives is ordered by source rank, then expert, so where it holds
    more than one expert (``E / ep > 1``) it sorts the rows by local expert for the grouped GEMM ("Permutation
    2": ``sort_chunks_by_idxs``; with token dropping a ``transpose(0, 1).contiguous()`` of the capacity-padded
    rows, also a copy) and restores the source order after the experts ("Unpermutation 2"). Each of the two
    reads and writes all ``routed`` rows: forward bytes ``2 copies * 2 (read, write) * e * routed * h``; the
    backward runs the inverse permutations on the gradients, the same traffic (backward factor 1). The flex
    dispatcher (DeepEP, HybridEP) receives rows it permutes once by local expert, which ``moe_permute``
    already counts, so it has no such op. With one local expert there is nothing to sort: no bytes, no
    launches."""
    several_L = as_float(local_experts_L > 1.0, xp)
    copies = 2.0  # sort after the dispatch, restore before the combine
    zero_L = xp.zeros_like(routed_L)
    return Op("moe_sort_chunks", MEMORY, zero_L, several_L * copies * 2.0 * ACT_BYTES * routed_L * h, zero_L,
              kernels=several_L * copies * SORT_CHUNKS_KERNELS, bwd_factor=1.0)


FP8_PAD_KERNELS = 3.0
"""Forward launches of the FP8 padding: pad the expert inputs and their router probabilities, un-pad the
output."""


def _fp8_padding(routed_L: Any, h: float, xp: Any, like: Any) -> Op:
    """Explicit FP8 padding of the grouped expert GEMMs (Transformer Engine ``Fp8Padding`` /
    ``Fp8Unpadding`` in Megatron-Core's ``TEGroupedMLP``).

    FP8 GEMMs need each expert's row count to be a multiple of 16 (32 for MXFP8). Where the dispatcher
    leaves the counts as routed (dropless: the counts reach the host and vary from layer to layer;
    :attr:`emulator.spec.train.TrainSpec.fp8_padding_copies`), ``Fp8Padding`` copies the BF16 expert
    input into a padded buffer before fc1 and ``Fp8Unpadding`` copies fc2's output back
    (``tex.fused_multi_row_padding``: read and write every row, ``2 e`` bytes per element each way); it
    returns the input untouched only when every count is already aligned, which random routing does not
    give. Forward: two copies of the ``routed x h`` activation, ``2 * 2 e * routed * h`` bytes; backward:
    the same two copies on the gradients (backward factor 1). Megatron-Core skips the copies where the
    dispatcher already padded (``skip_routed_expert_padding``, Megatron-LM PR #4071: HybridEP, DeepEP,
    router padding), and a token-dropping run with inputs padded to capacity gives equal, aligned
    counts: neither copies."""
    copies = 2.0  # pad the input, un-pad the output
    return _memory("expert_fp8_pad", copies * 2.0 * ACT_BYTES * routed_L * h, FP8_PAD_KERNELS, xp, like, bwd=1.0)


def layer_parts(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any,
                moe: bool) -> tuple[list[Op], list[Op]]:
    """The ops of one transformer layer in forward, as its attention block and its MLP (or MoE) block."""
    tok = Tokens.of(train, lay)
    attention = attention_ops(model, train, lay, tok, xp)
    mlp = moe_ops(model, train, lay, tok, xp) if moe else mlp_ops(model, train, lay, tok, model.dense_layer_ffn, xp)
    return attention, mlp


def layer_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any, moe: bool) -> list[Op]:
    """All ops of one transformer layer (dense or MoE) in forward: attention block, then MLP block."""
    attention, mlp = layer_parts(model, train, lay, xp, moe)
    return attention + mlp


def embedding_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any) -> list[Op]:
    """Embedding lookup on the first stage: gather T rows of h (then a sequence-parallel scatter)."""
    tok = Tokens.of(train, lay)
    return [_memory("embedding", 2.0 * ACT_BYTES * tok.T_L * float(model.hidden_size), 1.0, xp, tok.T_L, bwd=1.0)]


CE_FWD_BYTES = 38.0
CE_BWD_BYTES = 14.0


def logits_ops(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any) -> list[Op]:
    """Final norm, output projection (BF16, vocabulary split tp ways) and vocab-parallel cross-entropy.

    Megatron's unfused vocab-parallel cross-entropy, per logit: upcast to FP32 (read 2 B, write
    4 B), row max (read 4 B), subtract max in place (8 B), exp in place (8 B), row sum (4 B),
    normalise in place to the saved softmax (8 B): 38 B forward. Backward scales the saved softmax
    by the loss gradient in place (8 B) and casts it to BF16 for the output-layer GEMM (6 B): 14 B.
    """
    tok = Tokens.of(train, lay)
    h, V, t_L, T_L = float(model.hidden_size), float(model.vocab_size), lay.tp_L, tok.T_L
    flops_L = 2.0 * T_L * h * V / t_L
    return [
        _norm("final_norm", 2.0 * ACT_BYTES * tok.Tn_L * h, 1.0, xp, T_L),
        _gemm("logits", flops_L, T_L, h, V / t_L, kind=GEMM_BF16),
        _memory("cross_entropy", CE_FWD_BYTES * T_L * V / t_L, 6.0, xp, T_L, bwd=CE_BWD_BYTES / CE_FWD_BYTES),
    ]
