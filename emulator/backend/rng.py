"""Counter-based random numbers: the same (seed, stream, counter) gives the same draw everywhere.

A draw is a hash of its coordinates, so results do not depend on the backend, on how steps are
batched or on the order of evaluation. The hash is SplitMix64's finaliser (Steele, Lea & Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014) applied to
``key(seed, stream) + counter * golden``, where the key itself is a hash of seed and stream, using
only uint64 array multiply, xor and shift, which wrap identically in NumPy, array-api-strict and CuPy.

Suffix legend: ``_N`` one entry per draw.
"""

from __future__ import annotations

import math
from typing import Any

GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
STREAM_MUL = 0xD1342543DE82EF95
TWO_POW_52 = 4503599627370496.0


def _u64(xp: Any, value: int) -> Any:
    return xp.asarray(value % (1 << 64), dtype=xp.uint64)


def mix64(value: int) -> int:
    """SplitMix64's finaliser on one Python integer (mod 2^64)."""
    z = value % (1 << 64)
    z = ((z ^ (z >> 30)) * M1) % (1 << 64)
    z = ((z ^ (z >> 27)) * M2) % (1 << 64)
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    """A 64-bit key per (seed, stream), hashed so that neighbouring seeds or streams are unrelated
    (adding seed and counter directly would make seed s+1 the draws of seed s shifted by one)."""
    return mix64(mix64(seed + GOLDEN) ^ mix64(stream * STREAM_MUL + M1))


def hash_u64(xp: Any, seed: int, stream: int, counter_N: Any) -> Any:
    """SplitMix64 finaliser of (key(seed, stream) + counter x golden); ``counter_N`` is a uint64 array."""
    z = counter_N * _u64(xp, GOLDEN)
    z += _u64(xp, stream_key(seed, stream))
    z ^= z >> _u64(xp, 30)
    z *= _u64(xp, M1)
    z ^= z >> _u64(xp, 27)
    z *= _u64(xp, M2)
    z ^= z >> _u64(xp, 31)
    return z


def uniform(xp: Any, seed: int, stream: int, counter_N: Any) -> Any:
    """Uniform draws in the open interval (0, 1), float64, from the top 52 bits of the hash:
    ``(k + 0.5) / 2^52`` lies in [2^-53, 1 - 2^-53], both exactly representable (53 bits would let
    the largest value round up to 1.0)."""
    bits = hash_u64(xp, seed, stream, counter_N) >> _u64(xp, 12)
    return (xp.astype(bits, xp.float64) + 0.5) / TWO_POW_52


def normal(xp: Any, seed: int, stream: int, counter_N: Any) -> Any:
    """Standard normal draws by the inverse CDF of one uniform each (see :func:`norm_ppf`)."""
    return norm_ppf(xp, uniform(xp, seed, stream, counter_N))


def exponential(xp: Any, seed: int, stream: int, counter_N: Any) -> Any:
    """Exponential(1) draws: ``-log(u)``."""
    return -xp.log(uniform(xp, seed, stream, counter_N))


# Acklam's rational approximation of the normal quantile (relative error < 1.15e-9 over (0, 1)).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def _poly(coeffs: tuple[float, ...], x: Any) -> Any:
    acc = x * 0.0 + coeffs[0]
    for c in coeffs[1:]:
        acc = acc * x + c
    return acc


def norm_ppf(xp: Any, u: Any) -> Any:
    """Inverse standard normal CDF of ``u`` in (0, 1) (P. J. Acklam's algorithm, 2003)."""
    q = u - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1.0)
    lo_u = xp.minimum(u, 1.0 - u)
    t = xp.sqrt(-2.0 * xp.log(lo_u))
    tail = _poly(_C, t) / (_poly(_D, t) * t + 1.0)
    tail = xp.where(u < 0.5, tail, -tail)
    return xp.where(lo_u < _P_LOW, tail, central)


def gumbel(xp: Any, seed: int, stream: int, counter_N: Any) -> Any:
    """Standard Gumbel (max-type) draws: ``-log(-log(u))``; mean Euler's gamma, sd ``pi / sqrt(6)``."""
    return -xp.log(-xp.log(uniform(xp, seed, stream, counter_N)))


def max_of_gumbels(xp: Any, seed: int, stream: int, counter_N: Any, n: Any) -> Any:
    """The maximum of ``n`` iid standard Gumbel draws, exactly: Gumbel is max-stable, so the maximum
    is a standard Gumbel shifted by ``log(n)``. One draw stands for ``n`` (``n`` may be an array)."""
    shift = math.log(n) if isinstance(n, (int, float)) else xp.log(n)
    return gumbel(xp, seed, stream, counter_N) + shift


def max_of_normals(xp: Any, seed: int, stream: int, counter_N: Any, n: int) -> Any:
    """The maximum of ``n`` iid standard normals, drawn exactly from its distribution.

    ``P(max <= x) = Phi(x)^n``, so ``max = Phi^{-1}(U^{1/n})`` for one uniform ``U``: one draw
    stands for ``n`` (order-statistic shortcut; a test compares it with the brute force).
    """
    u = uniform(xp, seed, stream, counter_N)
    return norm_ppf(xp, u ** (1.0 / float(n)))
