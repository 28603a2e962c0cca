"""Small array helpers that keep the cost model within the standard array API.

array-api-strict (our stand-in for CuPy in tests) rejects ``where`` with two Python scalars and
arithmetic between boolean and float arrays; these helpers make both explicit.
"""

from __future__ import annotations

from typing import Any


def as_float(mask: Any, xp: Any) -> Any:
    """A boolean array as 0.0 / 1.0 (float64)."""
    return xp.astype(mask, xp.float64)


def where(cond: Any, a: Any, b: Any, xp: Any) -> Any:
    """``xp.where`` that accepts Python scalars for either branch."""
    if not hasattr(a, "shape"):
        a = xp.full(cond.shape, float(a), dtype=xp.float64)
    if not hasattr(b, "shape"):
        b = xp.full(cond.shape, float(b), dtype=xp.float64)
    return xp.where(cond, a, b)
