"""Parallel layout of one job: how the model and the batch are split over the GPUs."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_positive

RECOMPUTE_MODES = ("none", "selective", "full")
"""Activation recomputation: none; selective (attention core, Korthikanti et al. 2022); full (whole layer)."""


@dataclass(frozen=True, kw_only=True)
class ParallelSpec:
    """Megatron-Core style layout. The GPU count is ``tp * pp * cp * dp``; ``ep`` is carved out of ``dp * cp``."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
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

    def __post_init__(self) -> None:
        p = "parallel"
        for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "micro_batch"):
            require_positive(getattr(self, key), f"{p}.{key}")
        require(self.zero in (0, 1, 2, 3), f"{p}.zero", self.zero, "must be one of 0, 1, 2, 3")
        require(self.recompute in RECOMPUTE_MODES, f"{p}.recompute", self.recompute,
                f"must be one of {', '.join(RECOMPUTE_MODES)}")
        require(self.vpp == 1 or self.pp > 1, f"{p}.vpp", self.vpp, "must be 1 when parallel.pp=1")
        require((self.dp * self.cp) % self.ep == 0, f"{p}.ep", self.ep,
                f"must divide parallel.dp x parallel.cp = {self.dp * self.cp}")

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def recompute_code(self) -> int:
        return RECOMPUTE_MODES.index(self.recompute)
