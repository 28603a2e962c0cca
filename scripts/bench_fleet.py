"""Benchmark the fleet engine: GPU-steps per second with Arrow writes, and peak memory vs GPUs and steps.

Runs each case in a fresh subprocess (so peak RSS is that case's own) through the same code path as
``emulate`` (run_job: nominal model, engine, Arrow streams, finalised files, summary.json). Prints
medians and writes benchmarks/fleet.json. Not a test: nothing asserts a time.

Usage: python scripts/bench_fleet.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "fleet.json"


def overrides(gpus: int, steps: int, backend: str) -> list[str]:
    """Grok 2 on an H100 cluster of ``gpus`` GPUs (tp 8 x pp 4, 4 micro-batches per replica)."""
    dp = gpus // 32
    return ["model=grok2", "gpu=h100", "cluster=colossus_100k", f"cluster.num_gpus={gpus}", "parallel=grok2_20k",
            "train=grok2_20k", f"train.global_batch={dp * 4}", f"run.steps={steps}", f"run.backend={backend}",
            "run.progress=false"]


def one(gpus: int, steps: int, backend: str) -> None:
    """Child process: run one case, print a JSON line with seconds and peak RSS."""
    from emulator.app import run_job  # noqa: PLC0415 - the child imports after argv parsing
    from emulator.config.compose import compose_config  # noqa: PLC0415
    from emulator.config.job import build_job, to_plain  # noqa: PLC0415

    cfg = compose_config(overrides(gpus, steps, backend))
    job = build_job(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_job(job, Path(tmp), to_plain(cfg))
        seconds = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(json.dumps({"gpus": gpus, "steps": steps, "seconds": seconds, "peak_rss_gb": rss_gb,
                      "attempts": summary["fleet"]["attempts"], "backend": summary["fleet"]["backend"]}))


def measure(gpus: int, steps: int, backend: str, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--one", str(gpus), str(steps), backend],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    sec = statistics.median(r["seconds"] for r in runs)
    attempts = runs[0]["attempts"]
    return {"gpus": gpus, "steps": steps, "attempts": attempts, "seconds_median": sec,
            "gpu_steps_per_s": gpus * attempts / sec, "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
            "backend": runs[0]["backend"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 1,000,000-GPU case")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--one", nargs=3, metavar=("GPUS", "STEPS", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(int(args.one[0]), int(args.one[1]), args.one[2])
        return
    cases = [(200_000, 1000), (51_200, 1000), (200_000, 4000)]
    if not args.quick:
        cases.append((1_000_000, 1000))
    results = [measure(g, s, args.backend, args.repeats if (g, s) == (200_000, 1000) else 1) for g, s in cases]
    for r in results:
        print(f"{r['gpus']:>9,} GPUs x {r['steps']:>5,} steps ({r['attempts']:,} attempts, {r['backend']}): "
              f"{r['seconds_median']:.2f} s median, {r['gpu_steps_per_s'] / 1e6:,.0f}M GPU-steps/s, "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"machine": f"{platform.machine()}, Python {platform.python_version()}",
                               "cases": results}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
