"""Batched evaluation (suffix ``_L``) is element-wise, and the array backend does not change the numbers.

The cost model evaluates many layouts at once as arrays. Each layout's result must not depend on which other
layouts share the batch, and array-api-strict (the stand-in for CuPy: no bool arithmetic, no two-scalar
``where``) must give what NumPy gives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import array_api_strict as xps
import numpy as np
import pytest

from emulator import catalogue
from emulator.cost import shapes as shapes_mod
from emulator.cost.collectives import Fabric
from emulator.cost.layout import LayoutBatch
from emulator.cost.memory import memory_per_gpu
from emulator.cost.ops import layer_ops
from emulator.cost.step import BREAKDOWN_KEYS, nominal
from emulator.spec import ModelSpec, ParallelSpec, TrainSpec
from tests.cost.conftest import sized_cluster

NUM_GPUS = 64
DENSE_SPECS = [
    ParallelSpec(tp=8, pp=2, dp=4, vpp=2, micro_batch=1, recompute="selective"),
    ParallelSpec(tp=1, dp=64, zero=3, micro_batch=1),
    ParallelSpec(tp=4, pp=4, dp=2, cp=2, recompute="full", sequence_parallel=False),
    ParallelSpec(tp=2, pp=2, dp=16, zero=0, micro_batch=2, tp_comm_overlap=False, dp_comm_overlap=False),
    ParallelSpec(tp=2, pp=8, dp=4, pp_comm_overlap=False, vpp=2),
]
MOE_SPECS = [
    ParallelSpec(tp=2, pp=2, dp=16, ep=8),
    ParallelSpec(tp=1, pp=1, dp=64, ep=8, zero=2),
    ParallelSpec(tp=4, pp=2, dp=4, cp=2, ep=4, recompute="selective"),
    ParallelSpec(tp=2, pp=2, vpp=2, dp=16, ep=8, etp=1, ep_comm_overlap=True),
]
CASES = [("tiny", DENSE_SPECS), ("tiny_moe", MOE_SPECS)]
TRAIN = TrainSpec(seq_len=1024, global_batch=256)


def _results(model: ModelSpec, specs: list[ParallelSpec], xp: Any, train: TrainSpec = TRAIN) -> dict[str, list[float]]:
    res = nominal(model, train, sized_cluster(NUM_GPUS), LayoutBatch.from_specs(specs, xp), xp)
    mem = res.by_gpu_type["h100"].memory
    out = {"step": [float(v) for v in res.step_time_s_L], "mfu": [float(v) for v in res.mfu_L],
           "memory": [float(v) for v in mem.total_L], "activations": [float(v) for v in mem.activations_L]}
    for key in BREAKDOWN_KEYS:
        out[key] = [float(v) for v in res.breakdown_s[key]]
    return out


@pytest.mark.parametrize(("model_name", "specs"), CASES, ids=[c[0] for c in CASES])
def test_batch_equals_one_at_a_time(model_name: str, specs: list[ParallelSpec]) -> None:
    """N layouts in one batch give, element for element, the step time, breakdown and memory of each alone."""
    model = catalogue.model(model_name)
    batch = _results(model, specs, np)
    for i, spec in enumerate(specs):
        alone = _results(model, [spec], np)
        for key, values in alone.items():
            assert batch[key][i] == pytest.approx(values[0], rel=1e-12, abs=0.0), (key, spec)


@pytest.mark.parametrize(("model_name", "specs"), CASES, ids=[c[0] for c in CASES])
def test_batch_order_does_not_matter(model_name: str, specs: list[ParallelSpec]) -> None:
    """Reversing the batch reverses the results."""
    model = catalogue.model(model_name)
    fwd = _results(model, specs, np)
    rev = _results(model, specs[::-1], np)
    for key in fwd:
        assert fwd[key] == pytest.approx(rev[key][::-1], rel=1e-12)


def test_layout_columns_are_float64_in_both_backends() -> None:
    """LayoutBatch stores every field as float64 (array-api-strict rejects mixed int/float arithmetic)."""
    for xp in (np, xps):
        lay = LayoutBatch.from_specs(DENSE_SPECS, xp)
        assert lay.size == len(DENSE_SPECS)
        assert lay.tp_L.dtype == xp.float64
        assert [float(v) for v in lay.sp_L] == [1.0, 0.0, 0.0, 1.0, 1.0]
        assert [float(v) for v in lay.recompute_L] == [1.0, 0.0, 2.0, 0.0, 0.0]


def test_ops_agree_across_backends() -> None:
    """Per-op FLOPs and bytes of a dense and an MoE layer: array-api-strict == NumPy."""
    for name, specs in CASES:
        model = catalogue.model(name)
        a = layer_ops(model, TRAIN, LayoutBatch.from_specs(specs, np), np, moe=model.is_moe)
        b = layer_ops(model, TRAIN, LayoutBatch.from_specs(specs, xps), xps, moe=model.is_moe)
        for oa, ob in zip(a, b, strict=True):
            assert [float(v) for v in ob.flops_L] == pytest.approx([float(v) for v in oa.flops_L], rel=1e-12)
            assert [float(v) for v in ob.bytes_L] == pytest.approx([float(v) for v in oa.bytes_L], rel=1e-12)


def test_reduce_scatter_agrees_across_backends() -> None:
    """Fabric.reduce_scatter_s / all_reduce_s under array-api-strict equal NumPy's."""
    fabric = Fabric.of(sized_cluster(NUM_GPUS), catalogue.gpu("h100"))
    n, st, by = [1.0, 8.0, 8.0, 32.0], [1.0, 1.0, 8.0, 2.0], [1e6, 1e9, 1e9, 1e9]
    for fn in (fabric.reduce_scatter_s, fabric.all_reduce_s):
        ref = fn(np.asarray(by), np.asarray(n), np.asarray(st), np)
        got = fn(xps.asarray(by), xps.asarray(n), xps.asarray(st), xps)
        assert [float(v) for v in got] == pytest.approx([float(v) for v in ref], rel=1e-12)


STRICT_BOOL = ("BUG: bool arrays multiplied as numbers, which array-api-strict rejects ('Only numeric dtypes are "
               "allowed in __mul__'): emulator/cost/memory.py:205 (_state_bytes shard: (z >= stage) * ...)")


def test_p2p_agrees_across_backends() -> None:
    """Fabric.p2p_s (pipeline and context-parallel send/recv) under array-api-strict equals NumPy."""
    fabric = Fabric.of(sized_cluster(NUM_GPUS), catalogue.gpu("h100"))
    st, by = [1.0, 8.0, 64.0], [1e6, 1e9, 1e9]
    ref = fabric.p2p_s(np.asarray(by), np.asarray(st), np)
    got = fabric.p2p_s(xps.asarray(by), xps.asarray(st), xps)
    assert [float(v) for v in got] == pytest.approx([float(v) for v in ref], rel=1e-12)


def test_all_to_all_agrees_across_backends() -> None:
    """Fabric.all_to_all_s (expert dispatch/combine) under array-api-strict equals NumPy."""
    fabric = Fabric.of(sized_cluster(NUM_GPUS), catalogue.gpu("h100"))
    n, st, by = [1.0, 8.0, 32.0], [1.0, 8.0, 2.0], [1e6, 1e9, 1e9]
    ref = fabric.all_to_all_s(np.asarray(by), np.asarray(n), np.asarray(st), np)
    got = fabric.all_to_all_s(xps.asarray(by), xps.asarray(n), xps.asarray(st), xps)
    assert [float(v) for v in got] == pytest.approx([float(v) for v in ref], rel=1e-12)


def test_memory_agrees_across_backends() -> None:
    """memory_per_gpu under array-api-strict equals NumPy (weights, grads, optimizer, activations, total)."""
    model = catalogue.model("tiny")
    gpu = catalogue.gpu("h100")
    ref = memory_per_gpu(model, TRAIN, LayoutBatch.from_specs(DENSE_SPECS, np), gpu, np)
    got = memory_per_gpu(model, TRAIN, LayoutBatch.from_specs(DENSE_SPECS, xps), gpu, xps)
    for field in ("weights_L", "gradients_L", "optimizer_L", "activations_L", "total_L"):
        assert [float(v) for v in getattr(got, field)] == pytest.approx(
            [float(v) for v in getattr(ref, field)], rel=1e-12)


@pytest.mark.parametrize(("model_name", "specs"), CASES, ids=[c[0] for c in CASES])
def test_nominal_agrees_across_backends(model_name: str, specs: list[ParallelSpec]) -> None:
    """nominal(..., xp=array_api_strict) gives NumPy's step time, breakdown and memory, element for element."""
    model = catalogue.model(model_name)
    ref = _results(model, specs, np)
    got = _results(model, specs, xps)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key


def test_flex_dispatch_agrees_across_backends() -> None:
    """The node-deduplicating dispatcher with group-limited routing (emulator/cost/routing.py) and the all-to-all
    overlap under array-api-strict give NumPy's numbers."""
    model = dataclasses.replace(catalogue.model("tiny_moe"), router_groups=2, router_group_topk=1)
    train = dataclasses.replace(TRAIN, moe_dispatcher="flex")
    ref = _results(model, MOE_SPECS, np, train)
    got = _results(model, MOE_SPECS, xps, train)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key


def _random_layouts(n: int, xp: Any, seed: int = 3) -> LayoutBatch:
    """``n`` layouts of 64 GPUs with repeated shapes (more than MIN_BATCH, so the shape dedupe is on)."""
    rng = np.random.default_rng(seed)
    tp, pp, cp = rng.choice([1, 2, 4], n), rng.choice([1, 2, 4], n), rng.choice([1, 2], n)
    dp = NUM_GPUS // (tp * pp * cp)
    ep = np.where((dp * cp) % 4 == 0, rng.choice([1, 2, 4], n), 1)
    cols = {"tp_L": tp, "pp_L": pp, "cp_L": cp, "dp_L": dp, "ep_L": ep,
            "vpp_L": np.where(pp > 1, rng.choice([1, 2], n), 1), "mb_L": rng.choice([1, 2], n),
            "zero_L": rng.choice([0, 1, 2, 3], n), "recompute_L": rng.choice([0, 1, 2], n),
            **{name: rng.choice([0, 1], n) for name in ("sp_L", "tp_overlap_L", "dp_overlap_L", "pp_overlap_L",
                                                       "ep_overlap_L")}}
    return LayoutBatch.from_columns(xp, **{k: xp.asarray(v.astype(np.float64)) for k, v in cols.items()})


@pytest.mark.parametrize("xp", [np, xps], ids=["numpy", "array_api_strict"])
@pytest.mark.parametrize("model_name", ["tiny", "tiny_moe"])
def test_shape_dedupe_is_exact(model_name: str, xp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large batch is evaluated once per distinct stage shape and gathered back (LayerShapes); the result
    equals evaluating every layout on its own (dedupe switched off), to the last bit."""
    model, lay = catalogue.model(model_name), _random_layouts(8000, xp)
    assert shapes_mod.LayerShapes.of(lay, xp).small is not None, "the dedupe must be on for this batch"

    def run() -> dict[str, np.ndarray]:
        res = nominal(model, TRAIN, sized_cluster(NUM_GPUS), lay, xp)
        mem = res.by_gpu_type["h100"].memory
        out = {k: np.asarray([float(v) for v in res.breakdown_s[k]]) for k in BREAKDOWN_KEYS}
        out["step"] = np.asarray([float(v) for v in res.step_time_s_L])
        for f in ("weights_L", "gradients_L", "optimizer_L", "activations_L", "total_L"):
            out[f] = np.asarray([float(v) for v in getattr(mem, f)])
        return out

    deduped = run()
    monkeypatch.setattr(shapes_mod.LayerShapes, "of", classmethod(lambda cls, lay, xp: cls(None, None)))
    alone = run()
    for key, values in alone.items():
        assert np.all(np.isfinite(deduped[key])), key
        np.testing.assert_array_equal(deduped[key], values, err_msg=key)
