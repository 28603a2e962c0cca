"""Thin Hydra entry point: ``emulate-search`` ranks every valid layout of a job.

Writes ``layouts.arrow`` (best first) and ``search.json`` into the Hydra run directory and prints the
top layouts. Bad input, or a request no layout can meet, is one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from emulator import __version__
from emulator.backend import backend_name, get_xp
from emulator.cli import EXIT_BAD_INPUT, _overrides
from emulator.config.compose import VERSION_BASE, compose_config
from emulator.config.job import build_search, build_search_job, to_plain
from emulator.config.schema import register
from emulator.io.summary import write_json_atomic
from emulator.paths import config_dir
from emulator.search.ranker import SearchResult, mixed_report, run_search
from emulator.spec import ConfigError
from emulator.spec.search import SearchJob, SearchSpec

CONFIG_NAME = "emulate_search"


def fail(error: ConfigError) -> None:
    print(f"emulate-search: error: {error}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def explain_empty(job: SearchJob, search: SearchSpec, result: SearchResult) -> ConfigError:
    """One line that says why nothing could be ranked."""
    where = f"{result.num_gpus} GPUs"
    if result.layouts == 0:
        return ConfigError("search", f"{job.model.name} on {where}",
                           f"no valid layout: tp x pp x cp must divide the GPU count and train.global_batch="
                           f"{job.train.global_batch} must be a multiple of dp x micro_batch; relax the constraints")
    return ConfigError("search", f"{job.model.name} on {where}",
                       f"none of the {result.layouts:,} valid layouts fits in HBM: the GPU budget is below what the "
                       f"model needs with these settings (search.must_fit=false ranks them anyway)")


def search_job(cfg: DictConfig | dict[str, Any], out_dir: Path | None) -> tuple[SearchJob, SearchResult]:
    job = build_search_job(cfg)
    search = build_search(cfg)
    xp = get_xp(job.run.backend)
    result = run_search(job, search, out_dir, xp)
    if not result.best:
        raise explain_empty(job, search, result)
    return job, result


def recompute_label(row: dict[str, Any]) -> str:
    """A layouts.arrow row's recompute as ParallelSpec.recompute_label writes it: ``selective(moe_act,layernorm)``."""
    return f"{row['recompute']}({row['recompute_modules']})" if row.get("recompute_modules") else row["recompute"]


def print_top(job: SearchJob, search: SearchSpec, result: SearchResult, console: Console | None = None) -> None:
    con = console or Console(width=None if sys.stdout.isatty() else 160)
    con.print(f"[bold]{job.model.name}[/bold] on {result.num_gpus:,} GPUs: {result.layouts:,} valid layouts "
              f"({result.fitting:,} fit) of {result.grid_points:,} grid points in {result.seconds:.2f} s "
              f"({result.layouts / max(result.seconds, 1e-9):,.0f} layouts/s with enumeration and Arrow writes; "
              f"{result.layouts / max(result.eval_seconds, 1e-9):,.0f}/s evaluated); objective {search.objective}")
    t = Table(show_header=True, header_style="bold")
    # Expert layout columns only for an MoE model (a dense model has ep = 1 and no experts to split).
    keys = ("tp", "pp", "dp", "cp") + (("ep", "etp") if job.model.is_moe else ()) + ("vpp", "micro_batch", "zero")
    for col in ("#", *keys[:-2], "mb", "zero", "recompute", "step s", "tokens/s", "MFU", "GB/GPU"):
        t.add_column(col, justify="right")
    for i, row in enumerate(result.best, 1):
        t.add_row(str(i), *(str(row[k]) for k in keys), recompute_label(row), f"{row['step_time_s']:.3f}",
                  f"{row['tokens_per_s']:,.0f}", f"{row['mfu']:.1%}", f"{row['memory_bytes'] / 1e9:.1f}")
    con.print(t)


def print_mixed(mixed: dict[str, Any]) -> None:
    def short(row: dict[str, Any] | None) -> str:
        if row is None:
            return "no layout"
        return (f"tp{row['tp']} pp{row['pp']} dp{row['dp']} cp{row['cp']} ep{row['ep']} etp{row['etp']} "
                f"vpp{row['vpp']} "
                f"mb{row['micro_batch']} zero{row['zero']} {recompute_label(row)}: {row['step_time_s']:.3f} s, "
                f"{row['tokens_per_s']:,.0f} tokens/s")

    for policy, row in mixed["by_placement"].items():
        print(f"whole job, placement={policy}: {short(row)}")
    for pool, row in mixed["by_pool"].items():
        print(f"pool {pool} alone: {short(row)}")


@hydra.main(version_base=VERSION_BASE, config_path=str(config_dir()), config_name=CONFIG_NAME)
def _task(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        job, result = search_job(cfg, out_dir)
        search = build_search(cfg)
    except ConfigError as err:
        fail(err)
        return
    summary = {"version": __version__, "num_gpus": result.num_gpus, "grid_points": result.grid_points,
               "layouts": result.layouts, "fitting": result.fitting, "seconds": result.seconds,
               "layouts_per_s": result.layouts / max(result.seconds, 1e-9),
               "layouts_evaluated_per_s": result.layouts / max(result.eval_seconds, 1e-9),
               "objective": search.objective, "backend": backend_name(get_xp(job.run.backend)), "best": result.best,
               "config": to_plain(cfg)}
    mixed = mixed_report(job, search, out_dir / "layouts.arrow", get_xp(job.run.backend)) \
        if job.cluster.is_mixed else None
    if mixed is not None:
        summary["mixed"] = mixed
    write_json_atomic(out_dir / "search.json", json.loads(json.dumps(summary, default=str)))
    print_top(job, search, result)
    if mixed is not None:
        print_mixed(mixed)
    print(f"wrote {out_dir / 'layouts.arrow'}")


def main() -> None:
    register()
    argv = sys.argv[1:]
    if not any(a in ("-h", "--help", "--hydra-help", "--cfg", "-c", "--info") for a in argv) and "-m" not in argv:
        try:
            cfg = compose_config(_overrides(argv), config_name=CONFIG_NAME)
            build_search_job(cfg).check(build_search(cfg))
        except ConfigError as err:
            fail(err)
    _task()


if __name__ == "__main__":
    main()
