"""Plain mappings in human units (as the YAML files write them) -> typed specs in SI units.

This is the one place where ``_gb``, ``_tbps``, ``_tflops``, ``_us`` keys are converted. It takes
plain dicts, so the Hydra edge, the validation script and the tests share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from emulator.spec import (
    COMPONENTS,
    ClusterSpec,
    ConfigError,
    EfficiencySpec,
    GpuSpec,
    ModelSpec,
    ParallelSpec,
    PoolSpec,
    PowerSpec,
    PowerWindowSpec,
    ReliabilitySpec,
    RunSpec,
    TrainSpec,
)

GB = 1e9
TB = 1e12
TFLOP = 1e12
GFLOP = 1e9
US = 1e-6
GBIT = 1e9 / 8.0


def _check_keys(group: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{group}.{key}", data[key], f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _integer(group: str, data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{group}.{key}", value, "must be an integer")
    return value


def _number(group: str, data: Mapping[str, Any], key: str) -> float:
    if key not in data or data[key] is None:
        raise ConfigError(f"{group}.{key}", None, "is required")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{group}.{key}", value, "must be a number")
    return float(value)


EFFICIENCY_KEYS = {"gemm_bf16", "gemm_fp8", "gemm_half_gflop", "attention_fwd", "attention_bwd", "attention_fa2_fwd",
                   "attention_fa2_bwd", "hbm", "nvlink", "nvlink_all_to_all",
                   "kernel_overhead_us"}
GPU_KEYS = {"name", "sm_count", "bf16_tflops", "fp8_tflops", "hbm_gb", "hbm_tbps", "nvlink_gbps", "tdp_w", "idle_w",
            "host_cpu", "host_launch_us", "source", "efficiency"}


def gpu_from_dict(data: Mapping[str, Any], group: str = "gpu") -> GpuSpec:
    _check_keys(group, data, GPU_KEYS)
    eff = data.get("efficiency") or {}
    _check_keys(f"{group}.efficiency", eff, EFFICIENCY_KEYS)
    e = f"{group}.efficiency"
    efficiency = EfficiencySpec(
        gemm_bf16=_number(e, eff, "gemm_bf16"),
        gemm_fp8=_number(e, eff, "gemm_fp8"),
        gemm_half_flops=_number(e, eff, "gemm_half_gflop") * GFLOP,
        attention_fwd=_number(e, eff, "attention_fwd"),
        attention_bwd=_number(e, eff, "attention_bwd"),
        attention_fa2_fwd=_number(e, eff, "attention_fa2_fwd"),
        attention_fa2_bwd=_number(e, eff, "attention_fa2_bwd"),
        hbm=_number(e, eff, "hbm"),
        nvlink=_number(e, eff, "nvlink"),
        nvlink_all_to_all=_number(e, eff, "nvlink_all_to_all"),
        kernel_overhead_s=_number(e, eff, "kernel_overhead_us") * US,
    )
    return GpuSpec(
        name=str(data.get("name", "")),
        bf16_flops_per_s=_number(group, data, "bf16_tflops") * TFLOP,
        fp8_flops_per_s=_number(group, data, "fp8_tflops") * TFLOP,
        hbm_bytes=_number(group, data, "hbm_gb") * GB,
        hbm_bytes_per_s=_number(group, data, "hbm_tbps") * TB,
        nvlink_bytes_per_s=_number(group, data, "nvlink_gbps") * GB,
        tdp_w=_number(group, data, "tdp_w"),
        idle_w=_number(group, data, "idle_w"),
        sm_count=int(_number(group, data, "sm_count")),
        host_cpu=str(data.get("host_cpu", "")),
        host_launch_s=_number(group, data, "host_launch_us") * US,
        efficiency=efficiency,
        source=str(data.get("source", "")),
    )


def _dataclass_from_dict(cls: Any, group: str, data: Mapping[str, Any]) -> Any:
    allowed = {f.name for f in fields(cls)}
    _check_keys(group, data, allowed)
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        kwargs[f.name] = _coerce(group, f.name, value, f.type)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [f.name for f in fields(cls) if f.name not in data]
        raise ConfigError(f"{group}.{missing[0] if missing else '?'}", None, "is required") from exc


def _coerce(group: str, key: str, value: Any, type_name: Any) -> Any:
    t = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{group}.{key}", value, "must be true or false")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{group}.{key}", value, "must be an integer")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{group}.{key}", value, "must be a number")
        return float(value)
    if t == "str":
        return str(value)
    return value


def model_from_dict(data: Mapping[str, Any]) -> ModelSpec:
    return _dataclass_from_dict(ModelSpec, "model", data)


def parallel_from_dict(data: Mapping[str, Any]) -> ParallelSpec:
    return _dataclass_from_dict(ParallelSpec, "parallel", data)


def train_from_dict(data: Mapping[str, Any]) -> TrainSpec:
    return _dataclass_from_dict(TrainSpec, "train", data)


def run_from_dict(data: Mapping[str, Any]) -> RunSpec:
    return _dataclass_from_dict(RunSpec, "run", data)


CLUSTER_KEYS = {"name", "num_gpus", "gpus_per_node", "gpu", "pools", "nic_gbps", "nic_efficiency",
                "nic_all_to_all_efficiency",
                "scaleout_latency_us", "nvlink_domain", "nvlink_latency_us", "oversubscription", "source",
                "speed_sigma", "jitter_sigma", "slow_node_fraction", "slow_node_slowdown", "placement",
                "use_extra_memory"}
CLUSTER_DEFAULTS = {"speed_sigma": 0.01, "jitter_sigma": 0.01, "slow_node_fraction": 0.0,
                    "slow_node_slowdown": 0.10, "placement": "rank_order", "use_extra_memory": True}


def cluster_from_dict(
    data: Mapping[str, Any], default_gpu: GpuSpec, gpu_by_name: Callable[[str], GpuSpec]
) -> ClusterSpec:
    """``default_gpu`` is the gpu group's type (homogeneous clusters); pools name their types."""
    g = "cluster"
    _check_keys(g, data, CLUSTER_KEYS)
    num_gpus = _integer(g, data, "num_gpus")
    pools_data = data.get("pools") or []
    if not isinstance(pools_data, list):
        raise ConfigError(f"{g}.pools", pools_data, "must be a list of {gpu: NAME, num_gpus: N}")
    if pools_data:
        pools = []
        for i, pool in enumerate(pools_data):
            if not isinstance(pool, Mapping):
                raise ConfigError(f"{g}.pools[{i}]", pool, "must be a mapping {gpu: NAME, num_gpus: N}")
            _check_keys(f"{g}.pools[{i}]", pool, {"gpu", "num_gpus"})
            pools.append(PoolSpec(gpu=gpu_by_name(str(pool.get("gpu"))),
                                  num_gpus=_integer(f"{g}.pools[{i}]", pool, "num_gpus")))
        pool_tuple = tuple(pools)
    else:
        pool_tuple = (PoolSpec(gpu=default_gpu, num_gpus=num_gpus),)
    return ClusterSpec(
        name=str(data.get("name", "")),
        num_gpus=num_gpus,
        gpus_per_node=_integer(g, data, "gpus_per_node"),
        pools=pool_tuple,
        nic_bytes_per_s=_number(g, data, "nic_gbps") * GBIT,
        nic_efficiency=_number(g, data, "nic_efficiency"),
        nic_all_to_all_efficiency=_number(g, data, "nic_all_to_all_efficiency"),
        scaleout_latency_s=_number(g, data, "scaleout_latency_us") * US,
        nvlink_domain=_integer(g, data, "nvlink_domain"),
        nvlink_latency_s=_number(g, data, "nvlink_latency_us") * US,
        oversubscription=_number(g, data, "oversubscription"),
        speed_sigma=_number(g, {**CLUSTER_DEFAULTS, **data}, "speed_sigma"),
        jitter_sigma=_number(g, {**CLUSTER_DEFAULTS, **data}, "jitter_sigma"),
        slow_node_fraction=_number(g, {**CLUSTER_DEFAULTS, **data}, "slow_node_fraction"),
        slow_node_slowdown=_number(g, {**CLUSTER_DEFAULTS, **data}, "slow_node_slowdown"),
        placement=str(data.get("placement", CLUSTER_DEFAULTS["placement"])),
        use_extra_memory=bool(data.get("use_extra_memory", CLUSTER_DEFAULTS["use_extra_memory"])),
        source=str(data.get("source", "")),
    )


HOUR = 3600.0
MW = 1e6
RELIABILITY_KEYS = {"enabled", "rates_per_hour", "detect_s", "restart_s", "storage_tbps", "checkpoint_bytes_per_param",
                    "checkpoint_interval_steps"}


def reliability_from_dict(data: Mapping[str, Any], checkpoint_bytes: float) -> ReliabilitySpec:
    """``checkpoint_bytes``: the job's whole checkpoint (parameters x bytes per parameter) is derived by the caller."""
    g = "reliability"
    _check_keys(g, data, RELIABILITY_KEYS)
    rates = data.get("rates_per_hour") or {}
    if not isinstance(rates, Mapping):
        raise ConfigError(f"{g}.rates_per_hour", rates, "must be a mapping component -> rate per hour")
    _check_keys(f"{g}.rates_per_hour", rates, set(COMPONENTS))
    per_s = {}
    for k in rates:
        per_hour = _number(f"{g}.rates_per_hour", rates, str(k))
        if per_hour < 0:
            raise ConfigError(f"{g}.rates_per_hour.{k}", rates[k], "must be >= 0 (failures per unit-hour)")
        per_s[str(k)] = per_hour / HOUR
    storage = _number(g, data, "storage_tbps")
    if storage <= 0:
        raise ConfigError(f"{g}.storage_tbps", storage, "must be > 0")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{g}.enabled", enabled, "must be true or false")
    return ReliabilitySpec(
        rates_per_s=per_s,
        detect_s=_number(g, data, "detect_s"),
        restart_s=_number(g, data, "restart_s"),
        checkpoint_write_s=checkpoint_bytes / (storage * TB),
        checkpoint_interval_steps=_integer(g, data, "checkpoint_interval_steps"),
        enabled=enabled,
    )


POWER_KEYS = {"compute_fraction_of_tdp", "comm_fraction_of_tdp", "host_w_per_gpu", "network_w_per_gpu", "pue",
              "facility_cap_mw", "windows"}


def power_from_dict(data: Mapping[str, Any]) -> PowerSpec:
    g = "power"
    _check_keys(g, data, POWER_KEYS)
    windows = []
    raw_windows = data.get("windows") or []
    if not isinstance(raw_windows, list):
        raise ConfigError(f"{g}.windows", raw_windows, "must be a list of {start_h, end_h, cap_mw}")
    for i, w in enumerate(raw_windows):
        if not isinstance(w, Mapping):
            raise ConfigError(f"{g}.windows[{i}]", w, "must be a mapping {start_h, end_h, cap_mw}")
        key = f"{g}.windows[{i}]"
        _check_keys(key, w, {"start_h", "end_h", "cap_mw"})
        windows.append(PowerWindowSpec(start_s=_number(key, w, "start_h") * HOUR, end_s=_number(key, w, "end_h") * HOUR,
                                       cap_w=_number(key, w, "cap_mw") * MW))
    return PowerSpec(
        compute_fraction_of_tdp=_number(g, data, "compute_fraction_of_tdp"),
        comm_fraction_of_tdp=_number(g, data, "comm_fraction_of_tdp"),
        host_w_per_gpu=_number(g, data, "host_w_per_gpu"),
        network_w_per_gpu=_number(g, data, "network_w_per_gpu"),
        pue=_number(g, data, "pue"),
        facility_cap_w=_number(g, {"facility_cap_mw": 0.0, **data}, "facility_cap_mw") * MW,
        windows=tuple(windows),
    )
