"""Sweeps the way users launch them: Hydra multirun with the basic, joblib and submitit-local launchers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ["cluster=single_node", "cluster.num_gpus=64", "parallel=default", "parallel.tp=2", "train.seq_len=1024",
         "train.global_batch=64", "run.steps=20"]


def sweep(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    proc = subprocess.run([sys.executable, "-m", "emulator", "-m", *args, *SMALL], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("summary.json"))]


def combos(runs: list[dict[str, object]]) -> set[tuple[str, str]]:
    return {(r["config"]["gpu"]["name"], r["config"]["model"]["name"]) for r in runs}  # type: ignore[index]


def test_two_by_two_sweep_with_the_basic_launcher(tmp_path: Path) -> None:
    runs = sweep(tmp_path, "gpu=h100,h200", "model=tiny,tiny_moe")
    assert combos(runs) == {("h100", "tiny"), ("h200", "tiny"), ("h100", "tiny_moe"), ("h200", "tiny_moe")}
    assert all(r["fleet"]["steps"] == 20 for r in runs)  # type: ignore[index]


def test_two_by_two_sweep_with_the_joblib_launcher(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    runs = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "gpu=h100,h200", "model=tiny,tiny_moe")
    assert len(combos(runs)) == 4


def test_sweep_through_submitit_local_processes(tmp_path: Path) -> None:
    """The shipped configs/hydra/launcher/local_processes.yaml: the SLURM launcher's local twin."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    runs = sweep(tmp_path, "hydra/launcher=local_processes", "gpu=h100,h200", "model=tiny")
    assert combos(runs) == {("h100", "tiny"), ("h200", "tiny")}


def test_sweep_on_a_local_ray_cluster(tmp_path: Path) -> None:
    """The optional Ray launcher (pip install -e '.[ray]': ~0.8 GB, so CI's test extras leave it out and
    this test skips there; run it with the extra installed)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    runs = sweep(tmp_path, "hydra/launcher=ray", "gpu=h100,h200", "model=tiny")
    assert combos(runs) == {("h100", "tiny"), ("h200", "tiny")}
