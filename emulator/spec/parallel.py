"""Parallel layout of one job: how the model and the batch are split over the GPUs."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_positive

RECOMPUTE_MODES = ("none", "selective", "full")
"""Activation recomputation: none; selective (the modules of ``parallel.recompute_modules``; by default the
attention core, Korthikanti et al. 2022); full (whole layer)."""
RECOMPUTE_MODULES = ("core_attn", "layernorm", "mla_up_proj", "mlp", "moe", "moe_act", "shared_experts")
"""The parts of a layer selective recomputation can re-run (Megatron-LM ``--recompute-modules``, whose choices and
default ``core_attn`` these are): the attention core; the norms that are modules of their own (an MoE layer's
pre-MLP norm, MLA's input norm; a norm fused into the next GEMM is not); MLA's up-projections; a dense layer's MLP;
the whole MoE block (router, dispatch and combine, experts, shared experts); the experts' activation; the
shared experts."""
DEFAULT_RECOMPUTE_MODULES = ("core_attn",)


@dataclass(frozen=True, kw_only=True)
class ParallelSpec:
    """Megatron-Core style layout. The GPU count is ``tp * pp * cp * dp``; the expert grid ``etp * ep`` is
    carved out of ``tp * cp * dp`` (with the default ``etp = tp``: ``ep`` out of ``dp * cp``)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    etp: int = 0
    """Expert tensor parallelism: how many GPUs split each expert (0: ``tp``, the Megatron-Core default).
    With MoE parallel folding (Megatron-Core >= 0.10, ``--expert-tensor-parallel-size``) the expert
    layers have their own grid ``etp x ep x edp`` over the ``tp x cp x dp`` GPUs of a pipeline stage,
    ranks ordered etp fastest, then ep: with ``etp=1`` an expert-parallel group of 8 is one node."""
    vpp: int = 1
    """Virtual pipeline stages (model chunks) per pipeline rank: interleaved 1F1B when > 1."""
    micro_batch: int = 1
    zero: int = 1
    """0: DDP all-reduce; 1: optimizer state sharded (Megatron distributed optimizer);
    2: + gradients sharded; 3: + parameters sharded (FSDP)."""
    sequence_parallel: bool = True
    recompute: str = "none"
    recompute_modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES
    """What ``recompute="selective"`` re-runs in backward (:data:`RECOMPUTE_MODULES`)."""
    tp_comm_overlap: bool = True
    """Overlap TP collectives with the GEMMs that need them (Megatron-Core --tp-comm-overlap)."""
    dp_comm_overlap: bool = True
    """Overlap the gradient reduce and the parameter gather with backward/forward (--overlap-grad-reduce)."""
    pp_comm_overlap: bool = True
    """Overlap pipeline send/recv with compute (batched asynchronous P2P)."""
    ep_comm_overlap: bool = False
    """Overlap the MoE dispatch/combine of one micro-batch with another micro-batch's compute in the
    steady 1F1B phase (Megatron-Core --overlap-moe-expert-parallel-comm, with --delay-wgrad-compute).
    Off by default, as in Megatron-Core. Only where Megatron-Core runs it (:func:`ep_overlap_blocker`)."""

    def __post_init__(self) -> None:
        p = "parallel"
        for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "micro_batch"):
            require_positive(getattr(self, key), f"{p}.{key}")
        require(self.zero in (0, 1, 2, 3), f"{p}.zero", self.zero, "must be one of 0, 1, 2, 3")
        require(self.recompute in RECOMPUTE_MODES, f"{p}.recompute", self.recompute,
                f"must be one of {', '.join(RECOMPUTE_MODES)}")
        require(isinstance(self.recompute_modules, (list, tuple)), f"{p}.recompute_modules", self.recompute_modules,
                f"must be a list of modules from {', '.join(RECOMPUTE_MODULES)}")
        object.__setattr__(self, "recompute_modules", tuple(str(m) for m in self.recompute_modules))
        for module in self.recompute_modules:
            require(module in RECOMPUTE_MODULES, f"{p}.recompute_modules", module,
                    f"each entry must be one of {', '.join(RECOMPUTE_MODULES)}")
        require(len(set(self.recompute_modules)) == len(self.recompute_modules), f"{p}.recompute_modules",
                list(self.recompute_modules), "must not repeat an entry")
        require(self.recompute == "selective" or self.recompute_modules == DEFAULT_RECOMPUTE_MODULES,
                f"{p}.recompute_modules", list(self.recompute_modules),
                f"only applies with parallel.recompute=selective (here {self.recompute})")
        require(self.recompute != "selective" or len(self.recompute_modules) > 0, f"{p}.recompute_modules", [],
                "must name at least one module with parallel.recompute=selective (or use parallel.recompute=none)")
        require(self.vpp == 1 or self.pp > 1, f"{p}.vpp", self.vpp, "must be 1 when parallel.pp=1")
        if self.ep_comm_overlap:
            why = ep_overlap_blocker(self.ep, self.pp, self.vpp, self.recompute, self.recompute_modules)
            require(not why, f"{p}.ep_comm_overlap", "true", why)
        require(self.etp >= 0, f"{p}.etp", self.etp, "must be >= 0 (0: the same as parallel.tp)")
        if self.etp in (0, self.tp):
            require((self.dp * self.cp) % self.ep == 0, f"{p}.ep", self.ep,
                    f"must divide parallel.dp x parallel.cp = {self.dp * self.cp}")
        else:
            stage = self.tp * self.cp * self.dp
            require(stage % (self.ep * self.etp) == 0, f"{p}.etp", self.etp,
                    f"parallel.ep x parallel.etp = {self.ep * self.etp} must divide parallel.tp x parallel.cp x "
                    f"parallel.dp = {stage}")

    @property
    def expert_tp(self) -> int:
        """GPUs that split each expert (``etp``, or ``tp`` when ``etp`` is 0)."""
        return self.etp or self.tp

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def recompute_code(self) -> int:
        return RECOMPUTE_MODES.index(self.recompute)

    @property
    def recompute_label(self) -> str:
        """``none``, ``full`` or ``selective(module,...)``: the recompute setting as one word for reports."""
        return f"selective({','.join(self.recompute_modules)})" if self.recompute == "selective" else self.recompute

    @property
    def recompute_module_mask(self) -> int:
        """The selective recompute modules as bits (bit ``i``: ``RECOMPUTE_MODULES[i]``)."""
        return recompute_module_mask(self.recompute_modules)


def recompute_module_mask(modules: tuple[str, ...] | list[str]) -> int:
    """Bit ``i`` set for each ``RECOMPUTE_MODULES[i]`` in ``modules``."""
    return sum(1 << RECOMPUTE_MODULES.index(m) for m in set(modules))


def ep_overlap_blocker(ep: int, pp: int, vpp: int, recompute: str, modules: tuple[str, ...]) -> str:
    """Why Megatron-Core refuses ``--overlap-moe-expert-parallel-comm`` for this layout ("" where it runs it).

    Its ``TransformerConfig.__post_init__`` asserts, under ``overlap_moe_expert_parallel_comm``: expert
    parallelism (``expert_model_parallel_size > 1``); a virtual pipeline size when ``pipeline_model_parallel_size
    > 1`` (the merged forward/backward schedule lives in the interleaved 1F1B); ``recompute_granularity !=
    'full'``; and ``"moe" not in recompute_modules`` (re-running a layer or an MoE block re-runs its dispatch,
    which the schedule cannot pair)."""
    if ep <= 1:
        return "needs parallel.ep > 1 (it hides the expert-parallel all-to-all; Megatron-Core asserts ep > 1)"
    if pp > 1 and vpp <= 1:
        return (f"needs parallel.vpp > 1 with parallel.pp={pp} (Megatron-Core runs the merged schedule only in "
                "the interleaved 1F1B)")
    if recompute == "full":
        return "cannot be combined with parallel.recompute=full (Megatron-Core asserts it)"
    if recompute == "selective" and "moe" in modules:
        return "cannot be combined with moe in parallel.recompute_modules (Megatron-Core asserts it)"
    return ""
