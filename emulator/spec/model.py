"""Transformer architecture: dense or MoE, GQA or MLA attention (counts, no units)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_non_negative, require_positive


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer. Key names follow ``configs/model/*.yaml``."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    head_dim: int
    """Per-head query/key width (for MLA: the non-rotary part of the query/key head)."""
    ffn_hidden_size: int
    """Dense MLP width; in MoE layers the shared/residual MLP width (0: none)."""
    dense_ffn_hidden_size: int = 0
    """MLP width of the leading dense layers of an MoE model (0: ``ffn_hidden_size``)."""
    num_experts: int = 1
    experts_per_token: int = 1
    expert_ffn_hidden_size: int = 0
    num_dense_layers: int = 0
    vocab_size: int
    gated_mlp: bool = True
    tied_embeddings: bool = False
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0
    local_layers_fraction: float = 0.0
    mtp_layers: int = 0
    router_groups: int = 1
    """Expert groups of the router's group-limited routing (DeepSeek-V3 ``n_group``; 1: no groups)."""
    router_group_topk: int = 0
    """Groups a token may route into (DeepSeek-V3 ``topk_group``; 0: all of them). With experts laid out
    in order over the expert-parallel ranks and a group per node, this is node-limited routing."""
    qk_norm: bool = False
    """RMSNorm on every query and key head before rotary (Qwen3's ``q_norm``/``k_norm``, Megatron-Core
    ``qk_layernorm``): two more memory-bound kernels per layer, and their inputs kept for backward."""
    source: str = ""

    def __post_init__(self) -> None:
        p = "model"
        for key in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
                    "num_experts", "experts_per_token"):
            require_positive(getattr(self, key), f"{p}.{key}")
        for key in ("ffn_hidden_size", "dense_ffn_hidden_size", "expert_ffn_hidden_size", "num_dense_layers",
                    "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim", "sliding_window",
                    "mtp_layers", "router_group_topk"):
            require_non_negative(getattr(self, key), f"{p}.{key}")
        require(self.num_heads % self.num_kv_heads == 0, f"{p}.num_kv_heads", self.num_kv_heads,
                f"must divide model.num_heads={self.num_heads}")
        require(self.experts_per_token <= self.num_experts, f"{p}.experts_per_token", self.experts_per_token,
                f"must be <= model.num_experts={self.num_experts}")
        require_positive(self.router_groups, f"{p}.router_groups")
        require(self.num_experts % self.router_groups == 0, f"{p}.router_groups", self.router_groups,
                f"must divide model.num_experts={self.num_experts}")
        require(self.router_group_topk <= self.router_groups, f"{p}.router_group_topk", self.router_group_topk,
                f"must be <= model.router_groups={self.router_groups} (0: no limit)")
        require(self.experts_per_token <= self.routable_groups * (self.num_experts // self.router_groups),
                f"{p}.experts_per_token", self.experts_per_token,
                f"must be <= the experts of model.router_group_topk={self.router_group_topk} groups")
        require(0.0 <= self.local_layers_fraction <= 1.0, f"{p}.local_layers_fraction",
                self.local_layers_fraction, "must be in [0, 1]")
        if self.is_moe:
            require(self.expert_ffn_hidden_size > 0, f"{p}.expert_ffn_hidden_size", self.expert_ffn_hidden_size,
                    "must be > 0 when model.num_experts > 1")
            require(self.num_dense_layers < self.num_layers, f"{p}.num_dense_layers", self.num_dense_layers,
                    f"must be < model.num_layers={self.num_layers}")
        else:
            require(self.ffn_hidden_size > 0, f"{p}.ffn_hidden_size", self.ffn_hidden_size,
                    "must be > 0 for a dense model (num_experts=1)")

    # --- derived shapes ---
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def routable_groups(self) -> int:
        """Groups one token's experts may come from (all of them without group-limited routing)."""
        return self.router_group_topk or self.router_groups

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def dense_layer_ffn(self) -> int:
        """MLP width of a dense layer (all layers of a dense model, the leading ones of an MoE model)."""
        return self.dense_ffn_hidden_size or self.ffn_hidden_size

    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head as the attention core sees it."""
        return self.head_dim + self.qk_rope_head_dim

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per MLP: 3 for gated (SwiGLU/GeGLU), 2 for plain."""
        return 3 if self.gated_mlp else 2

    def attention_params(self) -> int:
        """Weights of one attention block (projections only, no norms).

        GQA: ``h*(heads*d) + 2*h*(kv_heads*d) + (heads*d)*h``.
        MLA (DeepSeek-V2/V3): q down ``h*q_lora`` + q up ``q_lora*heads*(d+d_rope)`` + kv down
        ``h*(kv_lora+d_rope)`` + kv up ``kv_lora*heads*(d+d_v)`` + out ``heads*d_v*h``
        (``q_lora=0`` means a direct query projection ``h*heads*(d+d_rope)``).
        """
        h, a = self.hidden_size, self.num_heads
        if self.is_mla:
            q = (h * self.q_lora_rank + self.q_lora_rank * a * self.qk_head_dim) if self.q_lora_rank \
                else h * a * self.qk_head_dim
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * a * (
                self.head_dim + self.value_head_dim)
            return q + kv + a * self.value_head_dim * h
        q_dim, kv_dim = a * self.head_dim, self.num_kv_heads * self.head_dim
        return h * q_dim + 2 * h * kv_dim + q_dim * h

    def mlp_params(self, ffn: int) -> int:
        return self.mlp_matrices * self.hidden_size * ffn

    def expert_params(self) -> int:
        """Weights of one routed expert."""
        return self.mlp_params(self.expert_ffn_hidden_size)

    def embedding_params(self) -> int:
        """Input embedding plus output layer (counted once when tied)."""
        table = self.vocab_size * self.hidden_size
        return table if self.tied_embeddings else 2 * table

    def layer_params(self, moe: bool) -> int:
        """Weights of one transformer layer (router included, norms ignored: 2h per layer)."""
        attn = self.attention_params()
        if not moe:
            return attn + self.mlp_params(self.dense_layer_ffn)
        router = self.hidden_size * self.num_experts
        return attn + self.mlp_params(self.ffn_hidden_size) + self.num_experts * self.expert_params() + router

    def total_params(self) -> int:
        dense = self.num_layers - self.num_moe_layers
        return (dense * self.layer_params(False) + self.num_moe_layers * self.layer_params(True)
                + self.embedding_params())

    def active_params(self) -> int:
        """Weights touched by one token: shared parts plus ``experts_per_token`` experts per MoE layer."""
        inactive = (self.num_experts - self.experts_per_token) * self.expert_params()
        return self.total_params() - self.num_moe_layers * inactive
