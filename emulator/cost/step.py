"""The nominal step: per-op times, exposed communication and the pipeline schedule, per layout.

For one GPU type and a batch of layouts (suffix ``_L``):

1. Per layer and micro-batch, forward and backward seconds of every op (:mod:`roofline`), plus the
   exposed part of the layer's TP, CP and EP communication (:mod:`collectives`).
2. Per stage: ``t_fb = sum over layers (fwd + bwd + recompute + exposed comm)`` for the first
   stage (+ embedding), a middle stage and the last stage (+ output layer and loss); the heaviest
   stage sets the pace.
3. Schedule (1F1B, Narayanan et al. 2021 Sec. 2.2): ``m = global_batch / (dp * micro_batch)``
   micro-batches; ``steady = m * t_fb``; ``bubble = (pp - 1) / vpp * t_fb``.
4. Per step: exposed pipeline send/recv, exposed data-parallel gradient reduce / parameter gather,
   and the optimizer step. ``step = steady + bubble + pp + dp + optimizer``.

Overlap rules (Megatron-Core defaults, each switchable in ``parallel``):

- TP with ``tp_comm_overlap``: the collective is split into ``tp`` chunks pipelined with the GEMM
  that consumes or produces it; exposed ``max(0, comm - gemm) + comm / tp`` (the first chunk
  cannot overlap). Without it, all of it is exposed.
- CP ring attention: each KV exchange overlaps with the attention core of the previous chunk;
  exposed ``max(0, comm - core)``.
- EP all-to-all (dispatch and combine): on the critical path unless ``ep_comm_overlap`` hides it
  behind another micro-batch's compute (:func:`_merged_mix`); expert-parallel ranks are ``etp``
  apart (Megatron-Core's expert rank order: etp fastest, then ep). With ``train.moe_dispatcher=flex``
  a token crosses the network once per other node its experts are on (:mod:`routing`).
- Expert TP (``etp`` > 1): the token dispatcher's all-gather and reduce-scatter of the routed pairs
  over the ``etp`` GPUs of an expert run outside the GEMMs: exposed, counted under ``tp_comm``.
- PP send/recv with ``pp_comm_overlap``: only the warm-up and cool-down transfers,
  ``2 (pp - 1)``, are exposed; otherwise every transfer of every micro-batch.
- DP with ``dp_comm_overlap``: the gradient reduce-scatter overlaps with the last micro-batch's
  backward and the parameter all-gather with the first micro-batch's forward; exposed is what
  exceeds that window plus one bucket (Megatron-Core bucket: ``max(4e7, 1e6 * dp)`` parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import as_float, where
from emulator.cost.collectives import Fabric
from emulator.cost.flops import model_flops_per_token, recompute_flops_by_module, recompute_flops_per_token
from emulator.cost.host import host_syncs, layer_host_idle_s, merged_layer_idle_s
from emulator.cost.layout import LayoutBatch
from emulator.cost.memory import MemoryBreakdown, expert_replicas, memory_per_gpu, stage_params
from emulator.cost.ops import (
    ACT_BYTES,
    GEMM,
    GEMM_BF16,
    Tokens,
    embedding_ops,
    layer_parts,
    logits_ops,
)
from emulator.cost.roofline import BlockTime, block_time, recomputed_weights, weighted_fwd_s
from emulator.cost.routing import remote_nodes_per_token
from emulator.cost.shapes import LayerShapes
from emulator.cost.stages import StageLayers
from emulator.spec.cluster import ClusterSpec
from emulator.spec.gpu import GpuSpec
from emulator.spec.model import ModelSpec
from emulator.spec.train import TrainSpec

BREAKDOWN_KEYS = ("compute", "tp_comm", "pp_comm", "dp_comm", "cp_comm", "ep_comm", "bubble", "optimizer", "other")
ADAM_BYTES_PER_SHARDED_PARAM = 30.0
"""Adam step per local parameter: read fp32 master, grad, m, v (16 B); write master, m, v (12 B) and the BF16
weight (2 B)."""
GRAD_PASS_BYTES_PER_PARAM = 8.0
"""Gradient-norm read and gradient-buffer zeroing over the unsharded main-grad buffer (4 B + 4 B)."""
DDP_BUCKET_PARAMS = 4e7
"""Megatron-Core DistributedDataParallelConfig: bucket_size = max(40,000,000, 1,000,000 * dp)."""


@dataclass(frozen=True)
class LayerTime:
    """Per micro-batch seconds of one layer kind on one GPU."""

    fwd_s_L: Any
    bwd_s_L: Any
    recompute_s_L: Any
    """Forward seconds run again in backward: the whole forward (full) or the selected modules' ops (selective)."""
    tp_fwd_s_L: Any
    tp_bwd_s_L: Any
    cp_fwd_s_L: Any
    cp_bwd_s_L: Any
    ep_fwd_s_L: Any
    ep_bwd_s_L: Any
    tp_recompute_s_L: Any
    """Exposed TP communication that selective recomputation runs again (the ``mlp``, ``shared_experts`` and
    ``moe`` modules' all-gathers and reduce-scatters); full recomputation re-runs all of ``tp_fwd_s_L``."""
    ep_recompute_s_L: Any
    """Exposed dispatch + combine that selective recomputation of the ``moe`` module runs again."""
    memory_bound_s_L: Any
    """Forward + backward seconds in memory-bound ops (HBM bandwidth sets them)."""
    host_idle_s_L: Any
    """GPU idle time per micro-batch waiting for the host to launch kernels (:mod:`emulator.cost.host`)."""
    ep_paired_s_L: Any
    """Exposed all-to-all of a forward and a backward merged under ``ep_comm_overlap`` (:func:`_ep_paired`)."""
    host_idle_paired_s_L: Any
    """Host wait of a merged forward and backward under ``ep_comm_overlap`` (:func:`merged_layer_idle_s`;
    ``host_idle_s_L`` where no host sync orders them)."""

    def compute_s(self) -> Any:
        return self.fwd_s_L + self.bwd_s_L + self.recompute_s_L

    def comm_s(self, kind: str, recompute_L: Any, xp: Any) -> Any:
        fwd, bwd = getattr(self, f"{kind}_fwd_s_L"), getattr(self, f"{kind}_bwd_s_L")
        again = getattr(self, f"{kind}_recompute_s_L", None)
        selective = 0.0 if again is None else as_float(recompute_L == 1.0, xp) * again
        return fwd + bwd + as_float(recompute_L == 2.0, xp) * fwd + selective


@dataclass(frozen=True)
class StepTime:
    """Nominal step for one GPU type: seconds, breakdown, memory."""

    step_time_s_L: Any
    breakdown_s: dict[str, Any]
    memory_bound_s_L: Any
    """Part of ``breakdown_s['compute']`` spent in memory-bound ops (what HBM bandwidth buys back)."""
    memory: MemoryBreakdown


def _gemm_window(block: BlockTime, names: tuple[str, ...]) -> Any:
    total = None
    for t in block.by_op:
        if t.name in names:
            total = t.fwd_s_L if total is None else total + t.fwd_s_L
    assert total is not None
    return total


def layer_time(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, gpu: GpuSpec, fabric: Fabric, xp: Any,
               moe: bool) -> LayerTime:
    attention, mlp = layer_parts(model, train, lay, xp, moe)
    ops = attention + mlp
    blk = block_time(ops, gpu, train.precision, xp)
    n_attn = len(attention)
    tok = Tokens.of(train, lay)
    T_L, t_L, h = tok.T_L, lay.tp_L, float(model.hidden_size)
    one = xp.ones_like(t_L)
    weights = recomputed_weights([t.modules for t in blk.by_op], lay, xp)
    zero = xp.zeros_like(lay.tp_L)
    sel_attn_L = weighted_fwd_s(blk.by_op[:n_attn], weights[:n_attn], zero)
    sel_mlp_L = weighted_fwd_s(blk.by_op[n_attn:], weights[n_attn:], zero)
    full_L = as_float(lay.recompute_L == 2.0, xp)
    # Where it runs again: full recomputation re-runs the whole forward before the layer's backward (counted
    # with the attention part, whose backward comes last); selective re-runs each module before its backward.
    rec_attn_L = where(lay.recompute_L == 2.0, blk.fwd_s_L, sel_attn_L, xp)
    rec_mlp_L = (1.0 - full_L) * sel_mlp_L
    recompute_L = rec_attn_L + rec_mlp_L
    # TP: an all-gather + a reduce-scatter (or an all-reduce) of the T x h activation per direction around
    # attention and around each dense (or shared-expert) MLP.
    has_mlp_tp = not moe or model.ffn_hidden_size > 0
    tp_blocks = 2.0 + (2.0 if has_mlp_tp else 0.0)
    tp_raw = tp_blocks * fabric.reduce_scatter_s(ACT_BYTES * T_L * h, t_L, one, xp)
    gemm_names = tuple(op.name for op in ops if op.kind in (GEMM, GEMM_BF16) and op.name != "router")
    window_fwd = _gemm_window(blk, gemm_names)
    overlapped_fwd = xp.maximum(tp_raw - window_fwd, 0.0) + tp_raw / t_L
    overlapped_bwd = xp.maximum(tp_raw - 2.0 * window_fwd, 0.0) + tp_raw / t_L
    tp_fwd = where(lay.tp_overlap_L > 0.0, overlapped_fwd, tp_raw, xp)
    tp_bwd = where(lay.tp_overlap_L > 0.0, overlapped_bwd, tp_raw, xp)
    # Selective recomputation of an MLP re-runs its all-gather and reduce-scatter: half of the layer's TP blocks.
    mlp_module = ("moe", "shared_experts") if moe else ("mlp",)
    mlp_again_L = xp.zeros_like(t_L)
    for name in mlp_module:
        mlp_again_L = xp.maximum(mlp_again_L, lay.recomputes(name, xp))
    tp_again = (mlp_again_L * tp_fwd * 2.0 / tp_blocks) if has_mlp_tp else xp.zeros_like(t_L)
    if moe:
        # Expert TP: the token dispatcher all-gathers the routed pairs over the etp GPUs of an expert after
        # the all-to-all and reduce-scatters them before the combine (T k etp / tp pairs of h after the
        # gather, ranks adjacent), outside the GEMMs: exposed, per direction.
        e_L = lay.etp_L
        etp = 2.0 * fabric.reduce_scatter_s(ACT_BYTES * T_L * float(model.experts_per_token) * e_L / t_L * h
                                           * float(train.moe_load_imbalance), e_L, one, xp)
        tp_fwd, tp_bwd = tp_fwd + etp, tp_bwd + etp
        tp_again = tp_again + lay.recomputes("moe", xp) * etp
    # CP: ring of cp-1 KV exchanges per direction (K and V forward; K, V, dK, dV backward).
    kv_width = float(model.num_heads * (model.qk_head_dim + model.value_head_dim)) if model.is_mla else float(
        2 * model.num_kv_heads * model.head_dim)
    chunk_L = ACT_BYTES * T_L * kv_width / t_L
    cp_step = fabric.p2p_s(chunk_L, t_L, xp)
    cp_raw = (lay.cp_L - 1.0) * cp_step
    core = _gemm_window(blk, tuple(t.name for t in blk.by_op if "core_attn" in t.modules))
    core_bwd = sum((t.bwd_s_L for t in blk.by_op if "core_attn" in t.modules), xp.zeros_like(t_L))
    cp_fwd = where(lay.cp_L > 1.0, xp.maximum(cp_raw - core, 0.0), 0.0, xp)
    cp_bwd = where(lay.cp_L > 1.0, xp.maximum(2.0 * cp_raw - core_bwd, 0.0), 0.0, xp)
    # EP: dispatch + combine all-to-all of the T k / tp routed pairs of h per direction; expert-parallel
    # ranks are etp apart (Megatron-Core expert rank order: etp fastest, then ep).
    if moe:
        token_bytes = ACT_BYTES * T_L * h / t_L
        a2a_bytes = token_bytes * float(model.experts_per_token)
        if train.moe_dispatcher == "flex":
            # One network copy per token and other node its experts are on (node-limited routing
            # bounds them), one NVLink copy per other rank it reaches: emulator.cost.routing.
            nodes_L = lay.ep_L / fabric.members_per_domain(lay.ep_L, lay.etp_L, xp)
            remote_L = remote_nodes_per_token(model, nodes_L, xp)
            ranks_L = remote_nodes_per_token(model, lay.ep_L, xp)  # every rank a "node" of E/ep experts
            ep_one = 2.0 * fabric.node_dedup_all_to_all_s(token_bytes, remote_L, ranks_L, lay.ep_L, lay.etp_L, xp)
        else:
            ep_one = 2.0 * fabric.all_to_all_s(a2a_bytes, lay.ep_L, lay.etp_L, xp)
    else:
        ep_one = xp.zeros_like(t_L)
    ep_one = ep_one * float(train.moe_load_imbalance)  # the busiest receiver sets the all-to-all's pace
    ep_again = lay.recomputes("moe", xp) * ep_one if moe else xp.zeros_like(t_L)
    sel_weights = [w * (1.0 - full_L) if hasattr(w, "shape") else w for w in weights]
    idle = layer_host_idle_s(ops, n_attn, [t.fwd_s_L for t in blk.by_op], [t.bwd_s_L for t in blk.by_op],
                             tp_fwd + cp_fwd, tp_bwd + cp_bwd + tp_again + full_L * (tp_fwd + cp_fwd), ep_one,
                             full_L, gpu, train, moe, xp, recompute_weights=sel_weights)
    # Memory-bound time run again: a third of the layer's (its forward) under full recomputation; the memory-bound
    # ops' forward under selective recomputation of their modules.
    mem_again = sum((w * where(t.memory_bound_s_L > 0.0, t.fwd_s_L, 0.0, xp)
                     for t, w in zip(blk.by_op, sel_weights, strict=True) if hasattr(w, "shape")), zero)
    mem_bound = blk.memory_bound_s_L * (1.0 + where(lay.recompute_L == 2.0, 1.0 / 3.0, 0.0, xp)) + mem_again
    comm_share = min(float(train.moe_comm_sms) / float(gpu.sm_count), 1.0)
    # (Megatron-Core runs the merged passes without recomputing the moe module: no ep_again here.)
    paired = _ep_paired(blk, n_attn, rec_attn_L, rec_mlp_L, ep_one, comm_share, xp) if moe else xp.zeros_like(t_L)
    idle_paired = merged_layer_idle_s(ops, n_attn, [t.fwd_s_L for t in blk.by_op], [t.bwd_s_L for t in blk.by_op],
                                      rec_attn_L, gpu, train, xp, rec_mlp_L=rec_mlp_L, recompute_weights=sel_weights) \
        if host_syncs(ops, train, moe) else idle
    return LayerTime(blk.fwd_s_L, blk.bwd_s_L, recompute_L, tp_fwd, tp_bwd, cp_fwd, cp_bwd, ep_one, ep_one, tp_again,
                     ep_again, mem_bound, idle, paired, idle_paired)


def _ep_paired(blk: BlockTime, n_attn: int, rec_attn_L: Any, rec_mlp_L: Any, ep_one_L: Any, comm_share: float,
               xp: Any) -> Any:
    """Exposed all-to-all of one MoE layer when the forward of one micro-batch and the backward of
    another are merged (Megatron-Core ``overlap_moe_expert_parallel_comm``).

    The merged layer runs in three phases, a communication stream beside the compute stream
    (Megatron-Core's schedule as NVIDIA/Megatron-LM PR #2719 sets it out):

    1. backward combine | attention (+ router) forward;
    2. forward dispatch, backward dispatch | MLP backward (data and weight gradients), MLP forward;
    3. forward combine | attention backward (+ its recomputation: all of it under full recomputation).

    Selective recomputation of MLP modules (``rec_mlp_L``) runs in phase 2, before the MLP backward.

    Each all-to-all takes ``a = ep_one / 2``. A phase with communication ``E`` beside compute ``C``
    takes ``max(C + s E, E)`` (the communication kernels hold a share ``s`` of the SMs, so compute
    runs at ``1 - s`` while they run), i.e. exposes ``max(s E, E - C)`` beyond its compute."""
    attn_f = sum((t.fwd_s_L for t in blk.by_op[:n_attn]), xp.zeros_like(ep_one_L))
    attn_b = sum((t.bwd_s_L for t in blk.by_op[:n_attn]), xp.zeros_like(ep_one_L)) + rec_attn_L
    mlp_fb = blk.fwd_s_L + blk.bwd_s_L - sum((t.fwd_s_L + t.bwd_s_L for t in blk.by_op[:n_attn]),
                                             xp.zeros_like(ep_one_L)) + rec_mlp_L
    a = ep_one_L / 2.0
    s = comm_share

    def phase(comm: Any, compute: Any) -> Any:
        return xp.maximum(s * comm, comm - compute)

    return phase(a, attn_f) + phase(2.0 * a, mlp_fb) + phase(a, attn_b)


@dataclass(frozen=True)
class StageCost:
    """Per micro-batch seconds of the heaviest pipeline stage, by kind, and the parameters of the
    heaviest-parameter stage (what data parallelism reduces and the optimizer updates)."""

    compute_s_L: Any
    other_s_L: Any
    tp_comm_s_L: Any
    cp_comm_s_L: Any
    ep_comm_s_L: Any
    memory_bound_s_L: Any
    total_s_L: Any
    """``t_fb``: one micro-batch forward and backward through every layer of the heaviest stage."""
    dense_params_L: Any
    expert_params_L: Any
    ep_paired_s_L: Any
    """``ep_comm`` of a micro-batch whose forward and backward both run merged with another's
    (``ep_comm_overlap``)."""
    other_paired_s_L: Any
    """``other`` (host wait) of such a micro-batch."""


STAGE_KEYS = ("compute", "other", "tp_comm", "cp_comm", "ep_comm")
"""The per micro-batch kinds a stage adds up (``memory_bound`` is a part of ``compute``)."""


def stage_cost(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, gpu: GpuSpec, fabric: Fabric,
               xp: Any) -> StageCost:
    """The heaviest stage of each layout per micro-batch; depends only on the fields of
    :data:`emulator.cost.shapes.SHAPE_FIELDS`, so a batch evaluates it once per shape."""
    moe = layer_time(model, train, lay, gpu, fabric, xp, True) if model.is_moe else None
    has_dense = not model.is_moe or model.num_dense_layers > 0
    dense = layer_time(model, train, lay, gpu, fabric, xp, False) if has_dense else moe
    assert dense is not None
    moe = dense if moe is None else moe
    emb = block_time(embedding_ops(model, train, lay, xp), gpu, train.precision, xp)
    out = block_time(logits_ops(model, train, lay, xp), gpu, train.precision, xp)
    st = StageLayers.of(model, lay, xp)
    rc = lay.recompute_L
    single_L = lay.pp_L == 1.0

    # Per-layer quantities of each layer kind, weighted by each stage's layer counts.
    zero_L = xp.zeros_like(lay.tp_L)
    kinds = {"compute": (dense.compute_s(), moe.compute_s()), "other": (dense.host_idle_s_L, moe.host_idle_s_L),
             "tp_comm": (dense.comm_s("tp", rc, xp), moe.comm_s("tp", rc, xp)),
             "cp_comm": (dense.comm_s("cp", rc, xp), moe.comm_s("cp", rc, xp)),
             "ep_comm": (zero_L, moe.comm_s("ep", rc, xp)) if model.is_moe else (zero_L, zero_L),
             "memory_bound": (dense.memory_bound_s_L, moe.memory_bound_s_L),
             "ep_paired": (zero_L, moe.ep_paired_s_L) if model.is_moe else (zero_L, zero_L),
             "other_paired": (dense.host_idle_s_L, moe.host_idle_paired_s_L)}
    emb_s, out_s = emb.fwd_s_L + emb.bwd_s_L, out.fwd_s_L + out.bwd_s_L

    def stage(n_dense: Any, n_moe: Any, first: Any, last: Any) -> dict[str, Any]:
        if model.is_moe:
            parts = {key: n_dense * d + n_moe * m for key, (d, m) in kinds.items()}
        else:  # a dense model has no MoE layers: half the work
            parts = {key: n_dense * d for key, (d, _) in kinds.items()}
        parts["compute"] = parts["compute"] + first * emb_s + last * out_s
        parts["memory_bound"] = parts["memory_bound"] + first * emb.memory_bound_s_L + last * out.memory_bound_s_L
        return parts

    heads = 1.0 + float(model.mtp_layers)  # output-head passes: the main one and one per MTP module
    stages = (
        stage(st.first_dense_L, st.first_moe_L, 1.0, where(single_L, heads, 0.0, xp)),
        stage(st.mid_dense_L, st.mid_moe_L, zero_L, zero_L),
        stage(st.last_dense_L, st.last_moe_L, zero_L, heads),
    )
    heavy = stages[0]
    heavy_total = sum(heavy[k] for k in STAGE_KEYS)
    for cand in stages[1:]:
        total = sum(cand[k] for k in STAGE_KEYS)
        take = total > heavy_total
        heavy = {k: where(take, cand[k], heavy[k], xp) for k in heavy}
        heavy_total = where(take, total, heavy_total, xp)
    params = stage_params(model, lay, xp.maximum(st.first_dense_L, st.mid_dense_L),
                          xp.maximum(xp.maximum(st.first_moe_L, st.mid_moe_L), st.last_moe_L), True, True, xp)
    return StageCost(heavy["compute"], heavy["other"], heavy["tp_comm"], heavy["cp_comm"], heavy["ep_comm"],
                     heavy["memory_bound"], heavy_total, params.dense_L, params.expert_L, heavy["ep_paired"],
                     heavy["other_paired"])


def step_time(model: ModelSpec, train: TrainSpec, cluster: ClusterSpec, gpu: GpuSpec, lay: LayoutBatch,
              xp: Any) -> StepTime:
    """Nominal step of every layout in ``lay`` when all GPUs are of type ``gpu``."""
    fabric = Fabric.of(cluster, gpu)
    shapes = LayerShapes.of(lay, xp)
    sc = shapes.apply(lambda b: stage_cost(model, train, b, gpu, fabric, xp), lay, xp)
    m_L = float(train.global_batch) / (lay.dp_L * lay.mb_L)
    ep_mb_L = _merged_mix(sc.ep_comm_s_L, sc.ep_paired_s_L, lay, m_L, xp) if model.is_moe else sc.ep_comm_s_L
    other_mb_L = _merged_mix(sc.other_s_L, sc.other_paired_s_L, lay, m_L, xp) if model.is_moe else sc.other_s_L
    per_mb = {k: getattr(sc, f"{k}_s_L") for k in STAGE_KEYS}
    per_mb["ep_comm"] = ep_mb_L
    per_mb["other"] = other_mb_L
    breakdown = {k: m_L * v for k, v in per_mb.items()}
    memory_bound = m_L * sc.memory_bound_s_L
    t_fb_L = sc.total_s_L - sc.ep_comm_s_L + ep_mb_L - sc.other_s_L + other_mb_L
    breakdown["bubble"] = (lay.pp_L - 1.0) / lay.vpp_L * t_fb_L

    # Pipeline send/recv of the T x h / tp activation (scatter-gather optimisation).
    tok = Tokens.of(train, lay)
    p2p = fabric.p2p_s(ACT_BYTES * tok.T_L * float(model.hidden_size) / lay.tp_L, lay.tp_L * lay.cp_L * lay.dp_L, xp)
    transfers = where(lay.pp_overlap_L > 0.0, 2.0 * (lay.pp_L - 1.0), 2.0 * (m_L * lay.vpp_L + lay.pp_L - 1.0), xp)
    breakdown["pp_comm"] = where(lay.pp_L > 1.0, transfers * p2p, 0.0, xp)

    # Data parallel and optimizer over the parameters of the heaviest-parameter stage.
    t_fb_one = t_fb_L  # one micro-batch through every layer of the heaviest stage
    breakdown["dp_comm"] = _dp_exposed(sc.dense_params_L, lay.dp_L * lay.cp_L, lay.tp_L, train, lay, fabric, m_L,
                                       t_fb_one, xp)
    if model.is_moe:
        # Expert data parallelism: edp = tp cp dp / (etp ep) replicas, etp * ep ranks apart.
        breakdown["dp_comm"] = breakdown["dp_comm"] + _dp_exposed(
            sc.expert_params_L, expert_replicas(lay), lay.etp_L * lay.ep_L, train, lay, fabric, m_L, t_fb_one, xp)
    n_dense_rep = lay.dp_L * lay.cp_L
    shard_dense = 1.0 + as_float(lay.zero_L >= 1.0, xp) * (n_dense_rep - 1.0)
    shard_exp = 1.0 + as_float(lay.zero_L >= 1.0, xp) * (expert_replicas(lay) - 1.0)
    opt_bytes = ADAM_BYTES_PER_SHARDED_PARAM * (sc.dense_params_L / shard_dense + sc.expert_params_L / shard_exp) \
        + GRAD_PASS_BYTES_PER_PARAM * (sc.dense_params_L + sc.expert_params_L)
    breakdown["optimizer"] = opt_bytes / (gpu.hbm_bytes_per_s * gpu.efficiency.hbm)
    step = sum(breakdown[k] for k in BREAKDOWN_KEYS)
    mem = memory_per_gpu(model, train, lay, gpu, xp, shapes)
    return StepTime(step, {k: breakdown[k] for k in BREAKDOWN_KEYS}, memory_bound, mem)


def _merged_mix(alone_L: Any, paired_L: Any, lay: LayoutBatch, m_L: Any, xp: Any) -> Any:
    """A per micro-batch cost of the heaviest stage that differs when its passes run merged: the exposed MoE
    all-to-all (``ep`` alone, ``ep_paired`` merged, :func:`_ep_paired`) or the host wait (``other`` alone,
    ``other_paired`` merged, :func:`emulator.cost.host.merged_layer_idle_s`).

    Without ``ep_comm_overlap`` every pass is alone. With it, a micro-batch whose forward and
    backward both run merged with another micro-batch's costs the merged figure. Passes with no partner
    stay alone: the warm-up forwards and cool-down backwards
    of the schedule, ``w`` of the ``m vpp`` virtual-stage passes, ``w = 2 (pp-1) + (vpp-1) pp``
    interleaved (Megatron-Core's warm-up count on the first pipeline rank), and the first forward / last
    backward without pipelining (``w = 1``; Megatron-Core runs the overlap with pp > 1 only interleaved,
    :func:`emulator.spec.parallel.ep_overlap_blocker`):
    ``cost = u alone + (1 - u) paired``, ``u = min(1, w / (m vpp))``."""
    pp, vpp = lay.pp_L, lay.vpp_L
    warm_L = where(vpp > 1.0, 2.0 * (pp - 1.0) + (vpp - 1.0) * pp, 1.0, xp)
    unpaired_L = xp.minimum(warm_L / (m_L * vpp), 1.0)
    overlapped = unpaired_L * alone_L + (1.0 - unpaired_L) * paired_L
    return where(lay.ep_overlap_L > 0.0, overlapped, alone_L, xp)


def _dp_exposed(params_L: Any, n_L: Any, stride_L: Any, train: TrainSpec, lay: LayoutBatch, fabric: Fabric,
                m_L: Any, t_fb_L: Any, xp: Any) -> Any:
    """Exposed seconds of the data-parallel collectives of one parameter group."""
    grads = params_L * float(train.grad_reduce_bytes)
    weights = params_L * ACT_BYTES
    per_byte, latency = fabric.ring_cost(n_L, stride_L, xp)
    rs = per_byte * grads + latency
    ag = per_byte * weights + latency
    ar = 2.0 * rs  # all-reduce = reduce-scatter + all-gather of the same buffer
    z = lay.zero_L
    bucket = xp.minimum(xp.maximum(DDP_BUCKET_PARAMS, 1e6 * lay.dp_L) / xp.maximum(params_L, 1.0), 1.0)
    window_b = t_fb_L * (2.0 / 3.0)
    window_f = t_fb_L / 3.0
    over_rs = xp.maximum(rs - window_b, 0.0) + bucket * rs
    over_ag = xp.maximum(ag - window_f, 0.0) + bucket * ag
    over_ar = xp.maximum(ar - window_b, 0.0) + bucket * ar
    overlap = lay.dp_overlap_L > 0.0
    z12 = where(overlap, over_rs + over_ag, rs + ag, xp)
    z0 = where(overlap, over_ar, ar, xp)
    # ZeRO-3: gather weights before forward and backward and reduce-scatter gradients, every micro-batch.
    per_mb = 2.0 * ag + rs
    z3 = where(overlap, xp.maximum(m_L * per_mb - m_L * t_fb_L, 0.0) + bucket * per_mb, m_L * per_mb, xp)
    out = where(z == 0.0, z0, where(z == 3.0, z3, z12, xp), xp)
    return where((n_L > 1.0) & (params_L > 0.0), out, 0.0, xp)


@dataclass(frozen=True)
class NominalResult:
    """The nominal step of a job on its cluster (mixed pools: the slowest type sets the pace)."""

    step_time_s_L: Any
    tokens_per_s_L: Any
    model_tflops_per_gpu_L: Any
    mfu_L: Any
    hfu_L: Any
    """Model FLOPs plus recomputation FLOPs (same counting convention) over the peak."""
    breakdown_s: dict[str, Any]
    by_gpu_type: dict[str, StepTime]
    pace_gpu_type: str
    """GPU type of the pool whose step time sets the pace (for a single layout: index 0)."""


def nominal(model: ModelSpec, train: TrainSpec, cluster: ClusterSpec, lay: LayoutBatch, xp: Any) -> NominalResult:
    """Nominal step, throughput and utilisation of each layout on the cluster."""
    per_type = {gpu.name: step_time(model, train, cluster, gpu, lay, xp) for gpu in cluster.gpu_types}
    names = list(per_type)
    pace = names[0]
    step = per_type[pace].step_time_s_L
    breakdown = dict(per_type[pace].breakdown_s)
    for name in names[1:]:
        cand = per_type[name]
        take = cand.step_time_s_L > step
        breakdown = {k: where(take, cand.breakdown_s[k], breakdown[k], xp) for k in breakdown}
        step = where(take, cand.step_time_s_L, step, xp)
        if bool(take[0]):
            pace = name
    tokens = float(train.global_batch * train.seq_len)
    tokens_per_s = tokens / step
    model_flops = model_flops_per_token(model, train.seq_len) * tokens
    n = float(cluster.num_gpus)
    per_gpu_flops = model_flops / step / n
    peak = sum(p.num_gpus * p.gpu.peak_flops_per_s(train.precision) for p in cluster.pools) / n
    extra_L = as_float(lay.recompute_L == 2.0, xp) * recompute_flops_per_token(model, train.seq_len, "full")
    for module, per_token in recompute_flops_by_module(model, train.seq_len).items():
        if per_token == 0.0:
            continue
        # selective: each module's matmuls once (moe contains shared_experts)
        w_L = lay.recomputes(module, xp)
        if module == "shared_experts":
            w_L = w_L * (1.0 - lay.recomputes("moe", xp))
        extra_L = extra_L + w_L * per_token
    hw = (model_flops + extra_L * tokens) / step / n
    return NominalResult(step, tokens_per_s, per_gpu_flops / 1e12, per_gpu_flops / peak, hw / peak, breakdown,
                         per_type, pace)
