"""Mixed GPU pools (Colossus-style H100 + H200) on a small scale: placement and per-pool timing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from emulator.fleet.engine import FleetEngine, _with_recompute
from emulator.fleet.topology import Topology
from emulator.spec import ConfigError, ParallelSpec

from .helpers import cli, job_of, merged, run_pipeline

MIXED = ["model=tiny", "cluster=colossus_200k", "cluster.num_gpus=256",
         "cluster.pools=[{gpu:h100,num_gpus:192},{gpu:h200,num_gpus:64}]", "parallel=default", "parallel.tp=2",
         "parallel.pp=2", "train.seq_len=1024", "train.global_batch=128", "run.steps=30", "run.steps_per_batch=8",
         "reliability=none"]
TP, PP, DP = 2, 2, 64
PLACEMENTS = ("rank_order", "by_replica")


def gpu_types(tables: dict[str, pa.Table]) -> np.ndarray:
    return np.asarray(tables["gpus"].column("gpu_type").to_pylist())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """The mixed job under each placement."""
    return {placement: run_pipeline(tmp_path_factory.mktemp(placement), f"cluster.placement={placement}", base=MIXED)
            for placement in PLACEMENTS}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_mixed_pools_run_and_count_each_type(runs: dict[str, tuple[dict, dict]], placement: str) -> None:
    summary, tables = runs[placement]
    assert summary["fleet"]["steps"] == 30
    types = gpu_types(tables)
    assert types.size == 256
    assert Counter(types.tolist()) == {"h100": 192, "h200": 64}
    assert tables["gpus"].schema.field("gpu_type").type == pa.dictionary(pa.int8(), pa.string())
    assert set(summary["nominal"]["by_gpu_type"]) == {"h100", "h200"}
    assert len(summary["fleet"]["recompute_by_pool"]) == 2
    hbm = tables["gpus"].column("hbm_peak_bytes").to_numpy()
    assert np.all(hbm > 0)


def test_rank_order_puts_the_h200_on_the_last_ranks(runs: dict[str, tuple[dict, dict]]) -> None:
    types = gpu_types(runs["rank_order"][1])
    assert np.all(types[:192] == "h100")
    assert np.all(types[192:] == "h200")
    # Megatron order (tp, dp, pp): the last ranks are pipeline stage 1, so some pipelines span both types.
    replica = (np.arange(256) // TP) % DP
    spans = [len(set(types[replica == r])) for r in range(DP)]
    assert max(spans) == 2


def test_by_replica_puts_each_replica_on_one_type(runs: dict[str, tuple[dict, dict]]) -> None:
    tables = runs["by_replica"][1]
    types = gpu_types(tables)
    gpu = tables["gpus"].column("gpu").to_numpy()
    replica = (gpu // TP) % DP
    per_replica = {r: set(types[replica == r]) for r in range(DP)}
    assert all(len(s) == 1 for s in per_replica.values())
    # 192 / (tp x pp) = 48 replicas of H100, then 16 of H200.
    assert Counter(next(iter(s)) for s in per_replica.values()) == {"h100": 48, "h200": 16}
    stage = tables["gpus"].column("pp_stage").to_numpy()
    np.testing.assert_array_equal(stage, gpu // (TP * DP))


def test_placement_changes_the_step_times(runs: dict[str, tuple[dict, dict]]) -> None:
    """rank_order makes half the pipelines mixed; by_replica keeps them pure: the runs differ."""
    a = runs["rank_order"][1]["steps"].column("step_time_s").to_numpy()
    b = runs["by_replica"][1]["steps"].column("step_time_s").to_numpy()
    assert a.shape == b.shape
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_tp_group_is_one_type(runs: dict[str, tuple[dict, dict]], placement: str) -> None:
    tables = runs[placement][1]
    types = gpu_types(tables).reshape(-1, TP)
    assert np.all(types == types[:, :1])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_nodes_are_one_type_with_this_layout(runs: dict[str, tuple[dict, dict]], placement: str) -> None:
    tables = runs[placement][1]
    types = gpu_types(tables)
    node = tables["gpus"].column("node").to_numpy()
    for n in np.unique(node):
        assert len(set(types[node == n])) == 1


def test_pools_run_at_their_own_nominal_pace() -> None:
    engine = FleetEngine(job_of("cluster.placement=rank_order", base=MIXED), np)
    timing = engine.timing
    assert timing.t_fb_T.shape == (2,)
    assert np.all(timing.t_fb_T > 0)
    # H200 has more HBM bandwidth and the same dense FLOP/s: never slower per micro-batch.
    assert timing.t_fb_T[1] <= timing.t_fb_T[0]


BY_REPLICA_SPLIT_NODES = ["model=tiny", "cluster=colossus_200k", "cluster.num_gpus=32",
                          "cluster.pools=[{gpu:h100,num_gpus:24},{gpu:h200,num_gpus:8}]", "parallel=default",
                          "parallel.tp=1", "parallel.pp=4", "train.seq_len=1024", "train.global_batch=64",
                          "run.steps=5", "reliability=none", "cluster.placement=by_replica"]


def test_by_replica_that_would_split_a_node_is_a_config_error() -> None:
    """With tp=1 pp=4 dp=8 and pools 24 H100 + 8 H200, by_replica would give every node 6 H100 + 2 H200."""
    with pytest.raises(ConfigError) as err:
        Topology.of(job_of(base=BY_REPLICA_SPLIT_NODES))
    assert err.value.key == "cluster.placement"
    assert "two GPU types on node" in str(err.value)


def test_a_pool_size_not_a_multiple_of_tp_is_a_config_error() -> None:
    """Pools are whole nodes; with 2-GPU nodes and tp=4 a 254 + 2 split cuts TP groups across types."""
    job = job_of("cluster.gpus_per_node=2", "cluster.pools=[{gpu:h100,num_gpus:254},{gpu:h200,num_gpus:2}]",
                 "parallel.tp=4", base=MIXED)
    with pytest.raises(ConfigError) as err:
        FleetEngine(job, np)
    assert err.value.key == "cluster.pools[0].num_gpus"
    assert "parallel.tp=4" in str(err.value)


def test_by_replica_pool_not_a_multiple_of_a_pipeline_is_a_config_error() -> None:
    job = job_of("cluster.placement=by_replica", "cluster.pools=[{gpu:h100,num_gpus:200},{gpu:h200,num_gpus:56}]",
                 "parallel.tp=4", "parallel.pp=4", "train.global_batch=64", base=MIXED)
    with pytest.raises(ConfigError) as err:
        FleetEngine(job, np)
    assert err.value.key == "cluster.pools[0].num_gpus"
    assert "by_replica" in str(err.value)


POOL_LAYOUT_ERRORS = {
    "pool_vs_tp": ["cluster.gpus_per_node=2", "cluster.pools=[{gpu:h100,num_gpus:254},{gpu:h200,num_gpus:2}]",
                   "parallel.tp=4"],
    "by_replica_vs_pipeline": ["cluster.placement=by_replica",
                               "cluster.pools=[{gpu:h100,num_gpus:200},{gpu:h200,num_gpus:56}]", "parallel.tp=4",
                               "parallel.pp=4", "train.global_batch=64"],
}


@pytest.mark.parametrize("case", sorted(POOL_LAYOUT_ERRORS))
def test_cli_rejects_a_pool_layout_mismatch_in_one_line(case: str, tmp_path: Path) -> None:
    proc = cli([*merged(MIXED, POOL_LAYOUT_ERRORS[case]), f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cluster.pools[0].num_gpus" in lines[0]


def test_pools_with_spare_hbm_drop_module_recompute(tmp_path: Path) -> None:
    """A selective layout with named modules on a mixed cluster: each pool tries lighter modes (none, then the
    configured selective with its modules); dropping to none drops the module list instead of failing."""
    par = ParallelSpec(tp=2, pp=2, dp=64, recompute="selective", recompute_modules=("moe_act", "layernorm"))
    assert _with_recompute(par, "selective") is par
    assert _with_recompute(par, "none").recompute_modules == ("core_attn",)
    full = ParallelSpec(tp=2, pp=2, dp=64, recompute="full")
    assert _with_recompute(full, "selective").recompute_modules == ("core_attn",)
    summary, _ = run_pipeline(tmp_path, "parallel.recompute=selective", "parallel.recompute_modules=[core_attn,mlp]",
                              base=MIXED)
    assert set(summary["fleet"]["recompute_by_pool"]) <= {"none", "selective"}
