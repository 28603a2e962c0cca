"""Fit the GEMM efficiency curve of each GPU type to the published dense-model rows.

The cost model's only free constants are the efficiency curves in ``configs/gpu/*.yaml``. This
script fits, per GPU type with at least ``--min-rows`` dense rows, the large-GEMM efficiency of
each precision (``gemm_bf16``, ``gemm_fp8``) and the half-efficiency size ``gemm_half_gflop``,
minimising the mean squared log step-time error. MoE rows are never fitted: they stay pure
predictions. It also reports leave-one-out cross-validation (refit without each row, predict it),
the honest estimate of the error on a run the fit has not seen.

Usage: python scripts/calibrate.py [--min-rows 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from emulator import catalogue
from emulator.spec import GpuSpec
from emulator.validation import evaluate, load_rows

HALF_GFLOP_GRID = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0)
HELD_HALF_GFLOP = {"gb200": 11.0}
"""GPUs whose dense rows do not identify ``gemm_half_gflop`` (the loss is flat over the grid), so it is held at an
independent figure. GB200: rms log error 0.034-0.035 for 1 to 16 GFLOP; held at the B200 cuBLAS size sweep's ~10
GFLOP (pyptx.dev/performance: 2048^3 at 1,006 TFLOP/s against 1,610 at 8192^3) scaled by the peak ratio 2450/2250."""


def with_eff(gpu: GpuSpec, **changes: float) -> GpuSpec:
    return dataclasses.replace(gpu, efficiency=dataclasses.replace(gpu.efficiency, **changes))


def sq_log_error(rows: list[dict[str, Any]], gpu: GpuSpec) -> float:
    return sum(math.log(1.0 + evaluate(r, gpu).error) ** 2 for r in rows) / max(len(rows), 1)


def golden(f: Callable[[float], float], lo: float, hi: float, tol: float = 2e-3) -> float:
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def fit(rows: list[dict[str, Any]], base: GpuSpec) -> tuple[GpuSpec, float]:
    """Best (gemm_bf16, gemm_fp8, gemm_half_flops) for these rows; returns the GPU and its loss."""
    by_prec = {p: [r for r in rows if r["train"]["precision"] == p] for p in ("bf16", "fp8")}
    best: tuple[float, GpuSpec] | None = None
    grid = (HELD_HALF_GFLOP[base.name],) if base.name in HELD_HALF_GFLOP else HALF_GFLOP_GRID
    for half in grid:
        gpu = with_eff(base, gemm_half_flops=half * 1e9)
        for prec, key in (("bf16", "gemm_bf16"), ("fp8", "gemm_fp8")):
            if not by_prec[prec]:
                continue
            g0 = gpu

            def loss(x: float, g0: GpuSpec = g0, key: str = key, prec: str = prec) -> float:
                return sq_log_error(by_prec[prec], with_eff(g0, **{key: x}))

            gpu = with_eff(gpu, **{key: golden(loss, 0.3, 0.95)})
        total = sq_log_error(rows, gpu)
        if best is None or total < best[0]:
            best = (total, gpu)
    assert best is not None
    return best[1], best[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--min-rows", type=int, default=5)
    ap.add_argument("--no-loo", action="store_true", help="skip leave-one-out cross-validation")
    args = ap.parse_args()
    rows = [r for r in load_rows() if r.get("usable", True) and not r.get("excluded")]
    dense: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        m = r["model"]
        moe = (catalogue.model(m).is_moe if isinstance(m, str) else m.get("num_experts", 1) > 1)
        if not moe:
            dense.setdefault(r["gpu"], []).append(r)
    for name, group in sorted(dense.items()):
        if len(group) < args.min_rows:
            print(f"{name}: {len(group)} dense rows (< {args.min_rows}): not fitted")
            continue
        gpu, loss = fit(group, catalogue.gpu(name))
        e = gpu.efficiency
        print(f"{name}: {len(group)} dense rows  gemm_bf16={e.gemm_bf16:.3f} gemm_fp8={e.gemm_fp8:.3f} "
              f"gemm_half_gflop={e.gemm_half_flops / 1e9:.0f}  rms log error {math.sqrt(loss):.3f}")
        if args.no_loo:
            continue
        errs = []
        for i, held in enumerate(group):
            g, _ = fit(group[:i] + group[i + 1:], catalogue.gpu(name))
            res = evaluate(held, g)
            errs.append(res.error)
            print(f"  leave-one-out {held['id']:46s} {res.error:+6.1%}")
        abs_errs = [abs(x) for x in errs]
        print(f"  leave-one-out mean |error| {sum(abs_errs) / len(abs_errs):.2%}  max {max(abs_errs):.2%}")


if __name__ == "__main__":
    main()
