"""Memory per GPU: weights, gradients, optimizer state, activations, other.

Model state (mixed-precision Adam, Megatron-Core): BF16 weights (2 B/param), main gradients in
``train.grad_reduce_bytes`` (4 B fp32 by default), FP32 master weights + Adam m + v (12 B).
ZeRO stage z shards over the ``N`` data-parallel replicas of a parameter: z>=1 the 12 B of
optimizer state, z>=2 the gradients, z=3 the weights (plus two layers' weights gathered unsharded:
the one computing and the prefetched next one). Dense parameters are replicated over
``dp*cp`` ranks, expert parameters over ``tp*cp*dp/(etp*ep)`` (``dp*cp/ep`` with the default
etp = tp). FP8 training keeps one extra FP8 copy of each weight (1 B/param, Transformer Engine's
cached cast).

Activations per layer and micro-batch (bytes; generalises Korthikanti et al. 2022, Sec. 4, to
GQA, gated MLPs, MoE and fused attention; ``Tn = T/tp`` with sequence parallelism else ``T``):

- attention: norm input ``2 Tn h``, QKV input ``2 Tn h``, Q/K/V ``2 T (q + 2kv)/tp``, attention
  output (= out-proj input) ``2 T q/tp``, dropout mask ``Tn h`` (if dropout), with per-head query/key
  norms (``model.qk_norm``) their inputs ``2 T (q + kv)/tp``; fused kernel:
  log-sum-exp ``4 T a/tp``; unfused: softmax output ``2 a s T/tp`` (+ dropout mask and output
  ``3 a s T/tp`` with dropout);
- MLP: norm input ``2 Tn h``, fc1 input ``2 Tn h``, fc1 output ``2 g T f/tp``, activation output
  ``2 T f/tp``, dropout mask ``Tn h``; MoE: fc1 input ``2 T k etp h / tp`` (the pairs a GPU computes),
  output and activation ``mlp(T k, f)`` (``T k etp / tp`` pairs on ``f / etp``), both times
  ``train.moe_load_imbalance`` (the busiest rank's pairs over the mean), router probabilities
  ``4 Tn E``, plus the shared MLP.

For GPT (q = kv = h, f = 4h, dropout, unfused, no SP) this is ``s b h (34 + 5 a s / h)`` and with
SP ``s b h / t (34 + 5 a s / h)``: the paper's formulas (checked in the tests). Selective
recompute drops the attention core's internals; full recompute keeps only the layer input
``2 Tn h`` (plus one layer's full set while it is recomputed; selective recomputation likewise holds one layer's
dropped bytes while it re-runs them).

Selective recomputation drops what each module of ``parallel.recompute_modules`` keeps inside it
(:func:`recompute_saved_bytes`): ``core_attn`` the attention core's internals; ``layernorm`` the output
``2 Tn h`` of each norm that is a module of its own (an MoE layer's pre-MLP norm, MLA's input norm); ``mla_up_proj``
the up-projected Q, K, V ``2 T (q + 2 kv)/tp`` (the compressed latents it restarts from stay); ``mlp`` a
dense layer's norm output and MLP internals ``2 Tn h + mlp(T, f)`` (its norm is fused into fc1, so the module
restarts from the norm's input); ``moe_act`` the experts' activation output ``2 T k f / tp`` (times the
imbalance); ``shared_experts`` the shared MLP's internals; ``moe`` everything the MoE block keeps past its
input (router probabilities, expert inputs and internals, shared MLP).

In flight: 1F1B keeps ``min(pp - i, m)`` micro-batches on stage ``i`` (``pp`` on the first, ``pp - 1``
on the second, the fullest middle stage), times
``1 + (pp-1)/(pp*vpp)`` with interleaving (Korthikanti et al. 2022, Sec. 4.2.3); the last stage
holds one micro-batch plus the logits (``2 + 4`` B per logit: BF16 logits, FP32 loss gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import as_float, where
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import Tokens
from emulator.cost.shapes import LayerShapes
from emulator.cost.stages import StageLayers
from emulator.spec.gpu import GpuSpec
from emulator.spec.model import ModelSpec
from emulator.spec.train import TrainSpec

GB = 1e9
WEIGHT_BYTES = 2.0
OPTIMIZER_BYTES = 12.0
FP8_WEIGHT_COPY_BYTES = 1.0
FSDP_GATHERED_LAYERS = 2.0
"""Layers whose weights ZeRO-3 holds unsharded at once: the one computing and the prefetched next one."""


@dataclass(frozen=True)
class StageParams:
    """Parameters held by one GPU of a stage, split by how they are replicated."""

    dense_L: Any
    """Non-expert parameters (replicated over dp*cp)."""
    expert_L: Any
    """Expert parameters (replicated over tp*cp*dp/(etp*ep))."""


@dataclass(frozen=True)
class LayerParams:
    """Parameters one GPU holds per layer of each kind, and per vocabulary table (computed once per batch)."""

    dense_layer_L: Any
    moe_shared_L: Any
    experts_L: Any
    table_L: Any

    @classmethod
    def of(cls, model: ModelSpec, lay: LayoutBatch, xp: Any) -> LayerParams:
        inv_t = 1.0 / lay.tp_L
        attn = float(model.attention_params())
        dense_layer = (attn + float(model.mlp_params(model.dense_layer_ffn))) * inv_t
        moe_shared = (attn + float(model.mlp_params(model.ffn_hidden_size))) * inv_t \
            + float(model.hidden_size * model.num_experts)
        experts = float(model.num_experts * model.expert_params()) / (lay.ep_L * lay.etp_L) if model.is_moe \
            else xp.zeros_like(inv_t)
        return cls(dense_layer, moe_shared, experts, float(model.vocab_size * model.hidden_size) * inv_t)


def stage_params(model: ModelSpec, lay: LayoutBatch, n_dense_L: Any, n_moe_L: Any, embedding: Any,
                 output: Any, xp: Any, per: LayerParams | None = None) -> StageParams:
    """Parameters on one GPU of a stage with the given layer counts (norm weights ignored); ``embedding``
    and ``output`` count the vocabulary tables the stage holds (booleans or 0/1 arrays)."""
    p = per or LayerParams.of(model, lay, xp)
    tables = (1.0 if embedding is True else 0.0 if embedding is False else embedding) + \
        (1.0 if output is True else 0.0 if output is False else output)
    dense_L = n_dense_L * p.dense_layer_L + n_moe_L * p.moe_shared_L + tables * p.table_L
    return StageParams(dense_L=dense_L, expert_L=n_moe_L * p.experts_L)


def activation_bytes_per_layer(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any,
                               moe: bool) -> Any:
    """Stored activation bytes of one layer and one micro-batch, before recompute is applied."""
    tok = Tokens.of(train, lay)
    T_L, Tn_L, t_L = tok.T_L, tok.Tn_L, lay.tp_L
    h, a, s = float(model.hidden_size), float(model.num_heads), float(train.seq_len)
    q = a * model.qk_head_dim
    kv = a * (model.qk_head_dim + model.value_head_dim) / 2.0 if model.is_mla else float(
        model.num_kv_heads * model.head_dim)
    out = a * model.value_head_dim
    drop = 1.0 if train.dropout > 0.0 else 0.0
    attn = 4.0 * Tn_L * h + 2.0 * T_L * (q + 2.0 * kv) / t_L + 2.0 * T_L * out / t_L + drop * Tn_L * h
    attn = attn + _core_bytes(train, T_L, t_L, a, s)
    if model.qk_norm and not model.is_mla:
        attn = attn + 2.0 * T_L * (q + kv) / t_L  # the per-head norms' inputs (queries and keys before the norm)
    g = 2.0 if model.gated_mlp else 1.0

    def mlp(tokens_L: Any, f: float) -> Any:
        return 2.0 * g * tokens_L * f / t_L + 2.0 * tokens_L * f / t_L

    if moe:
        k, E = float(model.experts_per_token), float(model.num_experts)
        fe = float(model.expert_ffn_hidden_size)
        # fc1 input: the T k etp / tp pairs this GPU computes (after the expert-TP all-gather); the
        # expert intermediates, T k etp / tp pairs on f / etp, come to mlp(T k, f) whatever etp is.
        f_imb = float(train.moe_load_imbalance)  # the busiest rank keeps f times the mean routed pairs
        block = 4.0 * Tn_L * h + 4.0 * Tn_L * E + f_imb * (2.0 * T_L * k * lay.etp_L * h / t_L + mlp(T_L * k, fe))
        if model.ffn_hidden_size:
            block = block + mlp(T_L, float(model.ffn_hidden_size))
    else:
        block = 4.0 * Tn_L * h + mlp(T_L, float(model.dense_layer_ffn))
    return attn + block + drop * Tn_L * h


def _core_bytes(train: TrainSpec, T_L: Any, t_L: Any, a: float, s: float) -> Any:
    """Bytes the attention core stores for backward (what selective recompute removes)."""
    if train.attention_kernel in ("flash", "flash2"):
        return 4.0 * T_L * a / t_L
    per_score = 2.0 + (3.0 if train.dropout > 0.0 else 0.0)
    return per_score * a * s * T_L / t_L


def recompute_saved_bytes(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any, moe: bool) -> dict[str, Any]:
    """Activation bytes per layer and micro-batch that selective recomputation of each module does not keep
    (module docstring); zero where the layer has no such module."""
    tok = Tokens.of(train, lay)
    T_L, Tn_L, t_L = tok.T_L, tok.Tn_L, lay.tp_L
    h, a = float(model.hidden_size), float(model.num_heads)
    zero = xp.zeros_like(T_L)
    g = 2.0 if model.gated_mlp else 1.0

    def mlp(tokens_L: Any, f: float) -> Any:  # fc1 output and activation output, as activation_bytes_per_layer
        return 2.0 * g * tokens_L * f / t_L + 2.0 * tokens_L * f / t_L

    norm_out = 2.0 * Tn_L * h
    saved = {"core_attn": _core_bytes(train, T_L, t_L, a, float(train.seq_len)),
             "layernorm": (norm_out if model.is_mla else zero) + (norm_out if moe else zero),
             "mla_up_proj": 2.0 * T_L * a * (2.0 * model.qk_head_dim + model.value_head_dim) / t_L if model.is_mla
             else zero,
             "mlp": zero if moe else norm_out + mlp(T_L, float(model.dense_layer_ffn)),
             "moe_act": zero, "shared_experts": zero, "moe": zero}
    if moe:
        k, E, fe = float(model.experts_per_token), float(model.num_experts), float(model.expert_ffn_hidden_size)
        f_imb = float(train.moe_load_imbalance)
        shared = mlp(T_L, float(model.ffn_hidden_size)) if model.ffn_hidden_size else zero
        saved["moe_act"] = f_imb * 2.0 * T_L * k * fe / t_L
        saved["shared_experts"] = shared
        saved["moe"] = 4.0 * Tn_L * E + f_imb * (2.0 * T_L * k * lay.etp_L * h / t_L + mlp(T_L * k, fe)) + shared
    return saved


def stored_bytes_per_layer(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any, moe: bool) -> Any:
    """Activation bytes one layer keeps per in-flight micro-batch, after recomputation (the ``moe`` module
    contains ``moe_act`` and ``shared_experts``: their bytes count once)."""
    full_L = activation_bytes_per_layer(model, train, lay, xp, moe)
    tok = Tokens.of(train, lay)
    saved = recompute_saved_bytes(model, train, lay, xp, moe)
    w = {m: lay.recomputes(m, xp) for m in saved}
    inner_L = w["moe"] * saved["moe"] + (1.0 - w["moe"]) * (w["moe_act"] * saved["moe_act"]
                                                               + w["shared_experts"] * saved["shared_experts"])
    selective_L = full_L - inner_L - sum(w[m] * saved[m] for m in ("core_attn", "layernorm", "mla_up_proj", "mlp"))
    input_L = 2.0 * tok.Tn_L * float(model.hidden_size)
    return where(lay.recompute_L == 2.0, input_L, selective_L, xp)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU on the most loaded stage (suffix _L: per layout)."""

    weights_L: Any
    gradients_L: Any
    optimizer_L: Any
    activations_L: Any
    other_L: Any
    total_L: Any
    capacity_bytes: float
    fits_L: Any

    def as_dict(self, i: int) -> dict[str, float]:
        return {
            "weights": float(self.weights_L[i]),
            "gradients": float(self.gradients_L[i]),
            "optimizer": float(self.optimizer_L[i]),
            "activations": float(self.activations_L[i]),
            "other": float(self.other_L[i]),
            "total": float(self.total_L[i]),
        }


@dataclass(frozen=True)
class StageMemory:
    """Per stage (first, a middle one, last): the parameters one GPU holds and its activation bytes, split
    into the part that scales with the micro-batches in flight and the fixed part (the recompute peak and
    the logits). Depends only on the fields of :data:`emulator.cost.shapes.SHAPE_FIELDS`."""

    first_dense_L: Any
    first_expert_L: Any
    first_act_per_mb_L: Any
    first_act_fixed_L: Any
    mid_dense_L: Any
    mid_expert_L: Any
    mid_act_per_mb_L: Any
    mid_act_fixed_L: Any
    last_dense_L: Any
    last_expert_L: Any
    last_act_per_mb_L: Any
    last_act_fixed_L: Any
    layer_params_L: Any
    """Parameters one GPU holds of its largest layer (what ZeRO-3 gathers unsharded at a time)."""

    @classmethod
    def of(cls, model: ModelSpec, train: TrainSpec, lay: LayoutBatch, xp: Any) -> StageMemory:
        st = StageLayers.of(model, lay, xp)
        single_L = lay.pp_L == 1.0
        dense_act = stored_bytes_per_layer(model, train, lay, xp, moe=False)
        moe_act = stored_bytes_per_layer(model, train, lay, xp, moe=True) if model.is_moe else dense_act
        full_dense = activation_bytes_per_layer(model, train, lay, xp, moe=False)
        full_moe = activation_bytes_per_layer(model, train, lay, xp, moe=True) if model.is_moe else full_dense
        # While a layer's backward recomputes, what recomputation dropped for it is held again: all of one layer
        # (full), or what its selected modules dropped (selective).
        selective_peak_L = xp.maximum(full_dense - dense_act, full_moe - moe_act)
        recompute_peak_L = where(lay.recompute_L == 2.0, xp.maximum(full_dense, full_moe),
                                 where(lay.recompute_L == 1.0, selective_peak_L, 0.0, xp), xp)
        tok = Tokens.of(train, lay)
        logits_L = 6.0 * tok.T_L * float(model.vocab_size) / lay.tp_L
        embed_act_L = 2.0 * tok.Tn_L * float(model.hidden_size)
        per = LayerParams.of(model, lay, xp)
        # The first stage holds the output layer only when it is also the last (pp=1) and it is not tied.
        first_out = as_float(single_L, xp) * (0.0 if model.tied_embeddings else 1.0)
        first = stage_params(model, lay, st.first_dense_L, st.first_moe_L, True, first_out, xp, per)
        mid = stage_params(model, lay, st.mid_dense_L, st.mid_moe_L, False, True, xp, per)
        last = stage_params(model, lay, st.last_dense_L, st.last_moe_L, False, True, xp, per)
        return cls(
            first.dense_L, first.expert_L,
            st.first_dense_L * dense_act + st.first_moe_L * moe_act + embed_act_L,
            recompute_peak_L + where(single_L, logits_L, 0.0, xp),
            mid.dense_L, mid.expert_L, st.mid_dense_L * dense_act + st.mid_moe_L * moe_act, recompute_peak_L,
            last.dense_L, last.expert_L, st.last_dense_L * dense_act + st.last_moe_L * moe_act,
            recompute_peak_L + logits_L,
            xp.maximum(per.dense_layer_L, per.moe_shared_L + per.experts_L) if model.is_moe else per.dense_layer_L,
        )


def memory_per_gpu(model: ModelSpec, train: TrainSpec, lay: LayoutBatch, gpu: GpuSpec, xp: Any,
                   shapes: LayerShapes | None = None) -> MemoryBreakdown:
    """Per-GPU memory of the most loaded pipeline stage (first, middle or last) for each layout."""
    sm = (shapes or LayerShapes(None, None)).apply(lambda b: StageMemory.of(model, train, b, xp), lay, xp)
    m_L = train.global_batch / (lay.dp_L * lay.mb_L)
    interleave_L = where(lay.vpp_L > 1.0, 1.0 + (lay.pp_L - 1.0) / (lay.pp_L * lay.vpp_L), 1.0, xp)
    inflight_L = xp.minimum(lay.pp_L, m_L) * interleave_L
    # 1F1B: stage i keeps pp - i micro-batches in flight; the second stage is the fullest middle stage.
    inflight_mid_L = xp.minimum(xp.maximum(lay.pp_L - 1.0, 1.0), m_L) * interleave_L
    per_param = StateBytesPerParam.of(lay, model.is_moe, train, xp)
    reserved = train.memory_reserved_gb * GB
    frag1 = 1.0 + train.fragmentation
    # The most loaded stage by its total; its weights, gradients and optimizer bytes are computed once.
    best = None
    for name, inflight in (("first", inflight_L), ("mid", inflight_mid_L), ("last", 1.0)):
        dense, expert = getattr(sm, f"{name}_dense_L"), getattr(sm, f"{name}_expert_L")
        act = inflight * getattr(sm, f"{name}_act_per_mb_L") + getattr(sm, f"{name}_act_fixed_L")
        total = per_param.state_bytes(dense, expert) + frag1 * act
        best = (dense, expert, act, total) if best is None else _pick(best, (dense, expert, act, total), xp)
    assert best is not None
    dense, expert, act, _ = best
    w, g, o = per_param.split(dense, expert)
    # ZeRO-3 (FSDP) gathers each layer's weights before using them: the current layer's and the prefetched
    # next one's are unsharded at once (PyTorch FSDP limit_all_gathers: "the current instance running
    # computation and the next instance whose all-gather is prefetched"; Megatron-FSDP prefetches likewise).
    w = w + as_float(lay.zero_L == 3.0, xp) * (FSDP_GATHERED_LAYERS * per_param.weight_bytes) * sm.layer_params_L
    other = reserved + train.fragmentation * act
    total = w + g + o + act + other
    cap = gpu.hbm_bytes
    return MemoryBreakdown(w, g, o, act, other, total, cap, total <= cap)


def expert_replicas(lay: LayoutBatch) -> Any:
    """Replicas of each expert parameter (expert data parallelism): ``tp cp dp / (etp ep)``; with the
    default ``etp = tp``, ``cp dp / ep``."""
    return lay.tp_L * lay.cp_L * lay.dp_L / (lay.etp_L * lay.ep_L)


def _pick(a: tuple[Any, ...], b: tuple[Any, ...], xp: Any) -> tuple[Any, ...]:
    """Element-wise choice of the more loaded of two stages (``(..., total)`` tuples; ties keep ``a``)."""
    take_b = b[-1] > a[-1]
    return tuple(where(take_b, pb, pa, xp) for pa, pb in zip(a, b, strict=True))


@dataclass(frozen=True)
class StateBytesPerParam:
    """Bytes per parameter one GPU holds for weights, gradients and optimizer state after ZeRO sharding
    (weights shard at stage 3, gradients at 2, optimizer state at 1), for dense parameters (``N = dp*cp``
    replicas) and expert parameters (``N = tp*cp*dp/(etp*ep)``): ``bytes / (1 + [zero >= stage] (N - 1))``."""

    weights_dense_L: Any
    grads_dense_L: Any
    optimizer_dense_L: Any
    weights_expert_L: Any | None
    grads_expert_L: Any | None
    optimizer_expert_L: Any | None
    state_dense_L: Any
    """Weights + gradients + optimizer bytes per dense parameter."""
    state_expert_L: Any | None
    weight_bytes: float
    """Bytes of one unsharded weight (BF16, + the FP8 copy in FP8 training)."""

    @classmethod
    def of(cls, lay: LayoutBatch, moe: bool, train: TrainSpec, xp: Any) -> StateBytesPerParam:
        wbytes = WEIGHT_BYTES + (FP8_WEIGHT_COPY_BYTES if train.precision == "fp8" else 0.0)
        per = ((wbytes, 3.0), (float(train.grad_reduce_bytes), 2.0), (OPTIMIZER_BYTES, 1.0))
        masks = [as_float(lay.zero_L >= stage, xp) for _, stage in per]

        def group(n_minus_1_L: Any) -> list[Any]:
            return [b / (1.0 + m * n_minus_1_L) for (b, _), m in zip(per, masks, strict=True)]

        wd, gd, od = group(lay.dp_L * lay.cp_L - 1.0)
        if not moe:
            return cls(wd, gd, od, None, None, None, wd + gd + od, None, wbytes)
        we, ge, oe = group(expert_replicas(lay) - 1.0)
        return cls(wd, gd, od, we, ge, oe, wd + gd + od, we + ge + oe, wbytes)

    def split(self, dense_L: Any, expert_L: Any) -> tuple[Any, Any, Any]:
        """Weights, gradients and optimizer bytes of ``dense_L`` dense and ``expert_L`` expert parameters."""
        out = []
        for d, e in ((self.weights_dense_L, self.weights_expert_L), (self.grads_dense_L, self.grads_expert_L),
                     (self.optimizer_dense_L, self.optimizer_expert_L)):
            out.append(dense_L * d if e is None else dense_L * d + expert_L * e)
        return out[0], out[1], out[2]

    def state_bytes(self, dense_L: Any, expert_L: Any) -> Any:
        """Weights + gradients + optimizer bytes."""
        if self.state_expert_L is None:
            return dense_L * self.state_dense_L
        return dense_L * self.state_dense_L + expert_L * self.state_expert_L
