"""H100 SXM vs H200 SXM: the same GH100 compute die with more and faster HBM (80 GB HBM3 at 3.35 TB/s vs
141 GB HBM3e at 4.8 TB/s, NVIDIA datasheets via published.yaml gpu.h100_sxm5_80gb / gpu.h200_sxm_141gb).

The same job on both: equal tensor peaks, memory-bound kernels faster by the bandwidth ratio, more capacity,
never a slower step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from emulator import catalogue
from emulator.app import evaluate_nominal
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import layer_ops
from emulator.cost.roofline import op_time
from emulator.cost.step import StepTime, step_time
from emulator.io.summary import nominal_summary
from emulator.spec import GpuSpec, JobSpec, ParallelSpec, RunSpec, TrainSpec
from tests.cost.conftest import sized_cluster

H100, H200 = catalogue.gpu("h100"), catalogue.gpu("h200")
BW_RATIO = 3.35 / 4.8


def test_same_compute_peaks() -> None:
    """Dense BF16 989.4 and FP8 1978.9 TFLOP/s on both (same die, same clocks)."""
    assert H100.bf16_flops_per_s == H200.bf16_flops_per_s == pytest.approx(989.4e12)
    assert H100.fp8_flops_per_s == H200.fp8_flops_per_s == pytest.approx(1978.9e12)
    assert H100.nvlink_bytes_per_s == H200.nvlink_bytes_per_s == pytest.approx(900e9)
    assert H100.tdp_w == H200.tdp_w == 700


def test_capacity_and_bandwidth() -> None:
    """80 GB at 3.35 TB/s vs 141 GB at 4.8 TB/s (decimal units as marketed)."""
    assert H100.hbm_bytes == 80e9
    assert H200.hbm_bytes == 141e9
    assert H100.hbm_bytes_per_s == pytest.approx(3.35e12)
    assert H200.hbm_bytes_per_s == pytest.approx(4.8e12)


def _with_h200_memory(gpu: GpuSpec) -> GpuSpec:
    """An H100 spec with the H200's HBM (capacity, bandwidth, streaming efficiency): isolates the memory system."""
    eff = dataclasses.replace(gpu.efficiency, hbm=H200.efficiency.hbm)
    return dataclasses.replace(gpu, name="h100_with_h200_hbm", hbm_bytes=H200.hbm_bytes,
                               hbm_bytes_per_s=H200.hbm_bytes_per_s, efficiency=eff)


def test_memory_bound_kernel_time_scales_with_bandwidth() -> None:
    """An element-wise kernel takes bytes / (HBM x eff) + launch overhead: with the overhead removed, H200 / H100
    time = (3.35 eff_h100) / (4.8 eff_h200), i.e. 3.35/4.8 when the streaming efficiency is the same."""
    model = catalogue.model("llama3_8b")
    train = TrainSpec(seq_len=8192, global_batch=8)
    lay = LayoutBatch.from_specs([ParallelSpec(dp=8)], np)
    ops = [op for op in layer_ops(model, train, lay, np, moe=False) if op.kind == "memory"]
    assert ops
    expected = (3.35e12 * H100.efficiency.hbm) / (4.8e12 * H200.efficiency.hbm)
    for op in ops:
        t100 = float(op_time(op, H100, "bf16", np).fwd_s_L[0]) - op.kernels * H100.efficiency.kernel_overhead_s
        t200 = float(op_time(op, H200, "bf16", np).fwd_s_L[0]) - op.kernels * H200.efficiency.kernel_overhead_s
        assert t200 / t100 == pytest.approx(expected, rel=1e-9), op.name
    if H100.efficiency.hbm == H200.efficiency.hbm:
        assert expected == pytest.approx(BW_RATIO, rel=1e-12)


def _step(gpu: GpuSpec, model_name: str = "llama3_70b", precision: str = "bf16") -> StepTime:
    par = ParallelSpec(tp=8, pp=2, dp=4, vpp=5, recompute="selective")
    train = TrainSpec(seq_len=8192, global_batch=64, precision=precision)
    cluster = sized_cluster(par.num_gpus, "h100")
    return step_time(catalogue.model(model_name), train, cluster, gpu, LayoutBatch.from_specs([par], np), np)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_memory_bound_seconds_drop_by_about_the_bandwidth_ratio(precision: str) -> None:
    """The memory-bound part of a step (HBM-limited kernels) shrinks on H200's memory: between the bandwidth ratio
    (ops that stop being memory-bound drop out) and 1 (kernel launch overheads do not scale); the rest of compute
    is unchanged when only the memory system differs."""
    base, faster = _step(H100, precision=precision), _step(_with_h200_memory(H100), precision=precision)
    mb100, mb200 = float(base.memory_bound_s_L[0]), float(faster.memory_bound_s_L[0])
    assert 0.0 < mb200 < mb100
    assert mb200 / mb100 == pytest.approx(BW_RATIO, rel=0.25)
    assert mb200 / mb100 >= BW_RATIO * 0.75
    c100, c200 = float(base.breakdown_s["compute"][0]), float(faster.breakdown_s["compute"][0])
    assert c200 < c100
    # only the memory-bound seconds changed (compute-bound ops have the same peaks)
    assert c100 - c200 <= (mb100 - mb200) * (1 + 1e-9) + 1e-12


def test_capacity_reported_in_memory_breakdown() -> None:
    """The same layout needs the same bytes; the capacity is 80e9 vs 141e9."""
    m100, m200 = _step(H100).memory, _step(H200).memory
    assert m100.capacity_bytes == 80e9
    assert m200.capacity_bytes == 141e9
    assert float(m100.total_L[0]) == pytest.approx(float(m200.total_L[0]), rel=1e-12)


@pytest.mark.parametrize("model_name", ["llama3_70b", "llama3_8b"])
@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_h200_step_is_never_slower(model_name: str, precision: str) -> None:
    """Same job, shipped configs: step(H200) <= step(H100)."""
    assert float(_step(H200, model_name, precision).step_time_s_L[0]) <= float(
        _step(H100, model_name, precision).step_time_s_L[0])
    assert float(_step(_with_h200_memory(H100), model_name, precision).step_time_s_L[0]) <= float(
        _step(H100, model_name, precision).step_time_s_L[0])


def _summary(gpu: str, precision: str) -> dict[str, Any]:
    par = ParallelSpec(tp=8, pp=2, dp=4, vpp=5, recompute="selective")
    train = TrainSpec(seq_len=8192, global_batch=64, precision=precision)
    job = JobSpec(model=catalogue.model("llama3_70b"), cluster=sized_cluster(par.num_gpus, gpu), parallel=par,
                  train=train, run=RunSpec())
    return nominal_summary(job, evaluate_nominal(job))


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_summary_compute_split_memory_bound_is_lower_on_h200(precision: str) -> None:
    """summary.json nominal.compute_split_s.memory_bound of the same job: H200 / H100 about 3.35/4.8 (within 25%:
    launch overheads do not scale and some kernels change side of the roofline); the capacity is 80e9 vs 141e9."""
    s100, s200 = _summary("h100", precision), _summary("h200", precision)
    mb100 = s100["nominal"]["compute_split_s"]["memory_bound"]
    mb200 = s200["nominal"]["compute_split_s"]["memory_bound"]
    assert 0.0 < mb200 < mb100
    assert mb200 / mb100 == pytest.approx(BW_RATIO, rel=0.25)
    split = s100["nominal"]["compute_split_s"]
    assert split["compute_bound"] + split["memory_bound"] == pytest.approx(s100["nominal"]["breakdown_s"]["compute"])
    assert (s100["memory"]["capacity_bytes"], s200["memory"]["capacity_bytes"]) == (80e9, 141e9)
    assert s200["nominal"]["step_time_s"] <= s100["nominal"]["step_time_s"]
