"""Model FLOPs per token: the MFU numerator of the contract (Megatron-LM's convention).

Per token, forward + backward = 3 x forward, forward = 2 FLOPs per multiply-accumulate:

    6 * (active non-embedding matmul parameters) + 6 * h * V (logit layer)
      + 6 * L * s * a * (d_qk + d_v) (attention scores and values, no causal halving)

With ``d_qk = d_v = d`` the attention term is the contract's ``12 * L * s * a * d``. Recompute is
not counted (that is HFU). Norm weights are not matmuls and are left out.
"""

from __future__ import annotations

from emulator.spec.model import ModelSpec
from emulator.spec.parallel import DEFAULT_RECOMPUTE_MODULES


def matmul_params_per_token(model: ModelSpec) -> float:
    """Active parameters a token meets in matmuls, the output layer excluded."""
    return float(model.active_params() - model.embedding_params())


def model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    h, V, L, a = model.hidden_size, model.vocab_size, model.num_layers, model.num_heads
    attention = 6.0 * L * seq_len * a * (model.qk_head_dim + model.value_head_dim)
    return 6.0 * matmul_params_per_token(model) + 6.0 * h * V + attention


def recompute_flops_per_token(model: ModelSpec, seq_len: int, recompute: str,
                              modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES) -> float:
    """FLOPs per token that activation recomputation adds, in the same convention as above.

    full: the forward pass of every layer again, ``(model_flops - 6 h V) / 3``; none: 0;
    selective: the forward matmuls of the ``modules`` (``parallel.recompute_modules``) again, ``2`` FLOPs per
    weight a token meets in them:

    - ``core_attn``: ``2 * L * s * a * (d_qk + d_v)`` (Korthikanti et al. 2022, eq. 8);
    - ``mla_up_proj``: ``2 * L * (q_lora a d_qk + kv_lora a (d + d_v))``;
    - ``mlp``: ``2 * L_dense * mlp_params(f_dense)`` (every layer of a dense model);
    - ``shared_experts``: ``2 * L_moe * mlp_params(f_shared)``;
    - ``moe``: ``2 * L_moe * (k * expert_params + h E + mlp_params(f_shared))`` (it contains the shared MLP);
    - ``layernorm``, ``moe_act``: element-wise, no matmul FLOPs.
    """
    if recompute == "full":
        return (model_flops_per_token(model, seq_len) - 6.0 * model.hidden_size * model.vocab_size) / 3.0
    if recompute != "selective":
        return 0.0
    per_module = recompute_flops_by_module(model, seq_len)
    if "moe" in modules:
        modules = tuple(m for m in modules if m != "shared_experts")
    return float(sum(per_module.get(m, 0.0) for m in modules))


def recompute_flops_by_module(model: ModelSpec, seq_len: int) -> dict[str, float]:
    """Per-token FLOPs each selective recompute module adds (:func:`recompute_flops_per_token`); ``moe`` includes the
    shared experts."""
    a = model.num_heads
    L_dense = model.num_layers - model.num_moe_layers
    L_moe = model.num_moe_layers
    shared = model.mlp_params(model.ffn_hidden_size) if model.is_moe and model.ffn_hidden_size else 0
    return {
        "core_attn": 2.0 * model.num_layers * seq_len * a * (model.qk_head_dim + model.value_head_dim),
        "mla_up_proj": 2.0 * model.num_layers * (model.q_lora_rank * a * model.qk_head_dim + model.kv_lora_rank * a
                                                 * (model.head_dim + model.value_head_dim)) if model.is_mla else 0.0,
        "mlp": 2.0 * L_dense * model.mlp_params(model.dense_layer_ffn),
        "shared_experts": 2.0 * L_moe * shared,
        "moe": 2.0 * L_moe * (model.experts_per_token * model.expert_params() + model.hidden_size * model.num_experts
                              + shared),
        "layernorm": 0.0,
        "moe_act": 0.0,
    }
