"""The README's commands and recipes work as written."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

from emulator.app import evaluate_nominal
from emulator.config.compose import compose_config
from emulator.config.job import build_job

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model=tiny", "cluster=single_node", "cluster.num_gpus=64", "parallel=default", "parallel.tp=2",
         "train.seq_len=1024", "train.global_batch=64", "run.steps=30", "reliability.rates_per_hour.gpu=300",
         "reliability.checkpoint_interval_steps=5"]


def test_analysis_recipe_runs_on_a_real_run(tmp_path: Path) -> None:
    """The Python block of 'Outputs and how to read them' (pyarrow, pyarrow.dataset, polars, DuckDB)."""
    subprocess.run([sys.executable, "-m", "emulator", *SMALL], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    [run_dir] = [p.parent for p in tmp_path.rglob("summary.json")]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Outputs and how to read them"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1).replace("outputs/DATE/TIME", str(run_dir))
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)  # running the README's code is the point
    assert namespace["steps"].num_rows >= 30  # type: ignore[attr-defined]
    assert namespace["gpus"].num_rows == 64  # type: ignore[attr-defined]
    assert namespace["by_kind"]  # DuckDB's answer


def test_wheel_carries_the_configs_and_runs_without_the_checkout(tmp_path: Path) -> None:
    """A built wheel holds configs/ and validation/ inside the package; run from it, not from the checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300)
    [wheel] = list((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "emulator/configs/emulate.yaml" in names
        assert "emulator/configs/model/grok3.yaml" in names
        assert "emulator/validation_data/throughput.yaml" in names
        zf.extractall(tmp_path / "site")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # -S skips site-packages' .pth files (the checkout's editable install); the dependencies come from
    # the current environment's site-packages, placed after the unpacked wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {"PYTHONPATH": ":".join([str(tmp_path / "site"), *deps]), "PATH": "/usr/bin:/bin"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import emulator.paths as p; print(p.config_dir())"],
                           env=env, cwd=run_dir, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(tmp_path / "site"))
    proc = subprocess.run([sys.executable, "-S", "-m", "emulator", "run.steps=0"], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert list(run_dir.rglob("summary.json"))


def _emulate_examples() -> list[str]:
    """Every `emulate ...` command line of the README's bash blocks (continuations joined, comments cut)."""
    readme = (ROOT / "README.md").read_text()
    commands, blocks = [], readme.split("```bash")[1:]
    for block in blocks:
        text = block.split("```")[0].replace("\\\n", " ")
        for raw in text.splitlines():
            line = raw.split("#")[0].split("&&")[0].strip()
            if line.startswith("emulate ") or line == "emulate":
                commands.append(line)
    return commands


def test_every_emulate_example_in_the_readme_is_a_valid_job() -> None:
    """Each README `emulate` example (each combination of a -m sweep) passes the validation gate, and the
    ones that emulate steps fit in HBM (emulating a layout that does not fit is an error by contract)."""
    commands = _emulate_examples()
    assert len(commands) >= 8, commands
    for command in commands:
        args = [a for a in shlex.split(command)[1:] if a != "-m" and not a.startswith(("hydra/", "hydra."))]
        # A comma is a multirun sweep, except inside a list value (parallel.recompute_modules=[a,b]).
        axes = [[f"{a.split('=', 1)[0]}={v}" for v in a.split("=", 1)[1].split(",")]
                if "," in a and not a.split("=", 1)[1].startswith("[") else [a] for a in args]
        for combo in itertools.product(*axes):
            job = build_job(compose_config(list(combo)))
            if job.run.steps > 0:
                res = evaluate_nominal(job)
                fits = all(bool(st.memory.fits_L[0]) for st in res.by_gpu_type.values())
                assert fits, (command, combo)
