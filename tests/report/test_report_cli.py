"""``emulate-report`` end to end: real ``emulate`` runs in, index.html and decodable PNGs out."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from emulator.report import cli
from emulator.report.plots import RunData, assign_labels, gpu_comparisons

SMALL = ["model=tiny", "cluster=single_node", "cluster.num_gpus=64", "parallel=default", "parallel.tp=2",
         "parallel.pp=2", "train.seq_len=1024", "train.global_batch=64", "run.steps_per_batch=16"]
FAILING = ["reliability.rates_per_hour.gpu=300", "reliability.checkpoint_interval_steps=10"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FLEET_FIGURES = ("timeline", "power", "stragglers")
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def emulate(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "emulator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def report(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator.report.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def only_run(root: Path) -> Path:
    [summary] = sorted(root.rglob("summary.json"))
    return summary.parent


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1024, path
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.width >= 600 and img.height >= 200, (path, img.size)


def embedded(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG.findall(html)]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fleet run with a few failures, checkpoints and restarts."""
    cwd = tmp_path_factory.mktemp("fleet")
    emulate([*SMALL, *FAILING, "run.steps=60"], cwd)
    return only_run(cwd)


@pytest.fixture(scope="module")
def nominal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("nominal")
    emulate([*SMALL, "run.steps=0"], cwd)
    return only_run(cwd)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``emulate -m gpu=h100,h200``: a Hydra multirun directory holding 0/ and 1/."""
    cwd = tmp_path_factory.mktemp("sweep")
    emulate(["-m", "gpu=h100,h200", *SMALL, "run.steps=20"], cwd)
    [multirun_yaml] = sorted(cwd.rglob("multirun.yaml"))
    return multirun_yaml.parent


@pytest.fixture(scope="module")
def fleet_report(fleet_run: Path) -> Path:
    proc = report([str(fleet_run)])
    assert proc.returncode == 0, proc.stderr
    index = fleet_run / "report" / "index.html"
    assert proc.stdout.strip() == str(index)
    return index


def test_fleet_run_writes_index_and_every_figure(fleet_report: Path) -> None:
    out = fleet_report.parent
    names = {p.name for p in out.glob("*.png")}
    assert names == {"breakdown.png", "memory.png", *(f"run1_{f}.png" for f in FLEET_FIGURES)}
    for name in names:
        assert_png(out / name)


def test_html_is_self_contained_with_an_img_per_figure(fleet_report: Path) -> None:
    html = fleet_report.read_text()
    pngs = sorted(fleet_report.parent.glob("*.png"))
    images = embedded(html)
    assert len(images) == len(pngs) == html.count("<img ")
    assert sorted(images) == sorted(p.read_bytes() for p in pngs)
    assert "<table" in html and "tiny" in html
    for key in ("goodput", "interruptions", "MFU", "TP2 PP2 DP16", "fits", "MW"):
        assert key in html, key


def test_multirun_gives_one_report_with_the_h100_vs_h200_figure(sweep_dir: Path) -> None:
    proc = report([str(sweep_dir)])
    assert proc.returncode == 0, proc.stderr
    out = sweep_dir / "report"
    assert sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("index.html")) == [Path("report/index.html")]
    compare = out / "compare_h100_vs_h200.png"
    assert_png(compare)
    html = (out / "index.html").read_text()
    assert compare.read_bytes() in embedded(html)
    assert "H200 vs H100" in html
    for run in ("run1", "run2"):
        for fig in FLEET_FIGURES:
            assert_png(out / f"{run}_{fig}.png")
    assert "64 H100" in html and "64 H200" in html


def test_nominal_only_run_has_the_nominal_plots_only(nominal_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    cli.main([str(nominal_run), "--out", str(out), "-q"])
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert {p.name for p in out.glob("*.png")} == {"breakdown.png", "memory.png"}
    for p in out.glob("*.png"):
        assert_png(p)
    html = (out / "index.html").read_text()
    assert len(embedded(html)) == 2
    assert "Nominal only" in html
    assert not (nominal_run / "report").exists()


def test_mixed_cluster_compares_its_gpu_types(nominal_run: Path, tmp_path: Path) -> None:
    """A summary whose by_gpu_type holds two types gets an H200-vs-H100 figure from one run."""
    summary = json.loads((nominal_run / "summary.json").read_text())
    h200 = copy.deepcopy(summary["nominal"]["by_gpu_type"]["h100"])
    h200["compute_split_s"]["memory_bound"] *= 0.7
    h200["step_time_s"] -= summary["nominal"]["compute_split_s"]["memory_bound"] * 0.3
    summary["nominal"]["by_gpu_type"]["h200"] = h200
    mem = copy.deepcopy(summary["memory"]["by_gpu_type"]["h100"])
    mem["capacity_bytes"] = 141e9
    summary["memory"]["by_gpu_type"]["h200"] = mem
    run = tmp_path / "mixed"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    runs = [RunData.load(run)]
    assign_labels(runs)
    [comparison] = gpu_comparisons(runs)
    assert (comparison.base.name, comparison.challenger.name) == ("h100", "h200")
    cli.main([str(run), "-q"])
    assert_png(run / "report" / "compare_h100_vs_h200.png")


def test_runs_that_differ_get_distinct_labels(fleet_run: Path, nominal_run: Path) -> None:
    runs = [RunData.load(fleet_run), RunData.load(nominal_run)]
    assign_labels(runs)
    assert runs[0].label != runs[1].label
    assert "run.steps=0" in runs[1].label
    assert gpu_comparisons(runs) == []


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "not_json", "not_summary"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    path = tmp_path / kind
    if kind == "file":
        path.write_text("not a run")
    elif kind != "missing":
        path.mkdir()
    if kind == "not_json":
        (path / "summary.json").write_text("{oops")
    elif kind == "not_summary":
        (path / "summary.json").write_text('{"version": "0"}')
    proc = report([str(path)])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (path / "report").exists()


def test_help() -> None:
    proc = report(["--help"])
    assert proc.returncode == 0
    assert "RUN_DIR" in proc.stdout and "--out" in proc.stdout
