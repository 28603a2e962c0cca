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
    """``xp.where`` that accepts Python scalars for either branch.

    Two scalars (which the array API does not allow) become ``b + (a - b) * cond`` in one pass; one
    scalar is passed through (allowed), as a 0-d array of the other branch's dtype.
    """
    a_arr, b_arr = hasattr(a, "shape"), hasattr(b, "shape")
    if not a_arr and not b_arr:
        return as_float(cond, xp) * (float(a) - float(b)) + float(b)
    if not a_arr:
        a = xp.asarray(float(a), dtype=xp.float64)
    if not b_arr:
        b = xp.asarray(float(b), dtype=xp.float64)
    return xp.where(cond, a, b)
