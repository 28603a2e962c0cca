"""Selective recomputation by module (``parallel.recompute_modules``, Megatron-LM ``--recompute-modules``).

Each module's saved activation bytes, re-run forward time, re-run communication, host launches and extra
FLOPs, recomputed by hand from the op list and the per-layer activation formulas of
``emulator/cost/memory.py`` (notation there: ``T`` tokens per micro-batch, ``Tn = T/tp`` with sequence
parallelism, ``k`` experts per token, ``f_e`` expert width, ``g = 2`` for a gated MLP)."""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.collectives import Fabric
from emulator.cost.flops import recompute_flops_per_token
from emulator.cost.host import host_launches
from emulator.cost.layout import LayoutBatch
from emulator.cost.memory import StageMemory, activation_bytes_per_layer, recompute_saved_bytes, stored_bytes_per_layer
from emulator.cost.ops import layer_ops
from emulator.cost.roofline import block_time
from emulator.cost.step import layer_time, nominal
from emulator.spec import ConfigError, ModelSpec, ParallelSpec, TrainSpec
from emulator.spec.parallel import RECOMPUTE_MODULES
from tests.conftest import make_cluster, one_layout

H, S, MB, TP = 1024, 2048, 2, 2
MOE = ModelSpec(name="moe", num_layers=4, hidden_size=H, num_heads=16, num_kv_heads=4, head_dim=64,
                ffn_hidden_size=1024, num_experts=8, experts_per_token=2, expert_ffn_hidden_size=512,
                vocab_size=32000, gated_mlp=True)
"""A small MoE model with a shared expert (ffn_hidden_size > 0) and GQA attention."""
DENSE = ModelSpec(name="dense", num_layers=4, hidden_size=H, num_heads=16, num_kv_heads=4, head_dim=64,
                  ffn_hidden_size=4096, vocab_size=32000, gated_mlp=True)
MLA = catalogue.model("deepseek_v3")
TRAIN = TrainSpec(seq_len=S, global_batch=64, moe_load_imbalance=1.25)
GPU = catalogue.gpu("h100")


def lay(modules: tuple[str, ...] = ("core_attn",), recompute: str = "selective", **kw: object) -> LayoutBatch:
    base: dict[str, object] = dict(tp=TP, dp=4, ep=2, micro_batch=MB, recompute=recompute)
    if recompute == "selective":
        base["recompute_modules"] = modules
    return one_layout(**{**base, **kw})


def stored(model: ModelSpec, modules: tuple[str, ...], moe: bool) -> float:
    return float(stored_bytes_per_layer(model, TRAIN, lay(modules), np, moe)[0])


def none_stored(model: ModelSpec, moe: bool) -> float:
    return float(stored_bytes_per_layer(model, TRAIN, lay(recompute="none"), np, moe)[0])


T = MB * S
Tn = T / TP  # sequence parallelism is on (tp > 1)


# ---------------------------------------------------------------- the spec


def test_default_modules_are_megatrons_core_attn() -> None:
    """--recompute-modules defaults to core_attn: selective without a list equals the explicit default."""
    assert ParallelSpec(recompute="selective").recompute_modules == ("core_attn",)
    a = stored_bytes_per_layer(MOE, TRAIN, one_layout(tp=TP, dp=4, ep=2, micro_batch=MB, recompute="selective"),
                               np, True)
    assert float(a[0]) == stored(MOE, ("core_attn",), True)


@pytest.mark.parametrize("kwargs, key, words", [
    (dict(recompute="selective", recompute_modules=["attn"]), "parallel.recompute_modules",
     "each entry must be one of"),
    (dict(recompute="selective", recompute_modules=["moe_act", "moe_act"]), "parallel.recompute_modules",
     "must not repeat"),
    (dict(recompute="none", recompute_modules=["moe_act"]), "parallel.recompute_modules",
     "only applies with parallel.recompute=selective"),
    (dict(recompute="full", recompute_modules=["mlp"]), "parallel.recompute_modules",
     "only applies with parallel.recompute=selective"),
    (dict(recompute="selective", recompute_modules=[]), "parallel.recompute_modules", "at least one module"),
    (dict(recompute="selective", recompute_modules="moe_act"), "parallel.recompute_modules", "must be a list"),
])
def test_bad_module_lists_name_the_key(kwargs: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        ParallelSpec(**kwargs)  # type: ignore[arg-type]
    assert err.value.key == key and words in err.value.allowed


# ---------------------------------------------------------------- memory, by hand


def test_moe_act_drops_the_experts_activation_output() -> None:
    """moe_act: the busiest GPU's f_imb * T k / tp routed pairs no longer keep their activation output,
    2 B x f_e each."""
    saved = none_stored(MOE, True) - stored(MOE, ("moe_act",), True)
    assert saved == pytest.approx(1.25 * 2.0 * T * 2 * 512 / TP, rel=1e-12)


def test_layernorm_drops_the_separate_norm_outputs() -> None:
    """layernorm: an MoE layer's pre-MLP norm is its own module (its output 2 Tn h); a GQA layer's input norm is fused
    into the QKV GEMM and a dense MLP's norm into fc1, so a dense GQA layer saves nothing; MLA's input norm is
    separate, so a DeepSeek-V3 MoE layer saves two norm outputs."""
    assert none_stored(MOE, True) - stored(MOE, ("layernorm",), True) == pytest.approx(2.0 * Tn * H, rel=1e-12)
    assert none_stored(DENSE, False) - stored(DENSE, ("layernorm",), False) == 0.0
    saved = float(recompute_saved_bytes(MLA, TRAIN, lay(), np, True)["layernorm"][0])
    assert saved == pytest.approx(2 * 2.0 * Tn * MLA.hidden_size, rel=1e-12)


def test_mlp_drops_a_dense_mlps_norm_output_and_internals() -> None:
    """mlp (dense layers only): the norm output 2 Tn h, fc1's output 2 g T f / tp and the activation output
    2 T f / tp; an MoE layer has no such module."""
    f = 4096
    expected = 2.0 * Tn * H + 2.0 * 2 * T * f / TP + 2.0 * T * f / TP
    assert none_stored(DENSE, False) - stored(DENSE, ("mlp",), False) == pytest.approx(expected, rel=1e-12)
    assert none_stored(MOE, True) - stored(MOE, ("mlp",), True) == 0.0


def test_moe_contains_moe_act_and_shared_experts() -> None:
    """moe drops everything the block keeps past its input: router probabilities 4 Tn E, the routed inputs
    f_imb 2 T k etp h / tp and internals f_imb mlp(T k, f_e), the shared MLP's internals; naming moe_act or
    shared_experts beside it changes nothing (counted once)."""
    k, E, fe, fs, etp = 2, 8, 512, 1024, TP
    mlp = lambda tokens, f: 2.0 * 2 * tokens * f / TP + 2.0 * tokens * f / TP  # noqa: E731
    expected = 4.0 * Tn * E + 1.25 * (2.0 * T * k * etp * H / TP + mlp(T * k, fe)) + mlp(T, fs)
    moe_only = none_stored(MOE, True) - stored(MOE, ("moe",), True)
    assert moe_only == pytest.approx(expected, rel=1e-12)
    assert stored(MOE, ("moe", "moe_act", "shared_experts"), True) == pytest.approx(stored(MOE, ("moe",), True),
                                                                                       rel=1e-12)
    shared = none_stored(MOE, True) - stored(MOE, ("shared_experts",), True)
    assert shared == pytest.approx(mlp(T, fs), rel=1e-12)


def test_mla_up_proj_drops_the_up_projected_qkv() -> None:
    """mla_up_proj: Q (a d_qk), K (a d_qk) and V (a d_v) after the up-projections, 2 B each, per token / tp."""
    m, a = MLA, MLA.num_heads
    saved = float(recompute_saved_bytes(m, TRAIN, lay(), np, True)["mla_up_proj"][0])
    assert saved == pytest.approx(2.0 * T * a * (2 * m.qk_head_dim + m.value_head_dim) / TP, rel=1e-12)
    assert float(recompute_saved_bytes(MOE, TRAIN, lay(), np, True)["mla_up_proj"][0]) == 0.0


def test_every_module_with_every_other_never_stores_more_than_none() -> None:
    for model, moe in ((MOE, True), (DENSE, False), (MLA, True)):
        for m in RECOMPUTE_MODULES:
            assert stored(model, (m,), moe) <= none_stored(model, moe)
        assert stored(model, RECOMPUTE_MODULES, moe) >= float(
            stored_bytes_per_layer(model, TRAIN, lay(recompute="full"), np, moe)[0])


# ---------------------------------------------------------------- time, by hand


def _layer(model: ModelSpec, modules: tuple[str, ...], moe: bool, recompute: str = "selective") -> object:
    fabric = Fabric.of(make_cluster("dgx_h100", "h100", num_gpus=64), GPU)
    return layer_time(model, TRAIN, lay(modules, recompute=recompute), GPU, fabric, np, moe)


def _fwd(model: ModelSpec, moe: bool, names: set[str]) -> float:
    ops = layer_ops(model, TRAIN, lay(), np, moe)
    blk = block_time(ops, GPU, TRAIN.precision, np)
    return sum(float(t.fwd_s_L[0]) for t in blk.by_op if t.name in names)


@pytest.mark.parametrize("model, moe, modules, names", [
    (MOE, True, ("core_attn",), {"attention_core"}),
    (MOE, True, ("moe_act",), {"expert_act"}),
    (MOE, True, ("layernorm",), {"mlp_norm"}),
    (MOE, True, ("shared_experts",), {"shared_fc1", "shared_act", "shared_fc2"}),
    (MOE, True, ("moe", "moe_act"), {"router", "router_topk", "moe_preprocess", "moe_permute", "moe_sort_chunks",
                                     "expert_fc1", "expert_act", "expert_fc2", "shared_fc1", "shared_act",
                                     "shared_fc2"}),
    (DENSE, False, ("mlp",), {"mlp_fc1", "mlp_act", "mlp_fc2"}),
    (DENSE, False, ("layernorm", "mla_up_proj", "moe_act"), set()),
    (MLA, True, ("mla_up_proj",), {"qkv_up_proj", "rotary"}),
])
def test_recompute_time_is_the_modules_forward(model: ModelSpec, moe: bool, modules: tuple[str, ...],
                                               names: set[str]) -> None:
    """Selective recompute time = the forward seconds of the ops in the named modules (each op once)."""
    got = float(_layer(model, modules, moe).recompute_s_L[0])  # type: ignore[attr-defined]
    assert got == pytest.approx(_fwd(model, moe, names), rel=1e-12, abs=0.0)


def test_mlp_modules_rerun_their_tp_collectives_and_moe_its_all_to_all() -> None:
    """Re-running an MLP re-runs its all-gather and reduce-scatter: 2 of the layer's 4 TP blocks of tp_fwd;
    moe also re-runs the dispatch and combine (one more ep_fwd) and the expert-TP gathers; none re-runs nothing."""
    none = _layer(DENSE, (), False, recompute="none")
    dense = _layer(DENSE, ("mlp",), False)
    assert float(dense.tp_recompute_s_L[0]) == pytest.approx(float(none.tp_fwd_s_L[0]) / 2.0, rel=1e-12)  # type: ignore[attr-defined]
    moe = _layer(MOE, ("moe",), True)
    assert float(moe.ep_recompute_s_L[0]) == pytest.approx(float(moe.ep_fwd_s_L[0]), rel=1e-12)  # type: ignore[attr-defined]
    assert float(moe.ep_fwd_s_L[0]) > 0.0  # type: ignore[attr-defined]
    act = _layer(MOE, ("moe_act",), True)
    assert float(act.ep_recompute_s_L[0]) == 0.0 and float(act.tp_recompute_s_L[0]) == 0.0  # type: ignore[attr-defined]


def test_recompute_launches_reach_the_host() -> None:
    """On a host-bound layer (eager, no sync), the re-run ops' forward launches add c each to the backward's host
    time: moe_act adds one launch (the activation kernel)."""
    ops = layer_ops(MOE, TRAIN, lay(), np, True)
    launches = dict(zip([op.name for op in ops], host_launches(ops, TRAIN), strict=True))
    assert launches["expert_act"] == 1.0
    slow = GPU.__class__(**{**GPU.__dict__, "host_launch_s": 1e-3})  # make the host the bottleneck
    fabric = Fabric.of(make_cluster("dgx_h100", "h100", num_gpus=64), slow)
    base = layer_time(MOE, TRAIN, lay(recompute="none"), slow, fabric, np, True)
    act = layer_time(MOE, TRAIN, lay(("moe_act",)), slow, fabric, np, True)
    extra_gpu = float(act.recompute_s_L[0])
    # The backward is host-bound: its idle grows by one launch less the GPU time the re-run adds.
    assert float(act.host_idle_s_L[0]) - float(base.host_idle_s_L[0]) == pytest.approx(1e-3 - extra_gpu, rel=1e-9)


# ---------------------------------------------------------------- FLOPs (HFU), by hand


def test_recompute_flops_per_module_by_hand() -> None:
    """2 FLOPs per weight a token meets in each module's matmuls, per layer that has the module."""
    m, L, s = MOE, MOE.num_layers, S
    a, d = m.num_heads, m.head_dim
    assert recompute_flops_per_token(m, s, "selective") == pytest.approx(2 * L * s * a * (2 * d), rel=1e-12)
    shared = 3 * H * 1024
    assert recompute_flops_per_token(m, s, "selective", ("shared_experts",)) == pytest.approx(2 * L * shared)
    moe = 2 * L * (2 * 3 * H * 512 + H * 8 + shared)
    assert recompute_flops_per_token(m, s, "selective", ("moe",)) == pytest.approx(moe)
    assert recompute_flops_per_token(m, s, "selective", ("moe", "shared_experts")) == pytest.approx(moe)
    assert recompute_flops_per_token(m, s, "selective", ("moe_act", "layernorm")) == 0.0
    assert recompute_flops_per_token(DENSE, s, "selective", ("mlp",)) == pytest.approx(2 * 4 * 3 * H * 4096)
    up = MLA.q_lora_rank * MLA.num_heads * MLA.qk_head_dim + MLA.kv_lora_rank * MLA.num_heads * (
        MLA.head_dim + MLA.value_head_dim)
    assert recompute_flops_per_token(MLA, s, "selective", ("mla_up_proj",)) == pytest.approx(2 * 61 * up)


def test_hfu_counts_the_selected_modules() -> None:
    """nominal's HFU adds the recomputed FLOPs of the layout's modules: (HFU - MFU) x peak x step x GPUs / tokens =
    the per-token recompute FLOPs."""
    cluster = make_cluster("dgx_h100", "h100", num_gpus=8)
    for mods in (("core_attn",), ("moe",), ("moe_act",)):
        layout = LayoutBatch.from_specs([ParallelSpec(tp=2, dp=4, ep=2, micro_batch=MB, recompute="selective",
                                                      recompute_modules=mods)], np)
        res = nominal(MOE, TRAIN, cluster, layout, np)
        tokens = TRAIN.global_batch * TRAIN.seq_len
        extra = (float(res.hfu_L[0]) - float(res.mfu_L[0])) * GPU.peak_flops_per_s("bf16") \
            * float(res.step_time_s_L[0]) * 8 / tokens
        assert extra == pytest.approx(recompute_flops_per_token(MOE, S, "selective", mods), rel=1e-9, abs=1e-6)


def test_a_batch_of_mixed_module_lists_matches_each_layout_alone() -> None:
    """Layouts with different module lists in one batch (more than the shape-dedupe threshold) give each the
    step and memory it gets alone."""
    cluster = make_cluster("dgx_h100", "h100", num_gpus=8)
    lists = [("core_attn",), ("moe_act",), ("moe", "layernorm"), ("shared_experts", "core_attn")]
    specs = [ParallelSpec(tp=2, dp=4, ep=2, micro_batch=MB, recompute="selective", recompute_modules=lists[i % 4])
             for i in range(80)]
    batch = nominal(MOE, TRAIN, cluster, LayoutBatch.from_specs(specs, np), np)
    for i in range(4):
        alone = nominal(MOE, TRAIN, cluster, LayoutBatch.from_specs([specs[i]], np), np)
        assert float(batch.step_time_s_L[i]) == pytest.approx(float(alone.step_time_s_L[0]), rel=1e-12)
        mem_b = batch.by_gpu_type["h100"].memory.total_L[i]
        mem_a = alone.by_gpu_type["h100"].memory.total_L[0]
        assert float(mem_b) == pytest.approx(float(mem_a), rel=1e-12)


def test_recomputing_a_module_holds_one_layers_dropped_bytes_again() -> None:
    """While a layer's backward re-runs its modules, what they dropped for that layer is held again: a stage's
    fixed activation bytes (a middle stage: no logits) are one layer's dropped bytes (the moe module: router
    probabilities, expert inputs and internals, shared MLP); none and the default core_attn with fused attention
    hold (almost) nothing extra; full holds one whole layer."""
    def mid_fixed(layout: LayoutBatch) -> float:
        return float(StageMemory.of(MOE, TRAIN, layout, np).mid_act_fixed_L[0])

    kw = dict(pp=4, micro_batch=MB)
    moe_lay = lay(("moe",), **kw)
    saved = float(recompute_saved_bytes(MOE, TRAIN, moe_lay, np, True)["moe"][0])
    assert mid_fixed(moe_lay) == pytest.approx(saved, rel=1e-12)
    assert mid_fixed(lay(recompute="none", **kw)) == 0.0
    core = float(recompute_saved_bytes(MOE, TRAIN, lay(**kw), np, True)["core_attn"][0])
    assert mid_fixed(lay(**kw)) == pytest.approx(core, rel=1e-12)
    full = lay(recompute="full", **kw)
    assert mid_fixed(full) == pytest.approx(float(activation_bytes_per_layer(MOE, TRAIN, full, np, True)[0]), rel=1e-12)
