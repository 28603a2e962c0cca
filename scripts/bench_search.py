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
JOB = ["model=gpt3_175b", "cluster=dgx_h100", "cluster.num_gpus=6144", "train.seq_len=2048", "train.global_batch=1536"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=250_000)
    args = ap.parse_args()
    job = build_search_job(compose_config(JOB, config_name="emulate_search"))
    runs = [run_search(job, SearchSpec(chunk=args.chunk), None, np) for _ in range(args.repeats)]
    sec = statistics.median(r.seconds for r in runs)
    r = runs[0]
    result = {"job": JOB, "grid_points": r.grid_points, "layouts": r.layouts, "fitting": r.fitting,
              "seconds_median": sec, "layouts_per_s": r.layouts / sec, "grid_points_per_s": r.grid_points / sec,
              "chunk": args.chunk, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"GPT-3 175B on 6,144 GPUs: {r.grid_points:,} grid points, {r.layouts:,} valid layouts ({r.fitting:,} fit) "
          f"in {sec:.2f} s median: {r.layouts / sec:,.0f} layouts/s, peak RSS {result['peak_rss_gb']:.2f} GB")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
