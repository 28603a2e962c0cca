"""Benchmark the analytical cost model: one layout in-process, and 10^5 layouts in one call.

Prints medians over repeats (machines here are shared and noisy: quote medians and ratios) and
writes them to benchmarks/cost_model.json. Not a test: nothing here asserts a time.

Usage: python scripts/bench_cost_model.py [--layouts 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from emulator import __version__, catalogue
from emulator.app import evaluate_nominal
from emulator.config.compose import compose_config
from emulator.config.job import build_job
from emulator.cost.layout import LayoutBatch
from emulator.cost.step import nominal

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "cost_model.json"


def layout_columns(n: int, num_gpus: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` layouts of GPT-3 175B on ``num_gpus`` GPUs drawn from the valid (tp, pp, cp, dp) grid."""
    grid = [(tp, pp, cp) for tp, pp, cp in itertools.product((1, 2, 4, 8), (1, 2, 4, 8, 16, 32), (1, 2))
            if num_gpus % (tp * pp * cp) == 0]
    pick = rng.integers(0, len(grid), n)
    tp, pp, cp = (np.asarray([g[i] for g in grid], dtype=np.float64)[pick] for i in range(3))
    return {
        "tp_L": tp, "pp_L": pp, "cp_L": cp, "dp_L": num_gpus / (tp * pp * cp),
        "vpp_L": np.where(pp > 1, rng.choice([1.0, 2.0, 3.0], n), 1.0),
        "mb_L": rng.choice([1.0, 2.0], n), "zero_L": rng.choice([0.0, 1.0, 3.0], n),
        "recompute_L": rng.choice([0.0, 1.0, 2.0], n), "sp_L": np.ones(n),
    }


def median_s(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layouts", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    job = build_job(compose_config([]))
    evaluate_nominal(job)  # warm caches
    single = median_s(lambda: evaluate_nominal(job), max(args.repeats, 50))

    model, gpus = catalogue.model("gpt3_175b"), 6144
    job175 = build_job(compose_config(["model=gpt3_175b", "cluster=dgx_h100", f"cluster.num_gpus={gpus}",
                                       "parallel=default",
                                       "parallel.tp=8", "parallel.pp=8", "train.seq_len=2048",
                                       "train.global_batch=1536"]))
    lay = LayoutBatch.from_columns(np, **layout_columns(args.layouts, gpus, np.random.default_rng(0)))
    batch = median_s(lambda: nominal(model, job175.train, job175.cluster, lay, np), args.repeats)

    result = {
        "version": __version__,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}, numpy {np.__version__}",
        "single_layout_ms_median": single * 1e3,
        "batch_layouts": args.layouts,
        "batch_s_median": batch,
        "layouts_per_s": args.layouts / batch,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"one layout (default job, in-process): {single * 1e3:.2f} ms median")
    print(f"{args.layouts:,} layouts of GPT-3 175B on {gpus} GPUs in one call: {batch:.3f} s median "
          f"({args.layouts / batch:,.0f} layouts/s)")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
