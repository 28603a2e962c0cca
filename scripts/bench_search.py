"""Benchmark the layout search: GPT-3 175B on 6,144 H100 (every valid layout), layouts per second.

Prints medians over repeats and writes benchmarks/search.json. Not a test.

Usage: python scripts/bench_search.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
from pathlib import Path

import numpy as np

from emulator.config.compose import compose_config
from emulator.config.job import build_search_job
from emulator.search.ranker import run_search
from emulator.spec.search import SearchSpec

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "search.json"
JOBS = {
    "GPT-3 175B on 6,144 H100": ["model=gpt3_175b", "cluster=dgx_h100", "cluster.num_gpus=6144", "train.seq_len=2048",
                                 "train.global_batch=1536"],
    "Grok 3 on 98,304 H100": ["experiment=grok3_colossus_100k"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=50_000)
    args = ap.parse_args()
    results = []
    for name, overrides in JOBS.items():
        job = build_search_job(compose_config(overrides, config_name="emulate_search"))
        run_search(job, SearchSpec(chunk=args.chunk), None, np)  # warm caches
        runs = [run_search(job, SearchSpec(chunk=args.chunk), None, np) for _ in range(args.repeats)]
        sec = statistics.median(r.seconds for r in runs)
        ev = statistics.median(r.eval_seconds for r in runs)
        r = runs[0]
        results.append({"job": name, "overrides": overrides, "grid_points": r.grid_points, "layouts": r.layouts,
                        "fitting": r.fitting, "seconds_median": sec, "layouts_per_s": r.layouts / sec,
                        "eval_seconds_median": ev, "layouts_evaluated_per_s": r.layouts / ev, "chunk": args.chunk})
        print(f"{name}: {r.grid_points:,} grid points, {r.layouts:,} valid layouts ({r.fitting:,} fit) in {sec:.2f} s "
              f"median: {r.layouts / sec:,.0f} layouts/s end to end, {r.layouts / ev:,.0f}/s in the cost model "
              f"and objective")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"cases": results, "peak_rss_gb": rss}, indent=2) + "\n")
    print(f"peak RSS {rss:.2f} GB; wrote {OUT}")


if __name__ == "__main__":
    main()
