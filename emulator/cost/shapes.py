"""Distinct layer shapes of a layout batch, to evaluate shape-only quantities once per shape.

Per-layer times, embedding/output times and per-layer activation bytes depend only on the fields of
:data:`LAYER_KEY_RADIX` (tp, cp, ep, micro-batch, sequence parallelism, recompute, TP overlap), not on
pp, dp, vpp or zero. A search chunk has thousands of layouts but a few dozen shapes: evaluating a
quantity on one representative per shape and gathering it back is exact (the same arithmetic on the
same inputs) and much cheaper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from emulator.cost.layout import LayoutBatch

LAYER_KEY_RADIX = (("tp_L", 1024.0), ("cp_L", 1024.0), ("ep_L", 1024.0), ("mb_L", 1024.0), ("sp_L", 2.0),
                   ("recompute_L", 4.0), ("tp_overlap_L", 2.0))
"""The fields a layer's cost depends on and the radix of each in the combined key: 1024^4 * 16 < 2^53,
so the key is exact in float64."""


@dataclass(frozen=True)
class LayerShapes:
    """A small batch of one representative per shape, and every layout's shape index (``small is None``:
    no gain, evaluate on the batch itself)."""

    small: LayoutBatch | None
    inverse: Any

    @classmethod
    def of(cls, lay: LayoutBatch, xp: Any) -> LayerShapes:
        if lay.size <= 64 or any(float(xp.max(getattr(lay, name))) >= radix for name, radix in LAYER_KEY_RADIX):
            return cls(None, None)
        key = xp.zeros_like(lay.tp_L)
        for name, radix in LAYER_KEY_RADIX:
            key = key * radix + getattr(lay, name)
        uniq = xp.unique_all(key)
        if uniq.values.shape[0] * 4 > lay.size:
            return cls(None, None)
        small = LayoutBatch(**{f.name: xp.take(getattr(lay, f.name), uniq.indices) for f in fields(LayoutBatch)})
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
        return xp.take(value, self.inverse)
