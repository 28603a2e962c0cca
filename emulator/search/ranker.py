"""Evaluate every layout of the space in chunks, stream them to layouts.arrow, keep the best.

The objective of a layout (higher is better):
- tokens_per_s: global batch tokens / nominal step;
- tokens_per_s_per_watt: tokens/s over the site power of the nominal step (GPU power by phase:
  compute at ``compute_fraction_of_tdp``, exposed communication at ``comm_fraction_of_tdp``, bubble,
  optimizer and host idle at idle power; plus host and network overhead; times PUE);
- time_to_train: the negative of ``train.total_tokens / tokens_per_s`` in days.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emulator.backend import to_numpy
from emulator.cost.layout import LayoutBatch
from emulator.cost.step import nominal
from emulator.io.arrow import StreamWriter
from emulator.search.space import Space, build_space
from emulator.spec import ClusterSpec, ConfigError, PoolSpec
from emulator.spec.parallel import RECOMPUTE_MODES, recompute_module_mask
from emulator.spec.search import SearchJob, SearchSpec

LAYOUTS_SCHEMA = pa.schema([
    ("tp", pa.int64()), ("pp", pa.int64()), ("dp", pa.int64()), ("cp", pa.int64()), ("ep", pa.int64()),
    ("etp", pa.int64()),
    ("vpp", pa.int64()), ("micro_batch", pa.int64()), ("zero", pa.int64()), ("recompute", pa.string()),
    ("recompute_modules", pa.string()),
    ("fits", pa.bool_()), ("step_time_s", pa.float64()), ("tokens_per_s", pa.float64()), ("mfu", pa.float64()),
    ("memory_bytes", pa.float64()), ("facility_power_mw", pa.float64()), ("objective", pa.float64()),
])
COMM_KEYS = ("tp_comm", "pp_comm", "dp_comm", "cp_comm", "ep_comm")
IDLE_KEYS = ("bubble", "optimizer", "other")


@dataclass
class SearchResult:
    num_gpus: int
    grid_points: int
    layouts: int = 0
    fitting: int = 0
    seconds: float = 0.0
    """Wall time of enumeration, cost model, objective, ranking and streaming the rows to Arrow."""
    eval_seconds: float = 0.0
    """The cost model and objective alone (what layouts/s per evaluation means)."""
    best: list[dict[str, Any]] = field(default_factory=list)


def search_cluster(job: SearchJob, search: SearchSpec) -> ClusterSpec:
    """The cluster the search sizes layouts for (``search.max_gpus`` resizes a homogeneous one)."""
    cl = job.cluster
    if not search.max_gpus or search.max_gpus == cl.num_gpus:
        return cl
    if cl.is_mixed:
        raise ConfigError("search.max_gpus", search.max_gpus, "applies to a homogeneous cluster (pools are fixed)")
    if search.max_gpus % cl.gpus_per_node:
        raise ConfigError("search.max_gpus", search.max_gpus,
                          f"must be a multiple of cluster.gpus_per_node={cl.gpus_per_node}")
    pool = PoolSpec(gpu=cl.pools[0].gpu, num_gpus=search.max_gpus)
    return dataclasses.replace(cl, num_gpus=search.max_gpus, pools=(pool,))


def evaluate_chunk(job: SearchJob, cluster: ClusterSpec, cols: dict[str, np.ndarray], search: SearchSpec,
                   xp: Any) -> dict[str, np.ndarray]:
    """Cost-model columns of one chunk of valid layouts (host arrays)."""
    lay = LayoutBatch.from_columns(
        xp, tp_L=xp.asarray(cols["tp"]), pp_L=xp.asarray(cols["pp"]), dp_L=xp.asarray(cols["dp"]),
        cp_L=xp.asarray(cols["cp"]), ep_L=xp.asarray(cols["ep"]),
        etp_L=xp.asarray(np.where(cols["etp"] == 0.0, cols["tp"], cols["etp"])), vpp_L=xp.asarray(cols["vpp"]),
        mb_L=xp.asarray(cols["micro_batch"]), zero_L=xp.asarray(cols["zero"]),
        recompute_L=xp.asarray(cols["recompute"]),
        recompute_modules_L=xp.asarray(cols["recompute_modules"]),
        sp_L=xp.asarray((cols["tp"] > 1.0).astype(np.float64)),
        ep_overlap_L=xp.asarray(_ep_overlap(cols, search)))
    res = nominal(job.model, job.train, cluster, lay, xp)
    step = to_numpy(res.step_time_s_L)
    fits = np.ones(step.shape, dtype=bool)
    mem = np.zeros(step.shape)
    for st in res.by_gpu_type.values():
        fits &= to_numpy(st.memory.fits_L).astype(bool)
        mem = np.maximum(mem, to_numpy(st.memory.total_L))
    tokens = to_numpy(res.tokens_per_s_L)
    power_w = _site_power_w(job, cluster, {k: to_numpy(v) for k, v in res.breakdown_s.items()}, step)
    if search.objective == "tokens_per_s":
        objective = tokens
    elif search.objective == "tokens_per_s_per_watt":
        objective = tokens / power_w
    else:
        objective = -job.train.total_tokens / tokens / 86400.0
    return {"step_time_s": step, "tokens_per_s": tokens, "mfu": to_numpy(res.mfu_L), "fits": fits,
            "memory_bytes": mem, "facility_power_mw": power_w / 1e6, "objective": objective}


def _ep_overlap(cols: dict[str, np.ndarray], search: SearchSpec) -> np.ndarray:
    """1.0 for the layouts that run the MoE all-to-all overlap under ``search.ep_comm_overlap``: those Megatron-Core
    runs it for (:func:`emulator.spec.parallel.ep_overlap_blocker`: ep > 1, vpp > 1 when pp > 1, no full
    recomputation, no ``moe`` among the selective modules); the others are costed without it."""
    if not search.ep_comm_overlap:
        return np.zeros(cols["tp"].shape)
    full, selective = float(RECOMPUTE_MODES.index("full")), float(RECOMPUTE_MODES.index("selective"))
    ok = (cols["ep"] > 1.0) & ((cols["pp"] == 1.0) | (cols["vpp"] > 1.0)) & (cols["recompute"] != full)
    moe_bit = float(recompute_module_mask(("moe",)))
    moe_rerun = (cols["recompute"] == selective) & (np.fmod(np.floor(cols["recompute_modules"] / moe_bit), 2.0) == 1.0)
    return (ok & ~moe_rerun).astype(np.float64)


def _site_power_w(job: SearchJob, cluster: ClusterSpec, b: dict[str, np.ndarray], step: np.ndarray) -> np.ndarray:
    pw = job.power
    compute_frac = pw.compute_fraction_of_tdp if pw else 1.0
    comm_frac = pw.comm_fraction_of_tdp if pw else 0.35
    overhead = (pw.host_w_per_gpu + pw.network_w_per_gpu) if pw else 0.0
    pue = pw.pue if pw else 1.0
    total = np.zeros(step.shape)
    for pool in cluster.pools:
        g = pool.gpu
        comm = sum(b[k] for k in COMM_KEYS)
        idle = sum(b[k] for k in IDLE_KEYS)
        energy = (compute_frac * g.tdp_w * b["compute"] + max(g.idle_w, comm_frac * g.tdp_w) * comm
                  + g.idle_w * idle)
        total = total + pool.num_gpus * (energy / step + overhead)
    return total * pue


def run_search(job: SearchJob, search: SearchSpec, out_dir: Path | None, xp: Any) -> SearchResult:
    """Rank every valid layout; write ``layouts.arrow`` (best first) when ``out_dir`` is given."""
    job.check(search)
    cluster = search_cluster(job, search)
    space: Space = build_space(job.model, job.train, cluster, search)
    result = SearchResult(num_gpus=cluster.num_gpus, grid_points=space.size)
    writer = StreamWriter(out_dir / "layouts.arrow", LAYOUTS_SCHEMA) if out_dir is not None else None
    best: pa.Table | None = None
    t0 = time.perf_counter()
    for cols in space.chunks(search.chunk, job.model, job.train):
        t_eval = time.perf_counter()
        out = evaluate_chunk(job, cluster, cols, search, xp)
        result.eval_seconds += time.perf_counter() - t_eval
        result.layouts += len(cols["tp"])
        result.fitting += int(out["fits"].sum())
        if writer is not None:
            writer.append(_rows(cols, out, search))
        # Only this chunk's best k rows become an Arrow table (the others are only written, if at all).
        score = np.where(out["fits"], out["objective"], -np.inf) if search.must_fit else out["objective"]
        keep = np.flatnonzero(np.isfinite(score)) if search.must_fit else np.arange(score.size)
        if keep.size > search.top:
            keep = keep[np.argpartition(-score[keep], search.top - 1)[: search.top]]
        if keep.size:
            top = _table(_rows({k: v[keep] for k, v in cols.items()}, {k: v[keep] for k, v in out.items()}, search))
            best = _top(top if best is None else pa.concat_tables([best, top]), search.top)
    result.seconds = time.perf_counter() - t0
    result.best = best.to_pylist() if best is not None else []
    if writer is not None:
        writer.finalize(lambda t: t.sort_by([("fits", "descending"), ("objective", "descending")]))
    return result


def _rows(cols: dict[str, np.ndarray], out: dict[str, np.ndarray], search: SearchSpec) -> dict[str, Any]:
    """Columns of layouts.arrow for a set of layouts and their cost-model results; ``recompute_modules`` is the
    module list a selective layout re-runs, comma-separated as the search gave it ("" for none and full)."""
    ints = {name: cols[name].astype(np.int64) for name in ("tp", "pp", "dp", "cp", "ep", "etp", "vpp", "micro_batch",
                                                           "zero")}
    code_N = cols["recompute"].astype(np.int64)
    modes = np.asarray(RECOMPUTE_MODES)[code_N].tolist()
    modules = np.full(code_N.shape, "", dtype=object)
    selective_N = code_N == RECOMPUTE_MODES.index("selective")
    for one in search.module_sets:
        modules[selective_N & (cols["recompute_modules"] == float(recompute_module_mask(one)))] = ",".join(one)
    return {**ints, "recompute": modes, "recompute_modules": modules.tolist(), **out}


def _table(rows: dict[str, Any]) -> pa.Table:
    return pa.table({f.name: pa.array(rows[f.name], type=f.type) for f in LAYOUTS_SCHEMA}, schema=LAYOUTS_SCHEMA)


def _top(table: pa.Table, k: int) -> pa.Table:
    if table.num_rows <= k:
        return table.sort_by([("objective", "descending")])
    idx = pc.select_k_unstable(table, k, [("objective", "descending")])
    return table.take(idx).sort_by([("objective", "descending")])


def by_replica_ok(cluster: ClusterSpec, tp: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """Layouts placement=by_replica can host: every pool holds whole pipelines (tp x pp GPUs) and whole
    nodes of them (a node holds gpus_per_node / tp consecutive replicas of a stage)."""
    ok = np.ones(tp.shape, dtype=bool)
    for pool in cluster.pools:
        per_replica = tp * pp
        ok &= pool.num_gpus % per_replica == 0
        replicas = pool.num_gpus // np.maximum(per_replica, 1)
        per_node = np.maximum(cluster.gpus_per_node // tp, 1)
        ok &= replicas % per_node == 0
    return ok


def mixed_report(job: SearchJob, search: SearchSpec, layouts_path: Path, xp: Any) -> dict[str, Any]:
    """For a mixed cluster: the best layout per pool (the pool alone, same training settings) and the best
    for the whole job under each placement policy (rank_order hosts every layout; by_replica only those
    whose pools hold whole pipelines on whole nodes). The nominal step is the same under both policies."""
    from pyarrow import ipc  # noqa: PLC0415 - only for this report

    with ipc.open_file(str(layouts_path)) as reader:
        table = reader.read_all()
    if search.must_fit:
        table = table.filter(pc.field("fits"))
    out: dict[str, Any] = {"by_placement": {}, "by_pool": {}}
    if table.num_rows:
        out["by_placement"]["rank_order"] = table.slice(0, 1).to_pylist()[0]
        mask = by_replica_ok(job.cluster, table.column("tp").to_numpy(), table.column("pp").to_numpy())
        hosted = table.filter(pa.array(mask))
        out["by_placement"]["by_replica"] = hosted.slice(0, 1).to_pylist()[0] if hosted.num_rows else None
    for i, pool in enumerate(job.cluster.pools):
        alone = dataclasses.replace(job.cluster, num_gpus=pool.num_gpus, pools=(pool,))
        sub_job = dataclasses.replace(job, cluster=alone)
        res = run_search(sub_job, dataclasses.replace(search, max_gpus=0, top=1), None, xp)
        out["by_pool"][f"{i}:{pool.gpu.name}"] = res.best[0] if res.best else None
    return out
