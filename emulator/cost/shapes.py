"""Distinct stage shapes of a layout batch, to evaluate shape-only quantities once per shape.

Per-layer times, embedding/output times, per-layer activation bytes, the layer counts of each
pipeline stage and so which stage is the heaviest per micro-batch depend only on the fields of
:data:`SHAPE_FIELDS` (tp, cp, ep, etp, micro-batch, pp, sequence parallelism, recompute and its
modules, TP overlap), not on dp, vpp, zero or the DP/PP overlap switches. A search chunk has thousands of
layouts but a few hundred shapes: evaluating a quantity on one representative per shape and
gathering it back is exact (the same arithmetic on the same inputs) and much cheaper.

The shape key is a mixed-radix integer built in float64 (radix = the largest value of each field + 1;
every field is integer-valued and non-negative, checked through the key; exact below 2^53);
``unique_inverse`` of the key gives each layout's shape, and the representatives are decoded from
the unique keys in int64. Their other fields are NaN, so a shape-level
computation that reads a field outside the key shows up as NaN instead of a silently wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from emulator.cost.layout import LayoutBatch

SHAPE_FIELDS = ("tp_L", "cp_L", "ep_L", "etp_L", "mb_L", "pp_L", "sp_L", "recompute_L", "recompute_modules_L",
                "tp_overlap_L")
"""The fields a stage's per-micro-batch cost depends on."""
MIN_BATCH = 64
"""Below this many layouts, dedupe costs more than it saves."""
MAX_KEY = 2**53
"""The mixed-radix key is built in float64: it must stay an exact integer there."""


@dataclass(frozen=True)
class LayerShapes:
    """A small batch of one representative per shape, and every layout's shape index (``small is None``:
    no gain, evaluate on the batch itself)."""

    small: LayoutBatch | None
    inverse: Any

    @classmethod
    def of(cls, lay: LayoutBatch, xp: Any) -> LayerShapes:
        if lay.size <= MIN_BATCH:
            return cls(None, None)
        cols = [getattr(lay, name) for name in SHAPE_FIELDS]
        radix = [int(xp.max(c)) + 1 for c in cols]
        if math.prod(radix) >= MAX_KEY or min(float(xp.min(c)) for c in cols) < 0.0:
            return cls(None, None)
        key = cols[0]
        for c, r in zip(cols[1:], radix[1:], strict=True):
            key = key * float(r) + c
        if not bool(xp.all(xp.floor(key) == key)):  # a non-integer field: no exact key
            return cls(None, None)
        uniq = xp.unique_inverse(key)
        n = int(uniq.values.shape[0])
        if n * 4 > lay.size:
            return cls(None, None)
        rest, decoded = xp.astype(uniq.values, xp.int64), {}
        for name, r in zip(SHAPE_FIELDS[::-1], radix[::-1], strict=True):
            decoded[name] = xp.astype(rest % r, xp.float64)
            rest = rest // r
        nan = xp.full((n,), math.nan, dtype=xp.float64)
        small = LayoutBatch(**{f.name: decoded.get(f.name, nan) for f in fields(LayoutBatch)})
        return cls(small, xp.reshape(uniq.inverse_indices, (-1,)))

    def apply(self, fn: Callable[[LayoutBatch], Any], lay: LayoutBatch, xp: Any) -> Any:
        """``fn(lay)`` for an array or a dataclass of arrays, evaluated once per shape."""
        if self.small is None:
            return fn(lay)
        value = fn(self.small)
        if is_dataclass(value) and not isinstance(value, type):
            return type(value)(**{f.name: self._gather(getattr(value, f.name), xp) for f in fields(value)})
        return self._gather(value, xp)

    def _gather(self, value: Any, xp: Any) -> Any:
        if isinstance(value, tuple):
            return ()
        if not hasattr(value, "shape"):
            return value
        return xp.take(value, self.inverse)
