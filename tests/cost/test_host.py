"""The host (CPU) launch model of emulator.cost.host, recomputed by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import catalogue
from emulator.cost.host import (
    HostStep,
    backward_launches,
    host_launches,
    layer_host_idle_s,
    merged_layer_idle_s,
    synced_idle_s,
)
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import Op, layer_ops
from emulator.cost.roofline import block_time
from emulator.cost.step import step_time
from emulator.spec import ConfigError, ParallelSpec, TrainSpec
from tests.conftest import make_cluster

US = 1e-6


def _a(x: float) -> np.ndarray:
    return np.array([x])


def test_synced_pass_by_hand() -> None:
    """c = 10 us. Op 1: two kernels of 2.5 us each; op 2: one kernel of 100 us. Kernel 1 is issued at 10 and
    runs to 12.5, kernel 2 is issued at 20 and runs to 22.5, op 2 is issued at 30 and runs to 130: busy 105,
    idle 25."""
    steps = [HostStep(_a(5 * US), 2.0), HostStep(_a(100 * US), 1.0)]
    idle = synced_idle_s(steps, 10 * US, np)
    assert idle[0] == pytest.approx(25 * US)


def test_synced_pass_gpu_bound_by_hand() -> None:
    """c = 1 us, one 50 us kernel then ten 0.5 us kernels: the host issues the ten by 11 us while the first
    kernel runs to 51 us; the only idle is the first launch, 1 us."""
    steps = [HostStep(_a(50 * US), 1.0), HostStep(_a(5 * US), 10.0)]
    assert synced_idle_s(steps, 1 * US, np)[0] == pytest.approx(1 * US)


def test_launches_varying_over_layouts_match_one_layout_at_a_time() -> None:
    """An op's launches may be an array over layouts, zero where the op is absent (the alltoall sort with one local
    expert): each layout's idle equals the same pass computed with its own scalar launch counts, and a zero-launch
    step adds its GPU time and no host launch."""
    c = 10 * US
    k_L = np.array([4.0, 0.0])
    g_L = np.array([8 * US, 0.0])
    steps = [HostStep(np.array([5 * US, 5 * US]), 2.0), HostStep(g_L, k_L), HostStep(np.array([100 * US] * 2), 1.0)]
    idle_L = synced_idle_s(steps, c, np)
    for i in range(2):
        one = [HostStep(_a(5 * US), 2.0), HostStep(_a(float(g_L[i])), float(k_L[i])), HostStep(_a(100 * US), 1.0)]
        assert idle_L[i] == pytest.approx(synced_idle_s(one, c, np)[0], abs=1e-15)
    assert idle_L[1] == pytest.approx(25 * US)  # as test_synced_pass_by_hand: the absent op changes nothing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1e-3), st.integers(0, 40)), min_size=1, max_size=12),
       st.floats(1e-7, 1e-4))
def test_synced_idle_is_at_least_the_aggregate_deficit(ops: list[tuple[float, int]], c: float) -> None:
    """Starting from an empty queue the GPU cannot finish before the host has issued the last kernel, nor
    before it has done its own work: idle >= max(H - G, 0), and >= 0."""
    steps = [HostStep(_a(g), float(k)) for g, k in ops]
    idle = synced_idle_s(steps, c, np)[0]
    host = sum(k for _, k in ops) * c
    gpu = sum(g for g, _ in ops)
    assert idle >= max(host - gpu, 0.0) - 1e-12


def _moe_case(**train_changes: object) -> tuple[list, TrainSpec, LayoutBatch]:
    model = catalogue.model("qwen3_30b_a3b")
    train = TrainSpec(seq_len=4096, global_batch=512, precision="fp8", **train_changes)  # type: ignore[arg-type]
    lay = LayoutBatch.from_specs([ParallelSpec(tp=1, pp=1, dp=8, ep=8, etp=1, micro_batch=4)], np)
    return layer_ops(model, train, lay, np, True), train, lay


def _n_attn(ops: list[Op]) -> int:
    """How many of an MoE layer's ops are its attention part (the MoE block starts at its pre-MLP norm)."""
    names = [op.name for op in ops]
    return names.index("mlp_norm")


def test_graph_scopes_replace_kernel_launches_by_one_graph_launch() -> None:
    ops, train, _ = _moe_case()
    eager = host_launches(ops, train)
    assert [float(np.asarray(n).max()) for n in eager] == [float(np.asarray(op.kernels).max()) for op in ops]
    scoped = host_launches(ops, dataclasses.replace(train, cuda_graph_scope=("attn", "moe_router", "moe_preprocess")))
    names = [op.name for op in ops]
    # Three graphs, one launch each: the attention block, the router (mlp_norm, router, router_topk) and the
    # dispatcher's preprocessing; everything else keeps its kernels.
    captured = [i for i, op in enumerate(ops) if op.graph_scope in ("attn", "moe_router", "moe_preprocess")]
    assert [float(scoped[i]) for i in captured].count(1.0) == 3
    assert sum(float(scoped[i]) for i in captured) == 3.0
    for i, op in enumerate(ops):
        if i not in captured:
            assert np.all(np.asarray(scoped[i]) == np.asarray(op.kernels)), names[i]
    full = host_launches(ops, dataclasses.replace(train, cuda_graph_scope=("full_iteration",)))
    assert all(n == 0.0 for n in full)


# Backward kernels per forward kernel, written out: GEMMs (data and weight gradients) 2, fused attention 3
# (FlashAttention-2: dot(dO, O), the main kernel, the dQ conversion), norms 2 (TE's backward and its
# weight-gradient finalize), the dispatcher's token counting 0 (no gradient), every other element-wise or copy op 1.
BWD_PER_KERNEL = {"qkv_proj": 2.0, "out_proj": 2.0, "router": 2.0, "expert_fc1": 2.0, "expert_fc2": 2.0,
                  "attention_core": 3.0, "attn_norm": 2.0, "mlp_norm": 2.0, "qk_norm": 2.0, "moe_preprocess": 0.0}


def test_backward_launches_per_op_by_hand() -> None:
    """Eager backward launches of each op of an MoE layer: its kernels times the backward kernels of its kind."""
    ops, train, _ = _moe_case()
    eager = backward_launches(ops, train)
    for op, b in zip(ops, eager, strict=True):
        per = BWD_PER_KERNEL.get(op.name, 1.0)
        assert float(np.asarray(b).max()) == per * float(np.asarray(op.kernels).max()), op.name
    # a Qwen3-30B MoE layer eager: forward launches against backward launches
    fwd = sum(float(np.asarray(n).max()) for n in host_launches(ops, train))
    assert sum(float(np.asarray(n).max()) for n in eager) < 2.0 * fwd


def test_backward_replays_a_captured_scope_once() -> None:
    """A captured scope replays its backward graph, one launch per run of its ops, as in forward; eager ops keep
    their backward kernels; nothing under a full-iteration graph."""
    ops, train, _ = _moe_case()
    eager = backward_launches(ops, train)
    scoped_train = dataclasses.replace(train, cuda_graph_scope=("attn", "moe_router", "moe_preprocess"))
    scoped = backward_launches(ops, scoped_train)
    fwd = host_launches(ops, scoped_train)
    for op, b, f in zip(ops, scoped, fwd, strict=True):
        if op.graph_scope in ("attn", "moe_router", "moe_preprocess"):
            assert b == f
        else:
            assert np.all(np.asarray(b) == np.asarray(eager[ops.index(op)]))
    full = backward_launches(ops, dataclasses.replace(train, cuda_graph_scope=("full_iteration",)))
    assert all(n == 0.0 for n in full)


def _layer_idle(gpu_name: str, **train_changes: object) -> float:
    ops, train, _ = _moe_case(**train_changes)
    gpu = catalogue.gpu(gpu_name)
    blk = block_time(ops, gpu, train.precision, np)
    zero = np.zeros(1)
    idle = layer_host_idle_s(ops, _n_attn(ops), [t.fwd_s_L for t in blk.by_op], [t.bwd_s_L for t in blk.by_op], zero,
                             zero, zero, zero, gpu, train, True, np)
    return float(idle[0])


def test_unsynced_idle_is_the_aggregate_deficit_by_hand() -> None:
    """Without a sync (token drop) forward idles max(H - G, 0) and backward max(H_bwd - G_bwd, 0), H_bwd the
    backward launches (per op, plus the two backward all-to-alls) times the launch cost."""
    ops, train, _ = _moe_case(moe_host_sync=False)
    gpu = catalogue.gpu("gb200")
    blk = block_time(ops, gpu, train.precision, np)
    zero = np.zeros(1)
    idle = layer_host_idle_s(ops, _n_attn(ops), [t.fwd_s_L for t in blk.by_op], [t.bwd_s_L for t in blk.by_op], zero,
                             zero, zero, zero, gpu, train, True, np)
    launches = sum(float(np.asarray(n).max()) for n in host_launches(ops, train)) + 2.0  # + dispatch and combine
    host_fwd = launches * gpu.host_launch_s
    bwd_launches = sum(BWD_PER_KERNEL.get(op.name, 1.0) * float(np.asarray(op.kernels).max()) for op in ops) + 2.0
    host_bwd = bwd_launches * gpu.host_launch_s
    expected = max(host_fwd - float(blk.fwd_s_L[0]), 0.0) + max(host_bwd - float(blk.bwd_s_L[0]), 0.0)
    assert float(idle[0]) == pytest.approx(expected)
    assert expected > 0.0  # Qwen3-30B on GB200 at MBS 4 is host-bound when eager


def test_grace_host_is_slower_and_graphs_remove_the_idle() -> None:
    """The same layer idles longer on GB200's Grace (37.08 us per launch) than on B200's x86 host (13.48 us),
    and a full-iteration graph leaves no host idle on either."""
    assert catalogue.gpu("gb200").host_launch_s == pytest.approx(37.08 * US)
    assert catalogue.gpu("b200").host_launch_s == pytest.approx(13.48 * US)
    assert _layer_idle("gb200") > _layer_idle("b200") >= 0.0
    assert _layer_idle("gb200") > _layer_idle("gb200", cuda_graph_scope=("attn", "moe_router", "moe_preprocess"))
    assert _layer_idle("gb200", cuda_graph_scope=("full_iteration",)) == 0.0


def test_bad_graph_scope_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.cuda_graph_scope"):
        TrainSpec(seq_len=1, global_batch=1, cuda_graph_scope=("attention",))


def _op(name: str, kernels: float, scope: str = "") -> Op:
    """A hand-made op with two backward launches per forward kernel (as a GEMM has)."""
    zero = np.zeros(1)
    return Op(name, "memory", zero, zero, zero, kernels=kernels, graph_scope=scope, bwd_launches=2.0)


def test_merged_layer_idle_by_hand() -> None:
    """A three-op layer, c = 10 us, two backward launches per kernel: attention "a" (1 kernel; 10 us forward, 20
    backward, + 5 us recompute), "moe_preprocess" (1 kernel, 1 / 2 us; B's sync at its end) and the MLP op "m"
    (2 kernels, 20 / 40 us). After
    the sync: m backward (4 launches), preprocess backward (2), m forward (2), a backward (2), then the next
    layer's a forward (1) and preprocess forward (1). F_i = max(F_(i-1) + g, H + c + g, H + k c + g / k):
    m bwd 50 (H 40); pre bwd max(52, 52, 61) = 61 (H 60); m fwd max(81, 90, 90) = 90 (H 80);
    a bwd max(115, 115, 112.5) = 115 (H 100); a fwd max(125, 120, 120) = 125 (H 110); pre fwd max(126, 121, 121)
    = 126. Busy 40 + 2 + 20 + 25 + 10 + 1 = 98 us: idle 28 us."""
    ops = [_op("a", 1.0, "attn"), _op("moe_preprocess", 1.0), _op("m", 2.0)]
    fwd = [_a(10 * US), _a(1 * US), _a(20 * US)]
    bwd = [_a(20 * US), _a(2 * US), _a(40 * US)]
    train = TrainSpec(seq_len=8, global_batch=1)
    gpu = dataclasses.replace(catalogue.gpu("h100"), host_launch_s=10 * US)
    got = merged_layer_idle_s(ops, 1, fwd, bwd, _a(5 * US), gpu, train, np)[0]
    seq = [HostStep(_a(40 * US), 4.0), HostStep(_a(2 * US), 2.0), HostStep(_a(20 * US), 2.0),
           HostStep(_a(25 * US), 2.0), HostStep(_a(10 * US), 1.0), HostStep(_a(1 * US), 1.0)]
    assert got == pytest.approx(synced_idle_s(seq, 10 * US, np)[0])
    assert got == pytest.approx(28 * US)
    # With a 6-kernel attention block captured in a graph, its backward is one replay instead of 12 launches.
    heavy = [_op("a", 6.0, "attn"), *ops[1:]]
    eager = merged_layer_idle_s(heavy, 1, fwd, bwd, _a(5 * US), gpu, train, np)[0]
    captured = merged_layer_idle_s(heavy, 1, fwd, bwd, _a(5 * US), gpu,
                                   dataclasses.replace(train, cuda_graph_scope=("attn",)), np)[0]
    assert captured < eager


def test_recomputed_moe_block_waits_at_its_sync_in_backward_by_hand() -> None:
    """The layer of test_merged_layer_idle_by_hand (c = 10 us; a: 10 / 20 us, 1 kernel; moe_preprocess: 1 / 2 us,
    1 kernel; m: 20 / 40 us, 2 kernels; two backward launches per kernel), unmerged, with the MoE block (preprocess
    and m) recomputed. Forward from the sync: m (F 30, H 20), a (40, H 30), preprocess (41, H 40); busy 31: idle 10.
    Backward from the re-run's sync: m again (F 30, H 20), m backward max(70, 70, 70) = 70 (H 60), preprocess
    backward max(72, 72, 81) = 81 (H 80), a backward max(101, 110, 110) = 110 (H 100), the next layer's preprocess
    again max(111, 111, 111) = 111; busy 20 + 40 + 2 + 20 + 1 = 83: idle 28. Total 38 us."""
    ops = [_op("a", 1.0, "attn"), _op("moe_preprocess", 1.0), _op("m", 2.0)]
    fwd = [_a(10 * US), _a(1 * US), _a(20 * US)]
    bwd = [_a(20 * US), _a(2 * US), _a(40 * US)]
    train = TrainSpec(seq_len=8, global_batch=1)
    gpu = dataclasses.replace(catalogue.gpu("h100"), host_launch_s=10 * US)
    zero, one = _a(0.0), _a(1.0)
    got = layer_host_idle_s(ops, 1, fwd, bwd, zero, zero, zero, zero, gpu, train, True, np,
                            recompute_weights=[zero, one, one])
    assert got[0] == pytest.approx(38 * US)
    # Full recomputation re-runs the same block (and the attention, before the next sync): one more 10 us kernel
    # after a's backward, issued at H 100 + 10: a again max(120, 120, 120) = 120, preprocess max(121, 121, 121):
    # busy 93, idle 28 again.
    full = layer_host_idle_s(ops, 1, fwd, bwd, zero, zero, zero, one, gpu, train, True, np)
    assert full[0] == pytest.approx(38 * US)


def test_a_recomputed_moe_block_syncs_the_backward_at_step_level() -> None:
    """Qwen3-30B on GB200 (Grace host): recomputing the moe module under dropless dispatch re-runs the host sync, so
    the backward can no longer run ahead and the host wait grows; with token drop (no sync) it does not."""
    model = catalogue.model("qwen3_30b_a3b")
    gpu = catalogue.gpu("gb200")
    cluster = make_cluster(gpu="gb200", num_gpus=8)

    def other(sync: bool, modules: tuple[str, ...]) -> float:
        train = TrainSpec(seq_len=4096, global_batch=512, precision="fp8", moe_host_sync=sync)
        lay = LayoutBatch.from_specs([ParallelSpec(tp=1, pp=1, dp=8, ep=8, etp=1, micro_batch=4,
                                                   recompute="selective", recompute_modules=modules)], np)
        return float(step_time(model, train, cluster, gpu, lay, np).breakdown_s["other"][0])

    assert other(True, ("moe",)) > 2.0 * other(True, ("moe_act",))
    assert other(False, ("moe",)) < other(True, ("moe",))


def test_merged_idle_applies_only_with_the_overlap_and_a_sync() -> None:
    """Step level: under ep_comm_overlap with dropless dispatch the host wait is the merged one for the paired
    micro-batches; token drop (no sync) or no overlap leave it unchanged."""
    model = catalogue.model("qwen3_30b_a3b")
    gpu = catalogue.gpu("gb200")
    cluster = make_cluster(gpu="gb200", num_gpus=8)

    def other(overlap: bool, sync: bool) -> float:
        train = TrainSpec(seq_len=4096, global_batch=512, precision="fp8", moe_host_sync=sync)
        lay = LayoutBatch.from_specs([ParallelSpec(tp=1, pp=1, dp=8, ep=8, etp=1, micro_batch=4,
                                                   ep_comm_overlap=overlap)], np)
        return float(step_time(model, train, cluster, gpu, lay, np).breakdown_s["other"][0])

    assert other(True, True) != other(False, True)
    assert other(True, False) == other(False, False)
