"""Every shipped YAML composes through Hydra, builds its spec, and documents each number it sets.

Config groups: configs/model, configs/gpu, configs/cluster, configs/experiment (the latter may be empty).
Numbers in the hardware and model files must say where they come from (a source, or ASSUMPTION):
every ``key: number`` line carries a ``#`` comment.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from emulator import catalogue
from emulator.config.build import gpu_from_dict, model_from_dict
from emulator.config.compose import compose_config
from emulator.config.job import build_job, to_plain
from emulator.paths import config_dir
from emulator.spec import ConfigError, GpuSpec, ModelSpec

CONFIGS = Path(config_dir())
GROUPS = ("model", "gpu", "cluster", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@cache
def _composed(override: str) -> dict[str, Any]:
    """Composed config of one override as plain containers (composition takes ~0.1 s: done once per option)."""
    return to_plain(compose_config([override]))


SHIPPED = [(group, name) for group in GROUPS for name in _options(group)]


def test_groups_are_not_empty() -> None:
    """The hardware and model groups ship options (experiment may be empty); catalogue.options agrees."""
    for group in ("model", "gpu", "cluster"):
        assert _options(group), group
        assert catalogue.options(group) == _options(group)


@pytest.mark.parametrize(("group", "name"), SHIPPED, ids=[f"{g}={n}" for g, n in SHIPPED])
def test_shipped_yaml_composes(group: str, name: str) -> None:
    """compose_config([f"{group}={name}"]) succeeds and selects that option."""
    data = _composed(f"{group}={name}")
    if group in ("model", "gpu", "cluster"):
        assert data[group]["name"] == name
    if group == "model":
        assert isinstance(model_from_dict(data["model"]), ModelSpec)
        assert catalogue.model(name).name == name
    if group == "gpu":
        spec = gpu_from_dict(data["gpu"])
        assert isinstance(spec, GpuSpec)
        assert spec.name == name
        assert catalogue.gpu(name) == spec


@pytest.mark.parametrize("name", _options("gpu"))
def test_gpu_units_are_converted(name: str) -> None:
    """The YAML's human units become SI in the spec: TFLOP/s x 1e12, GB x 1e9, TB/s x 1e12, GB/s x 1e9, us x 1e-6."""
    raw = catalogue.raw("gpu", name)
    spec = catalogue.gpu(name)
    assert spec.bf16_flops_per_s == pytest.approx(raw["bf16_tflops"] * 1e12)
    assert spec.fp8_flops_per_s == pytest.approx(raw["fp8_tflops"] * 1e12)
    assert spec.hbm_bytes == pytest.approx(raw["hbm_gb"] * 1e9)
    assert spec.hbm_bytes_per_s == pytest.approx(raw["hbm_tbps"] * 1e12)
    assert spec.nvlink_bytes_per_s == pytest.approx(raw["nvlink_gbps"] * 1e9)
    assert spec.efficiency.gemm_half_flops == pytest.approx(raw["efficiency"]["gemm_half_gflop"] * 1e9)
    assert spec.efficiency.kernel_overhead_s == pytest.approx(raw["efficiency"]["kernel_overhead_us"] * 1e-6)


def test_default_config_builds_the_embedded_job() -> None:
    """`emulate` with no overrides: Grok 2 on 20,000 H100 builds a valid job (dp resolved from dp=-1)."""
    job = build_job(compose_config([]))
    assert job.model.name == "grok2"
    assert job.cluster.num_gpus == 20000
    assert job.parallel.num_gpus == job.cluster.num_gpus


@pytest.mark.parametrize("name", _options("cluster"))
def test_shipped_cluster_builds_with_its_default_gpu(name: str) -> None:
    """Each cluster builds a ClusterSpec (pools of mixed clusters add up to num_gpus); any ConfigError is only about
    the default layout not dividing this cluster, never about the cluster itself."""
    try:
        job = build_job(copy.deepcopy(_composed(f"cluster={name}")))
    except ConfigError as err:
        assert err.key.startswith(("parallel", "train")), str(err)
    else:
        assert job.cluster.name == name
        assert sum(p.num_gpus for p in job.cluster.pools) == job.cluster.num_gpus


@pytest.mark.parametrize(("override", "key"), [
    ("model=nope", "model"),
    ("gpu=nope", "gpu"),
    ("parallel.tpp=2", "parallel.tpp"),
    ("parallel.tp=two", "parallel.tp"),
])
def test_bad_overrides_are_one_line_config_errors(override: str, key: str) -> None:
    """A wrong option, a misspelt key or a wrong type is one ConfigError line naming the key."""
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    assert info.value.key == key
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- every number documented

NUMBER_LINE = re.compile(r"^\s*(?:-\s+)?[A-Za-z_][\w]*\s*:\s*[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*(#.*)?$")
DOCUMENTED_FILES = [p for group in ("gpu", "model", "cluster") for p in sorted((CONFIGS / group).glob("*.yaml"))]


def _undocumented_text(text: str) -> list[str]:
    """`key: number` lines without a non-empty comment."""
    out = []
    for line in text.splitlines():
        m = NUMBER_LINE.match(line)
        if m and not (m.group(3) and m.group(3).strip("# ").strip()):
            out.append(line.strip())
    return out


def test_number_line_pattern() -> None:
    """The matcher sees `key: number` lines (ints, floats, exponents) with or without a comment, nothing else."""
    assert NUMBER_LINE.match("hbm_gb: 80           # HBM3")
    assert NUMBER_LINE.match("  gemm_bf16: 0.80")
    assert NUMBER_LINE.match("gemm_half_gflop: 8e9  # x")
    assert NUMBER_LINE.match("  - num_gpus: 50000")
    assert not NUMBER_LINE.match('name: h100')
    assert not NUMBER_LINE.match('source: "a 1 b"')
    assert _undocumented_text("a: 1\nb: 2  # src\nc: 3 #\n") == ["a: 1", "c: 3 #"]


@pytest.mark.parametrize("path", DOCUMENTED_FILES, ids=[f"{p.parent.name}/{p.name}" for p in DOCUMENTED_FILES])
def test_every_number_has_a_source_comment(path: Path) -> None:
    """Each `key: number` line of a gpu/model/cluster YAML ends with a comment (a source or ASSUMPTION)."""
    assert _undocumented_text(path.read_text()) == [], path


def test_interleaving_needs_micro_batches_in_multiples_of_pp() -> None:
    """Megatron-Core's interleaved 1F1B rejects m not divisible by pp: Grok 3 on 98,304 GPUs (pp=16, vpp=6,
    dp=384) with 3,072 sequences has m = 8, one line naming parallel.vpp."""
    with pytest.raises(ConfigError) as info:
        build_job(compose_config(["experiment=grok3_colossus_100k", "train.global_batch=3072"]))
    assert info.value.key == "parallel.vpp"
    assert "= 8" in str(info.value) and "parallel.pp=16" in str(info.value)
