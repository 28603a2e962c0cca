"""Thin Hydra entry point: ``emulate`` (also ``python -m emulator``).

Bad input is caught before Hydra runs the job: the overrides are composed and validated once (each
combination of a sweep, for ``-m``), and any error is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from emulator.app import evaluate_nominal, run_job
from emulator.backend import get_xp
from emulator.config.compose import CONFIG_NAME, VERSION_BASE, compose_config
from emulator.config.job import build_job, to_plain
from emulator.config.schema import register
from emulator.fleet.topology import Topology
from emulator.paths import config_dir
from emulator.report.console import print_summary
from emulator.spec import ConfigError, JobSpec

EXIT_BAD_INPUT = 2
MAX_PREVALIDATED_COMBINATIONS = 256
_PASSTHROUGH = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
                "--resolve", "--package", "-p"}


def fail(error: ConfigError) -> None:
    print(f"emulate: error: {error}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def check_job(job: JobSpec) -> None:
    """Asked to emulate steps, the layout must fit and the backend must exist (one line each)."""
    if job.run.steps == 0:
        return
    get_xp(job.run.backend)
    Topology.of(job)
    res = evaluate_nominal(job)
    for name, st in res.by_gpu_type.items():
        m = st.memory
        if not bool(m.fits_L[0]):
            d = {k: v / 1e9 for k, v in m.as_dict(0).items()}
            p = job.parallel
            raise ConfigError(
                "parallel", f"tp{p.tp} pp{p.pp} cp{p.cp} dp{p.dp} mb{p.micro_batch} recompute={p.recompute_label}",
                f"does not fit on {name}: {d['total']:.1f} GB > {m.capacity_bytes / 1e9:.0f} GB per GPU (weights "
                f"{d['weights']:.1f}, gradients {d['gradients']:.1f}, optimizer {d['optimizer']:.1f}, activations "
                f"{d['activations']:.1f}, other {d['other']:.1f}); run.steps=0 reports it, or change the layout")


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if not a.startswith("-") and "=" in a and not a.startswith(("hydra.", "hydra/"))]


def _combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of a sweep (``gpu=h100,h200 model=grok2,grok3``), capped."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for ov in parsed:
        if ov.is_sweep_override():
            key = ov.get_key_element()
            choices.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            choices.append([str(ov.input_line)])
    combos = itertools.islice(itertools.product(*choices), MAX_PREVALIDATED_COMBINATIONS)
    return [list(c) for c in combos]


def prevalidate(argv: list[str]) -> None:
    if any(a in _PASSTHROUGH or a.split("=")[0] in _PASSTHROUGH for a in argv):
        return
    overrides = _overrides(argv)
    multirun = "-m" in argv or "--multirun" in argv
    try:
        combos = _combinations(overrides) if multirun else [overrides]
    except Exception as exc:
        fail(ConfigError("overrides", " ".join(overrides), str(exc).strip().splitlines()[0]))
        return
    for combo in combos:
        try:
            check_job(build_job(compose_config(combo)))
        except ConfigError as err:
            fail(err)


@hydra.main(version_base=VERSION_BASE, config_path=str(config_dir()), config_name=CONFIG_NAME)
def _task(cfg: DictConfig) -> None:
    try:
        job = build_job(cfg)
        check_job(job)
    except ConfigError as err:
        fail(err)
        return
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    config: dict[str, Any] = to_plain(cfg)
    multirun = hc.mode.name == "MULTIRUN" if hc.mode is not None else False
    try:
        summary = run_job(job, out_dir, config, progress=not multirun)
    except ConfigError as err:
        fail(err)
        return
    print_summary(job, summary, out_dir)


def main() -> None:
    register()
    prevalidate(sys.argv[1:])
    _task()


if __name__ == "__main__":
    main()
