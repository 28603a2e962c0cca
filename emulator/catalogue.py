"""Load shipped GPU, model and cluster YAML files by name, without Hydra."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from emulator.config.build import gpu_from_dict, model_from_dict
from emulator.paths import config_dir
from emulator.spec import ConfigError, GpuSpec, ModelSpec


def options(group: str) -> list[str]:
    """Names of the shipped options of a config group."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def raw(group: str, name: str) -> dict[str, Any]:
    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(group, name, f"unknown {group}; choose one of {', '.join(options(group))}")
    with path.open() as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), path
    return data


@cache
def gpu(name: str) -> GpuSpec:
    return gpu_from_dict(raw("gpu", name))


@cache
def model(name: str) -> ModelSpec:
    return model_from_dict(raw("model", name))
