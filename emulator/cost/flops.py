"""Model FLOPs per token: the MFU numerator of the contract (Megatron-LM's convention).

Per token, forward + backward = 3 x forward, forward = 2 FLOPs per multiply-accumulate:

    6 * (active non-embedding matmul parameters) + 6 * h * V (logit layer)
      + 6 * L * s * a * (d_qk + d_v) (attention scores and values, no causal halving)

With ``d_qk = d_v = d`` the attention term is the contract's ``12 * L * s * a * d``. Recompute is
not counted (that is HFU). Norm weights are not matmuls and are left out.
"""

from __future__ import annotations

from emulator.spec.model import ModelSpec


def matmul_params_per_token(model: ModelSpec) -> float:
    """Active parameters a token meets in matmuls, the output layer excluded."""
    return float(model.active_params() - model.embedding_params())


def model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    h, V, L, a = model.hidden_size, model.vocab_size, model.num_layers, model.num_heads
    attention = 6.0 * L * seq_len * a * (model.qk_head_dim + model.value_head_dim)
    return 6.0 * matmul_params_per_token(model) + 6.0 * h * V + attention


def recompute_flops_per_token(model: ModelSpec, seq_len: int, recompute: str) -> float:
    """FLOPs per token that activation recomputation adds, in the same convention as above.

    full: the forward pass of every layer again, ``(model_flops - 6 h V) / 3``;
    selective: the attention core's forward again, ``2 * L * s * a * (d_qk + d_v)``
    (Korthikanti et al. 2022, eq. 8); none: 0.
    """
    if recompute == "full":
        return (model_flops_per_token(model, seq_len) - 6.0 * model.hidden_size * model.vocab_size) / 3.0
    if recompute == "selective":
        return 2.0 * model.num_layers * seq_len * model.num_heads * (model.qk_head_dim + model.value_head_dim)
    return 0.0
