"""Training settings: sequence, batch, precision and the kernels the stack uses."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_non_negative, require_positive

PRECISIONS = ("bf16", "fp8")
ATTENTION_KERNELS = ("flash", "flash2", "unfused")
MOE_DISPATCHERS = ("alltoall", "flex")
MOE_FP8_PADDINGS = ("auto", "copy", "fused")
CUDA_GRAPH_SCOPES = ("attn", "mlp", "moe_router", "moe_preprocess", "full_iteration")


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    seq_len: int
    global_batch: int
    """Sequences per optimizer step."""
    precision: str = "bf16"
    """GEMM precision: bf16, or fp8 (Transformer Engine style: GEMMs in FP8, attention core in BF16)."""
    total_tokens: float = 0.0
    """Tokens of the whole run, for time to train (0: not asked)."""
    dropout: float = 0.0
    """Hidden/attention dropout probability (GPT-3-era runs: 0.1; Llama-era: 0)."""
    attention_kernel: str = "flash"
    """flash: the stack's fused attention (cuDNN fused attention, FlashAttention-3 class kernels on Hopper);
    flash2: the FlashAttention-2 package (Transformer Engine with NVTE_FUSED_ATTN=0 in 2024 NeMo recipes);
    unfused: materialised softmax (Megatron 2021-2022)."""
    grad_reduce_bytes: int = 4
    """Bytes per gradient element in the data-parallel reduction (Megatron reduces fp32 main grads)."""
    memory_reserved_gb: float = 3.0
    """Per-GPU memory outside the model state and activations (CUDA context, NCCL and cuBLAS workspaces)."""
    fragmentation: float = 0.05
    """Allocator fragmentation allowance, as a fraction of activations and buffers."""
    cuda_graph_scope: tuple[str, ...] = ()
    """Parts of every layer replayed from CUDA graphs (Megatron-Core ``cuda_graph_scope``, captured by
    Transformer Engine): ``attn`` (the attention block), ``mlp`` (a dense layer's MLP block), ``moe_router``
    (pre-MLP norm and router), ``moe_preprocess`` (the dispatcher's token counting), or ``full_iteration``
    (the whole step: no host launch cost at all). A captured part costs the host one graph launch instead
    of one launch per kernel (:mod:`emulator.cost.host`). Empty: everything runs eagerly."""
    moe_host_sync: bool = True
    """Dropless MoE dispatch syncs host and device in every MoE layer (token counts per expert are
    needed on the host before the dispatch all-to-all: Megatron-Core's alltoall dispatcher, DeepEP
    high-throughput mode), so the host cannot run ahead of the GPU past that point
    (:mod:`emulator.cost.host`). False: token dropping with static sizes, or sync-free dispatch."""

    moe_dispatcher: str = "alltoall"
    """How routed tokens reach their experts. alltoall: every (token, expert) pair travels on its own
    (Megatron-Core's alltoall dispatcher). flex: a token crosses the scale-out network once per
    destination node and fans out over NVLink there (DeepEP / HybridEP behind Megatron-Core's flex
    dispatcher; DeepSeek-V3 report Sec 3.2.2), which with node-limited routing
    (``model.router_group_topk``) bounds the network copies per token."""

    moe_fp8_padding: str = "auto"
    """How FP8 expert GEMMs get row counts aligned to the FP8 tile (16 rows; 32 for MXFP8) under dropless
    routing. copy: Transformer Engine's ``Fp8Padding`` / ``Fp8Unpadding`` copy the expert input and output
    around the grouped GEMMs (Megatron-Core's all-to-all dispatcher; every dispatcher before Megatron-LM
    PR #4071, 2026-03-31 on the dev branch, on main with PR #4636 in May 2026). fused: the dispatcher pads
    inside its own permutation (HybridEP or DeepEP in current Megatron-Core, ``moe_router_padding_for_
    quantization``, or the fused permute-and-pad of Megatron-LM PR #2763). auto: copy with the alltoall
    dispatcher, fused with flex (today's Megatron-Core). :func:`emulator.cost.ops._fp8_padding`."""

    moe_load_imbalance: float = 1.0
    """Routed tokens on the busiest expert-parallel rank over the mean, ``f >= 1``. Expert parallelism is
    synchronous: the rank that receives the most (token, expert) pairs sets the pace of the expert
    GEMMs, their element-wise ops and the dispatch/combine all-to-all (whose time is set by the busiest
    receiver), so all of those scale by ``f``; the sender side (router, local permutation) does not.
    1.0: balanced, as forced load balancing (``moe_router_force_load_balancing``) or token dropping
    padded to capacity give. Dropless routing under an auxiliary load-balancing loss runs well above 1:
    Megatron-MoE-ModelZoo's Qwen3-235B-A22B on 256 H100 (EP8, 16 experts per rank, mock data) measures
    forced-balance against dropless throughput at four sequence lengths, and the cost model reproduces
    all four ratios with one ``f`` of 1.68-1.72 (``validation/moe_imbalance.yaml``, with the runs' recompute)."""

    moe_comm_sms: int = 20
    """SMs the expert-parallel dispatch/combine kernels hold while they run beside compute
    (``parallel.ep_comm_overlap``): Megatron-Core's ``moe_deepep_num_sms`` default, 20; DeepSeek-V3
    gives its all-to-all 20 of the H800's 132 SMs (report Sec 3.2.2)."""

    def __post_init__(self) -> None:
        p = "train"
        require_positive(self.seq_len, f"{p}.seq_len")
        require_positive(self.global_batch, f"{p}.global_batch")
        require(self.precision in PRECISIONS, f"{p}.precision", self.precision,
                f"must be one of {', '.join(PRECISIONS)}")
        require(self.attention_kernel in ATTENTION_KERNELS, f"{p}.attention_kernel", self.attention_kernel,
                f"must be one of {', '.join(ATTENTION_KERNELS)}")
        require_non_negative(self.total_tokens, f"{p}.total_tokens")
        require(0.0 <= self.dropout < 1.0, f"{p}.dropout", self.dropout, "must be in [0, 1)")
        require(self.grad_reduce_bytes in (2, 4), f"{p}.grad_reduce_bytes", self.grad_reduce_bytes,
                "must be 2 (bf16) or 4 (fp32)")
        require_non_negative(self.memory_reserved_gb, f"{p}.memory_reserved_gb")
        require(0.0 <= self.fragmentation < 1.0, f"{p}.fragmentation", self.fragmentation, "must be in [0, 1)")
        object.__setattr__(self, "cuda_graph_scope", tuple(str(x) for x in self.cuda_graph_scope))
        for scope in self.cuda_graph_scope:
            require(scope in CUDA_GRAPH_SCOPES, f"{p}.cuda_graph_scope", scope,
                    f"each entry must be one of {', '.join(CUDA_GRAPH_SCOPES)}")
        require_non_negative(self.moe_comm_sms, f"{p}.moe_comm_sms")
        require(self.moe_dispatcher in MOE_DISPATCHERS, f"{p}.moe_dispatcher", self.moe_dispatcher,
                f"must be one of {', '.join(MOE_DISPATCHERS)}")
        require(self.moe_fp8_padding in MOE_FP8_PADDINGS, f"{p}.moe_fp8_padding", self.moe_fp8_padding,
                f"must be one of {', '.join(MOE_FP8_PADDINGS)}")
        require(self.moe_load_imbalance >= 1.0, f"{p}.moe_load_imbalance", self.moe_load_imbalance,
                "must be >= 1 (the busiest rank's routed tokens over the mean)")

    @property
    def fp8_padding_copies(self) -> bool:
        """True where FP8 expert inputs and outputs are copied into and out of aligned buffers: FP8,
        dropless routing whose counts reach the host (``moe_host_sync``; token dropping padded to capacity
        gives equal, aligned counts), and no padding fused into the dispatcher (``moe_fp8_padding``)."""
        if self.precision != "fp8" or not self.moe_host_sync:
            return False
        if self.moe_fp8_padding == "auto":
            return self.moe_dispatcher == "alltoall"
        return self.moe_fp8_padding == "copy"
