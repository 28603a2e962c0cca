"""Composed Hydra config (DictConfig) -> validated JobSpec. The only place a DictConfig is read."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emulator import catalogue
from emulator.config.build import (
    cluster_from_dict,
    gpu_from_dict,
    model_from_dict,
    parallel_from_dict,
    power_from_dict,
    reliability_from_dict,
    run_from_dict,
    train_from_dict,
)
from emulator.spec import ClusterSpec, ConfigError, GpuSpec, JobSpec
from emulator.spec.job import check_power
from emulator.spec.search import SearchJob, SearchSpec

GROUPS = ("model", "gpu", "cluster", "parallel", "train", "run", "reliability", "power")


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _pool_gpu(index: int, name: str) -> GpuSpec:
    try:
        return catalogue.gpu(name)
    except ConfigError as err:
        raise ConfigError(f"cluster.pools[{index}].gpu", name, err.allowed) from None


def build_job(cfg: DictConfig | dict[str, Any]) -> JobSpec:
    """Validate a composed config and build the JobSpec (raises ConfigError with one clear line)."""
    parts = build_parts(cfg)
    model, cluster = parts["model"], parts["cluster"]
    par_data = dict(parts["parallel_data"])
    tp = par_data.get("tp", 1)
    if isinstance(tp, int) and tp > 0 and model.num_heads % tp:
        raise ConfigError("parallel.tp", tp, f"must divide model.num_heads={model.num_heads}")
    par_data["dp"] = _resolve_dp(par_data, cluster.num_gpus)
    parallel = parallel_from_dict(par_data)
    return JobSpec(model=model, cluster=cluster, parallel=parallel, train=parts["train"], run=parts["run"],
                   reliability=parts["reliability"], power=parts["power"])


def build_search_job(cfg: DictConfig | dict[str, Any]) -> SearchJob:
    """The job of a layout search: everything but the parallel group, which the search replaces."""
    parts = build_parts(cfg)
    return SearchJob(model=parts["model"], cluster=parts["cluster"], train=parts["train"], run=parts["run"],
                     power=parts["power"])


def build_parts(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Every group but ``parallel`` validated into its spec (``parallel_data`` is left raw)."""
    data = to_plain(cfg) if isinstance(cfg, DictConfig) else cfg
    data = {k: v for k, v in data.items() if k != "search"}
    for key in data:
        if key not in GROUPS:
            raise ConfigError(key, data[key], f"unknown top-level key; allowed: {', '.join(GROUPS)}")
    gpu = gpu_from_dict(data["gpu"])
    cluster_data = dict(data["cluster"])
    pools = cluster_data.get("pools") or []
    names = iter(range(len(pools)))

    def by_name(name: str) -> GpuSpec:
        return _pool_gpu(next(names), name)

    cluster: ClusterSpec = cluster_from_dict(cluster_data, gpu, by_name)
    model = model_from_dict(data["model"])
    train = train_from_dict(data["train"])
    run = run_from_dict(data["run"])
    rel_data = data.get("reliability") or {}
    reliability = reliability_from_dict(
        rel_data, model.total_params() * float(rel_data.get("checkpoint_bytes_per_param", 14.0))) if rel_data else None
    power = power_from_dict(data["power"]) if data.get("power") else None
    if power is not None:
        check_power(cluster, power)
    return {"model": model, "cluster": cluster, "parallel_data": data["parallel"], "train": train, "run": run,
            "reliability": reliability, "power": power}


def _resolve_dp(par: dict[str, Any], num_gpus: int) -> int:
    """``dp = -1`` takes whatever the other axes leave of the cluster."""
    dp = par.get("dp", -1)
    if isinstance(dp, bool) or not isinstance(dp, int):
        raise ConfigError("parallel.dp", dp, "must be an integer (-1: what the other axes leave)")
    if dp != -1:
        return dp
    others = 1
    for key in ("tp", "pp", "cp"):
        value = par.get(key, 1)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"parallel.{key}", value, "must be a positive integer")
        others *= value
    if num_gpus % others:
        raise ConfigError("parallel.dp", -1, f"tp x pp x cp = {others} must divide cluster.num_gpus={num_gpus}")
    return num_gpus // others


def build_search(cfg: DictConfig | dict[str, Any]) -> SearchSpec:
    """The ``search`` group as a validated SearchSpec."""
    data = to_plain(cfg) if isinstance(cfg, DictConfig) else cfg
    raw = dict(data.get("search") or {})
    allowed = {f.name for f in fields(SearchSpec)}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"search.{key}", value, f"unknown key; allowed: {', '.join(sorted(allowed))}")
    for key in ("tp", "pp", "cp", "ep", "etp", "vpp", "micro_batch", "zero", "recompute"):
        value = raw.get(key, [])
        if value is None:
            value = []
        if isinstance(value, (int, str)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"search.{key}", value, "must be a value or a list of values")
        for item in value:
            ok = isinstance(item, str) if key == "recompute" else isinstance(item, int) and not isinstance(item, bool)
            if not ok:
                raise ConfigError(f"search.{key}", item, "must be " + ("a recompute mode" if key == "recompute"
                                                                     else "an integer"))
        raw[key] = tuple(value)
    return SearchSpec(**raw)
