"""A batch of parallel layouts as arrays (suffix ``_L``: one entry per layout).

Every field is a float64 array so that arithmetic never mixes integer and float arrays (which
array-api-strict, our stand-in for CuPy, rejects). Booleans are 0.0 / 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from emulator.cost.arrays import as_float
from emulator.spec.parallel import DEFAULT_RECOMPUTE_MODULES, RECOMPUTE_MODULES, ParallelSpec, recompute_module_mask


@dataclass(frozen=True)
class LayoutBatch:
    tp_L: Any
    pp_L: Any
    dp_L: Any
    cp_L: Any
    ep_L: Any
    etp_L: Any
    """GPUs that split each expert (expert tensor parallelism; ``tp`` unless set)."""
    vpp_L: Any
    mb_L: Any
    zero_L: Any
    sp_L: Any
    """1.0 where sequence parallelism is on (only meaningful with tp > 1)."""
    recompute_L: Any
    """0 none, 1 selective, 2 full."""
    recompute_modules_L: Any
    """The modules selective recompute re-runs, as bits (:func:`emulator.spec.parallel.recompute_module_mask`)."""
    tp_overlap_L: Any
    dp_overlap_L: Any
    pp_overlap_L: Any
    ep_overlap_L: Any
    """1.0 where the MoE all-to-all overlaps another micro-batch's compute (``ep_comm_overlap``)."""

    @classmethod
    def from_specs(cls, specs: Sequence[ParallelSpec], xp: Any) -> LayoutBatch:
        def col(values: Sequence[float]) -> Any:
            return xp.asarray([float(v) for v in values], dtype=xp.float64)

        return cls(
            tp_L=col([s.tp for s in specs]),
            pp_L=col([s.pp for s in specs]),
            dp_L=col([s.dp for s in specs]),
            cp_L=col([s.cp for s in specs]),
            ep_L=col([s.ep for s in specs]),
            etp_L=col([s.expert_tp for s in specs]),
            vpp_L=col([s.vpp for s in specs]),
            mb_L=col([s.micro_batch for s in specs]),
            zero_L=col([s.zero for s in specs]),
            sp_L=col([1.0 if (s.sequence_parallel and s.tp > 1) else 0.0 for s in specs]),
            recompute_L=col([s.recompute_code for s in specs]),
            recompute_modules_L=col([s.recompute_module_mask for s in specs]),
            tp_overlap_L=col([s.tp_comm_overlap for s in specs]),
            dp_overlap_L=col([s.dp_comm_overlap for s in specs]),
            pp_overlap_L=col([s.pp_comm_overlap for s in specs]),
            ep_overlap_L=col([s.ep_comm_overlap for s in specs]),
        )

    @classmethod
    def from_columns(cls, xp: Any, **columns: Any) -> LayoutBatch:
        """Build from arrays (search): missing columns take the :class:`ParallelSpec` defaults (``etp_L``:
        the ``tp_L`` column)."""
        n = None
        for value in columns.values():
            n = value.shape[0]
            break
        assert n is not None, "at least one column is required"
        default = ParallelSpec()
        defaults = {
            "tp_L": default.tp, "pp_L": default.pp, "dp_L": default.dp, "cp_L": default.cp,
            "ep_L": default.ep, "vpp_L": default.vpp, "mb_L": default.micro_batch, "zero_L": default.zero,
            "sp_L": 1.0, "recompute_L": 0.0,
            "recompute_modules_L": float(recompute_module_mask(DEFAULT_RECOMPUTE_MODULES)),
            "tp_overlap_L": 1.0, "dp_overlap_L": 1.0, "pp_overlap_L": 1.0,
            "ep_overlap_L": 0.0,
        }
        values = {}
        for f in fields(cls):
            if f.name in columns:
                values[f.name] = xp.astype(xp.asarray(columns[f.name]), xp.float64, copy=False)
            elif f.name == "etp_L":
                continue
            else:
                values[f.name] = xp.full((n,), float(defaults[f.name]), dtype=xp.float64)
        values.setdefault("etp_L", values["tp_L"])
        return cls(**values)

    def recomputes(self, module: str, xp: Any) -> Any:
        """1.0 where selective recomputation re-runs ``module`` (one of
        :data:`emulator.spec.parallel.RECOMPUTE_MODULES`), else 0.0."""
        cache = self.__dict__.setdefault("_recompute_flags", {})  # the batch is immutable: compute each once
        if module not in cache:
            bit = float(1 << RECOMPUTE_MODULES.index(module))
            on_L = xp.remainder(xp.floor(self.recompute_modules_L / bit), 2.0) == 1.0
            cache[module] = as_float(on_L & (self.recompute_L == 1.0), xp)
        return cache[module]

    @property
    def size(self) -> int:
        return int(self.tp_L.shape[0])
