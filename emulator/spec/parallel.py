"""Parallel layout of one job: how the model and the batch are split over the GPUs."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_positive

RECOMPUTE_MODES = ("none", "selective", "full")
"""Activation recomputation: none; selective (attention core, Korthikanti et al. 2022); full (whole layer)."""


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
    tp_comm_overlap: bool = True
    """Overlap TP collectives with the GEMMs that need them (Megatron-Core --tp-comm-overlap)."""
    dp_comm_overlap: bool = True
    """Overlap the gradient reduce and the parameter gather with backward/forward (--overlap-grad-reduce)."""
    pp_comm_overlap: bool = True
    """Overlap pipeline send/recv with compute (batched asynchronous P2P)."""
    ep_comm_overlap: bool = False
    """Overlap the MoE dispatch/combine of one micro-batch with another micro-batch's compute in the
    steady 1F1B phase (Megatron-Core --overlap-moe-expert-parallel-comm, with --delay-wgrad-compute).
    Off by default, as in Megatron-Core."""

    def __post_init__(self) -> None:
        p = "parallel"
        for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "micro_batch"):
            require_positive(getattr(self, key), f"{p}.{key}")
        require(self.zero in (0, 1, 2, 3), f"{p}.zero", self.zero, "must be one of 0, 1, 2, 3")
        require(self.recompute in RECOMPUTE_MODES, f"{p}.recompute", self.recompute,
                f"must be one of {', '.join(RECOMPUTE_MODES)}")
        require(self.vpp == 1 or self.pp > 1, f"{p}.vpp", self.vpp, "must be 1 when parallel.pp=1")
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
