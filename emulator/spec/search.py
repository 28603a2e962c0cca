"""What a layout search may vary and what it optimises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.spec.cluster import ClusterSpec
from emulator.spec.errors import require
from emulator.spec.model import ModelSpec
from emulator.spec.parallel import (
    DEFAULT_RECOMPUTE_MODULES,
    RECOMPUTE_MODES,
    RECOMPUTE_MODULES,
    recompute_module_mask,
)
from emulator.spec.power import PowerSpec
from emulator.spec.run import RunSpec
from emulator.spec.train import TrainSpec

OBJECTIVES = ("tokens_per_s", "tokens_per_s_per_watt", "time_to_train")


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """Each axis is the tuple of values the search may use (empty: every valid value)."""

    tp: tuple[int, ...] = ()
    pp: tuple[int, ...] = ()
    cp: tuple[int, ...] = ()
    ep: tuple[int, ...] = ()
    etp: tuple[int, ...] = ()
    """Expert tensor parallel sizes (MoE models; empty: every power of two in the NVLink domain)."""
    vpp: tuple[int, ...] = ()
    micro_batch: tuple[int, ...] = ()
    zero: tuple[int, ...] = ()
    recompute: tuple[str, ...] = ()
    recompute_modules: tuple[Any, ...] = DEFAULT_RECOMPUTE_MODULES
    """What the ``selective`` recompute value re-runs (``parallel.recompute_modules``): one list of modules, or a
    list of such lists to search over several (each a ``selective`` value of its own; :attr:`module_sets`)."""
    max_gpus: int = 0
    """GPU budget: the job size searched (0: the whole cluster)."""
    objective: str = "tokens_per_s"
    must_fit: bool = True
    """Rank only layouts that fit in HBM (the others are still written, with fits=false)."""
    ep_comm_overlap: bool = False
    """Cost with the MoE all-to-all overlap (``parallel.ep_comm_overlap``) on every layout Megatron-Core runs it
    for (ep > 1, vpp > 1 when pp > 1, no full recomputation, no ``moe`` module recomputed); the others without."""
    top: int = 10
    chunk: int = 50_000
    """Candidate layouts evaluated per array call: memory is bounded by this, not by the space."""

    @property
    def module_sets(self) -> tuple[tuple[str, ...], ...]:
        """The module lists the search's ``selective`` layouts take, one or several."""
        if all(isinstance(m, tuple) for m in self.recompute_modules):
            return self.recompute_modules
        return (self.recompute_modules,)

    def __post_init__(self) -> None:
        p = "search"
        for axis in ("tp", "pp", "cp", "ep", "etp", "vpp", "micro_batch"):
            for v in getattr(self, axis):
                require(isinstance(v, int) and v >= 1, f"{p}.{axis}", v, "values must be integers >= 1")
        for z in self.zero:
            require(z in (0, 1, 2, 3), f"{p}.zero", z, "values must be in 0-3")
        for r in self.recompute:
            require(r in RECOMPUTE_MODES, f"{p}.recompute", r, f"values must be in {', '.join(RECOMPUTE_MODES)}")
        key, names = f"{p}.recompute_modules", ", ".join(RECOMPUTE_MODULES)
        raw = self.recompute_modules
        require(isinstance(raw, (list, tuple)) and len(raw) > 0, key, raw,
                f"must be a non-empty list of modules from {names}, or a list of such lists")
        nested = [isinstance(m, (list, tuple)) for m in raw]
        require(all(nested) or not any(nested), key, list(raw),
                "must be a list of modules or a list of lists of modules, not a mix")
        sets = tuple(tuple(str(m) for m in one) for one in raw) if all(nested) else (tuple(str(m) for m in raw),)
        for one in sets:
            require(len(one) > 0, key, [], f"each list must name at least one module from {names}")
            for m in one:
                require(m in RECOMPUTE_MODULES, key, m, f"each entry must be one of {names}")
            require(len(set(one)) == len(one), key, list(one), "must not repeat an entry")
        masks = [recompute_module_mask(one) for one in sets]
        require(len(set(masks)) == len(masks), key, [list(one) for one in sets], "must not list the same set twice")
        object.__setattr__(self, "recompute_modules", sets if len(sets) > 1 else sets[0])
        require(self.max_gpus >= 0, f"{p}.max_gpus", self.max_gpus, "must be >= 0 (0: the whole cluster)")
        require(self.objective in OBJECTIVES, f"{p}.objective", self.objective,
                f"must be one of {', '.join(OBJECTIVES)}")
        require(isinstance(self.ep_comm_overlap, bool), f"{p}.ep_comm_overlap", self.ep_comm_overlap,
                "must be true or false")
        require(self.top >= 1, f"{p}.top", self.top, "must be >= 1")
        require(self.chunk >= 1000, f"{p}.chunk", self.chunk, "must be >= 1000")


@dataclass(frozen=True, kw_only=True)
class SearchJob:
    """A job without its layout: what a search ranks layouts for."""

    model: ModelSpec
    cluster: ClusterSpec
    train: TrainSpec
    run: RunSpec
    power: PowerSpec | None = None

    def check(self, search: SearchSpec) -> None:
        """Constraints that can never hold, said before the search runs."""
        require(search.objective != "time_to_train" or self.train.total_tokens > 0, "search.objective",
                search.objective, "needs train.total_tokens > 0 (the tokens of the whole run)")
        for tp in search.tp:
            require(self.model.num_heads % tp == 0, "search.tp", tp,
                    f"must divide model.num_heads={self.model.num_heads}")
        for ep in search.ep:
            require(self.model.num_experts % ep == 0, "search.ep", ep,
                    f"must divide model.num_experts={self.model.num_experts}")
        for etp in search.etp:
            require(self.model.is_moe, "search.etp", etp, "applies to an MoE model (model.num_experts > 1)")
            require(self.model.expert_ffn_hidden_size % etp == 0, "search.etp", etp,
                    f"must divide model.expert_ffn_hidden_size={self.model.expert_ffn_hidden_size}")
        for cp in search.cp:
            require(cp == 1 or self.train.seq_len % (2 * cp) == 0, "search.cp", cp,
                    f"must be 1 or divide train.seq_len={self.train.seq_len} / 2")
