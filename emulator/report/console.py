"""A compact rich rendering of summary.json for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from emulator.spec import JobSpec

GB = 1e9


def print_summary(job: JobSpec, summary: dict[str, Any], out_dir: Path, console: Console | None = None) -> None:
    con = console or Console()
    nom, mem = summary["nominal"], summary["memory"]
    p = job.parallel
    title = (f"{job.model.name} on {job.cluster.name} ({job.cluster.num_gpus:,} GPUs: "
             + " + ".join(f"{pool.num_gpus:,} {pool.gpu.name}" for pool in job.cluster.pools) + ")")
    con.print(f"[bold]{title}[/bold]")
    etp = f" etp={p.expert_tp}" if job.model.is_moe else ""
    con.print(f"layout tp={p.tp} pp={p.pp} dp={p.dp} cp={p.cp} ep={p.ep}{etp} vpp={p.vpp} micro_batch={p.micro_batch} "
              f"zero={p.zero} recompute={p.recompute_label} | seq {job.train.seq_len} x batch {job.train.global_batch} "
              f"{job.train.precision}")
    t = Table(show_header=True, header_style="bold")
    t.add_column("nominal step")
    t.add_column("seconds", justify="right")
    t.add_column("share", justify="right")
    step = nom["step_time_s"]
    for k, v in nom["breakdown_s"].items():
        if v > 0:
            t.add_row(k, f"{v:.3f}", f"{v / step:.1%}")
    t.add_row("[bold]step[/bold]", f"[bold]{step:.3f}[/bold]", "100%")
    con.print(t)
    con.print(f"tokens/s {nom['tokens_per_s']:,.0f} | model TFLOP/s per GPU {nom['model_tflops_per_gpu']:.0f} | "
              f"MFU {nom['mfu']:.1%} | HFU {nom['hfu']:.1%} | pace set by {nom['pace_gpu_type']}")
    per = mem["per_gpu_bytes"]
    verdict = "[green]fits[/green]" if mem["fits"] else "[red]does NOT fit[/red]"
    con.print(f"memory per GPU {per['total'] / GB:.1f} GB of {mem['capacity_bytes'] / GB:.0f} GB {verdict} "
              f"(weights {per['weights'] / GB:.1f}, grads {per['gradients'] / GB:.1f}, optimizer "
              f"{per['optimizer'] / GB:.1f}, activations {per['activations'] / GB:.1f}, other {per['other'] / GB:.1f})")
    if "fleet" in summary:
        f, pw = summary["fleet"], summary["power"]
        con.print(f"fleet: {f['steps']:,} steps ({f['attempts']:,} attempts) in {f['wall_time_s'] / 3600:.2f} h | "
                  f"mean step {f['mean_step_time_s']:.3f} s (p99 {f['p99_step_time_s']:.3f}) | tokens/s "
                  f"{f['tokens_per_s']:,.0f} | goodput {f['goodput']:.1%} | {f['interruptions']} interruptions | "
                  f"checkpoint every {f['checkpoint_interval_steps']} steps")
        con.print(f"power: mean {pw['mean_facility_mw']:.1f} MW, peak {pw['peak_facility_mw']:.1f} MW, idle floor "
                  f"{pw['idle_facility_mw']:.1f} MW | {pw['energy_mwh']:.1f} MWh | "
                  f"{pw['energy_per_token_j']:.2f} J/token")
    if "time_to_train_days" in summary:
        basis = "emulated fleet rate" if "fleet" in summary else "nominal, no failures"
        con.print(f"time to train: {summary['time_to_train_days']:.1f} days ({basis})")
    con.print(f"wrote {out_dir / 'summary.json'}")
