"""The counter-based RNG: range, backend independence, distributions, and the one-draw maxima."""

from __future__ import annotations

import math
import statistics

import array_api_strict as xs
import numpy as np
import pytest

from emulator.backend import rng

SEED, STREAM = 12345, 7
N_KS = 200_000
KS_MAX = 0.0085
"""Two-sample KS threshold for 2e5 vs 2e5 samples: sqrt(-ln(1e-6 / 2) / 2) * sqrt(2 / 2e5), i.e. a
false alarm probability of 1e-6 for draws from the same distribution (the draws are fixed anyway)."""
EULER_GAMMA = 0.5772156649015329


def counters(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.uint64)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|, by hand."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def strict(values: np.ndarray) -> object:
    return xs.asarray(values)


# --- range and reproducibility -------------------------------------------------------------------

def test_uniform_is_in_the_open_unit_interval() -> None:
    u = rng.uniform(np, SEED, STREAM, counters(1_000_000))
    assert u.dtype == np.float64
    assert np.all(u > 0.0)
    assert np.all(u < 1.0)
    assert abs(float(u.mean()) - 0.5) < 2e-3
    assert abs(float(u.var()) - 1.0 / 12.0) < 1e-3


def test_uniform_extremes_of_the_hash_stay_inside_the_open_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest hash maps to 2^-53 > 0 (no log(0) downstream)."""
    monkeypatch.setattr(rng, "hash_u64", lambda xp, seed, stream, c: xp.zeros(c.shape, dtype=xp.uint64))
    u = rng.uniform(np, 0, 0, counters(1))
    assert float(u[0]) == 2.0**-53
    assert np.isfinite(rng.gumbel(np, 0, 0, counters(1))).all()
    assert np.isfinite(rng.normal(np, 0, 0, counters(1))).all()


def test_uniform_largest_hash_is_below_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rng, "hash_u64", lambda xp, seed, stream, c: xp.full(c.shape, 2**64 - 1, dtype=xp.uint64))
    u = rng.uniform(np, 0, 0, counters(1))
    assert float(u[0]) < 1.0
    assert np.isfinite(rng.gumbel(np, 0, 0, counters(1))).all()


def test_same_coordinates_same_draws_and_order_independence() -> None:
    c = counters(10_000, start=2**40)
    a = rng.uniform(np, SEED, STREAM, c)
    b = rng.uniform(np, SEED, STREAM, c[::-1])[::-1]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[5000:], rng.uniform(np, SEED, STREAM, c[5000:]))
    grid = rng.uniform(np, SEED, STREAM, c.reshape(100, 100))
    np.testing.assert_array_equal(grid.ravel(), a)


@pytest.mark.parametrize("name", ["uniform", "normal", "exponential", "gumbel"])
def test_numpy_and_array_api_strict_give_identical_draws(name: str) -> None:
    c = counters(50_000, start=3)
    fn = getattr(rng, name)
    ref = fn(np, SEED, STREAM, c)
    got = fn(xs, SEED, STREAM, strict(c))
    np.testing.assert_array_equal(np.asarray(got), ref)


def test_hash_and_maxima_identical_on_array_api_strict() -> None:
    c = counters(20_000, start=99)
    np.testing.assert_array_equal(np.asarray(rng.hash_u64(xs, SEED, STREAM, strict(c))),
                                  rng.hash_u64(np, SEED, STREAM, c))
    np.testing.assert_array_equal(np.asarray(rng.max_of_gumbels(xs, SEED, STREAM, strict(c), 8.0)),
                                  rng.max_of_gumbels(np, SEED, STREAM, c, 8.0))
    np.testing.assert_array_equal(np.asarray(rng.max_of_normals(xs, SEED, STREAM, strict(c), 72)),
                                  rng.max_of_normals(np, SEED, STREAM, c, 72))


def test_seeds_and_streams_give_different_draws() -> None:
    c = counters(100_000)
    base = rng.uniform(np, SEED, STREAM, c)
    others = [rng.uniform(np, SEED, STREAM + 1, c), rng.uniform(np, SEED + 1, STREAM, c),
              rng.uniform(np, SEED + 1, STREAM - 1, c), rng.uniform(np, 0, 0, c)]
    for other in others:
        assert np.mean(base == other) < 1e-4
        assert abs(float(np.corrcoef(base, other)[0, 1])) < 0.01
    # Neighbouring counters are not correlated either.
    assert abs(float(np.corrcoef(base[:-1], base[1:])[0, 1])) < 0.01


@pytest.mark.parametrize("seed", [0, 41])
def test_seed_streams_do_not_overlap_under_a_counter_shift(seed: int) -> None:
    c = counters(100_000)
    nxt = rng.uniform(np, seed + 1, STREAM, c)
    for shift in (1, 2, 64):
        shifted = rng.uniform(np, seed, STREAM, c + np.uint64(shift))
        assert np.mean(nxt == shifted) < 1e-4, f"seed {seed + 1} == seed {seed} shifted by {shift}"


def test_large_seed_and_stream_values_wrap_like_uint64() -> None:
    c = counters(1000)
    a = rng.uniform(np, 2**64 + 5, STREAM, c)
    b = rng.uniform(np, 5, STREAM, c)
    np.testing.assert_array_equal(a, b)


# --- distributions -------------------------------------------------------------------------------

def test_normal_moments_on_a_million_draws() -> None:
    z = rng.normal(np, SEED, STREAM, counters(1_000_000))
    assert abs(float(z.mean())) < 5e-3
    assert abs(float(z.std()) - 1.0) < 5e-3
    assert abs(float(np.mean(z**3))) < 2e-2
    assert abs(float(np.mean(z**4)) - 3.0) < 5e-2
    assert abs(float(np.mean(z < -1.959963984540054)) - 0.025) < 1e-3


def test_norm_ppf_matches_a_high_precision_quantile() -> None:
    u = np.concatenate([
        np.linspace(1e-6, 1 - 1e-6, 20_001),
        np.logspace(-16.25, -1, 2000),  # lower tail down to the smallest uniform, 2^-54
        1.0 - np.logspace(-15.9, -1, 2000),  # upper tail
        [0.02425, 0.97575, 0.5],  # Acklam's region boundaries and the centre
    ])
    nd = statistics.NormalDist()
    ref = np.asarray([nd.inv_cdf(float(x)) for x in u])
    got = rng.norm_ppf(np, u)
    assert np.max(np.abs(got - ref)) < 1e-8
    # Odd symmetry (1 - u is rounded, hence a tolerance rather than equality).
    np.testing.assert_allclose(rng.norm_ppf(np, 1.0 - u[:20_001]), -rng.norm_ppf(np, u[:20_001]), rtol=0, atol=1e-8)


def test_norm_ppf_against_an_erf_bisection() -> None:
    """An independent reference: bisection of Phi(x) = (1 + erf(x / sqrt 2)) / 2 to machine precision."""

    def phi_inv(p: float) -> float:
        lo, hi = -40.0, 40.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            cdf = 0.5 * math.erfc(-mid / math.sqrt(2.0))
            lo, hi = (mid, hi) if cdf < p else (lo, mid)
        return 0.5 * (lo + hi)

    u = np.asarray([1e-12, 3e-7, 0.001, 0.02, 0.03, 0.2, 0.4999, 0.51, 0.8, 0.97, 0.99, 0.999999])
    ref = np.asarray([phi_inv(float(p)) for p in u])
    np.testing.assert_allclose(rng.norm_ppf(np, u), ref, rtol=0, atol=1e-8)


def test_exponential_mean_and_variance() -> None:
    e = rng.exponential(np, SEED, STREAM, counters(1_000_000))
    assert np.all(e > 0)
    assert abs(float(e.mean()) - 1.0) < 5e-3
    assert abs(float(e.var()) - 1.0) < 2e-2


def test_gumbel_mean_is_euler_gamma_and_sd_pi_over_sqrt6() -> None:
    g = rng.gumbel(np, SEED, STREAM, counters(1_000_000))
    assert abs(float(g.mean()) - EULER_GAMMA) < 5e-3
    assert abs(float(g.std()) - math.pi / math.sqrt(6.0)) < 5e-3


@pytest.mark.parametrize("n", [2, 8, 72])
def test_max_of_gumbels_matches_the_brute_force_maximum(n: int) -> None:
    one_draw = rng.max_of_gumbels(np, SEED, 21, counters(N_KS), float(n))
    brute = rng.gumbel(np, SEED, 22, counters(N_KS * n)).reshape(N_KS, n).max(axis=1)
    assert ks_statistic(one_draw, brute) < KS_MAX
    assert abs(float(one_draw.mean()) - (EULER_GAMMA + math.log(n))) < 1e-2
    # The integer and the float n agree; an array of n broadcasts.
    np.testing.assert_array_equal(rng.max_of_gumbels(np, SEED, 21, counters(100), n), one_draw[:100])
    arr_n = np.full(100, float(n))
    np.testing.assert_allclose(rng.max_of_gumbels(np, SEED, 21, counters(100), arr_n), one_draw[:100], rtol=1e-15)


def test_max_of_gumbels_ks_detects_a_wrong_shift() -> None:
    """The KS check has power: a maximum of 8 is not a maximum of 72."""
    a = rng.max_of_gumbels(np, SEED, 21, counters(N_KS), 8.0)
    brute = rng.gumbel(np, SEED, 22, counters(N_KS * 72)).reshape(N_KS, 72).max(axis=1)
    assert ks_statistic(a, brute) > 0.3


@pytest.mark.parametrize("n", [2, 8, 72])
def test_max_of_normals_matches_the_brute_force_maximum(n: int) -> None:
    one_draw = rng.max_of_normals(np, SEED, 31, counters(N_KS), n)
    # Brute force: n independent normals per sample. normal = norm_ppf(uniform) and norm_ppf is
    # increasing (checked below), so the maximum of the normals is norm_ppf of the maximum uniform.
    u = rng.uniform(np, SEED, 32, counters(N_KS * n)).reshape(N_KS, n)
    brute = rng.norm_ppf(np, u.max(axis=1))
    if n == 2:
        np.testing.assert_array_equal(brute, rng.normal(np, SEED, 32, counters(N_KS * n)).reshape(N_KS, n).max(axis=1))
    assert ks_statistic(one_draw, brute) < KS_MAX
    assert abs(float(one_draw.mean()) - float(brute.mean())) < 1e-2
    assert np.all(np.isfinite(one_draw))


def test_norm_ppf_is_increasing() -> None:
    u = np.sort(rng.uniform(np, SEED, 33, counters(1_000_000)))
    assert np.all(np.diff(rng.norm_ppf(np, u)) >= 0.0)


def test_max_of_one_is_the_draw_itself() -> None:
    c = counters(1000)
    np.testing.assert_array_equal(rng.max_of_gumbels(np, SEED, STREAM, c, 1.0), rng.gumbel(np, SEED, STREAM, c))
    np.testing.assert_allclose(rng.max_of_normals(np, SEED, STREAM, c, 1), rng.normal(np, SEED, STREAM, c),
                               rtol=0, atol=0)
