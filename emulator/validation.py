"""Prediction vs published measurement for every usable row of ``validation/throughput.yaml``.

Each row names a published run: GPU, cluster, model, layout, training settings and one metric.
The metric becomes a step time, the quantity the cost model predicts:

- ``step_time_s``: as published;
- ``tokens_per_s_per_gpu``: ``global_batch * seq_len / (value * num_gpus)``;
- ``tflops_per_gpu`` or ``mfu``: the source's own FLOP count per step (``formulas`` in the file)
  divided by ``value * num_gpus`` (TFLOP/s) or ``value/100 * peak * num_gpus`` (MFU), because
  sources count FLOPs differently (recompute, causal halving) and comparing step times removes that.

A row with an ``excluded`` reason is still evaluated and printed, but not counted in the error
summary. The only accepted reason is the publisher's own statement that the figure measured a
performance regression (the reason quotes it and gives its address): the model predicts what the
software does when it works as designed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from emulator import catalogue
from emulator.config.build import (
    cluster_from_dict,
    model_from_dict,
    parallel_from_dict,
    train_from_dict,
)
from emulator.cost.collectives import Fabric
from emulator.cost.flops import model_flops_per_token
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import ACT_BYTES, layer_ops
from emulator.cost.roofline import block_time
from emulator.cost.routing import remote_nodes_per_token
from emulator.cost.step import nominal
from emulator.paths import validation_dir
from emulator.spec import GpuSpec, ModelSpec, TrainSpec

BASE_CLUSTER = {"h100": "dgx_h100", "h200": "dgx_h100", "a100": "selene_a100", "b200": "dgx_b200",
                "gb200": "gb200_nvl72", "h800": "deepseek_h800_2048"}


@dataclass(frozen=True)
class RowResult:
    id: str
    gpu: str
    precision: str
    moe: bool
    metric: str
    published_value: float
    published_step_s: float
    predicted_step_s: float
    breakdown_s: dict[str, float]
    excluded: str = ""
    """Why the row is printed but not counted (the publisher calls the figure a regression); empty: counted."""

    @property
    def error(self) -> float:
        """Signed relative step-time error (positive: the model predicts a slower step)."""
        return self.predicted_step_s / self.published_step_s - 1.0


def load_rows() -> list[dict[str, Any]]:
    with (validation_dir() / "throughput.yaml").open() as fh:
        data = yaml.safe_load(fh)
    rows = data["rows"]
    assert isinstance(rows, list)
    return rows


def source_flops_per_step(formula: str, model: ModelSpec, train: TrainSpec) -> float:
    """FLOPs per global batch as the source counted them (see ``formulas`` in throughput.yaml)."""
    B, s = float(train.global_batch), float(train.seq_len)
    L, h, V = float(model.num_layers), float(model.hidden_size), float(model.vocab_size)
    if formula in ("megatron_2024", "nemo_2024"):
        return model_flops_per_token(model, train.seq_len) * B * s
    if formula == "narayanan_2021":
        return 96.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * L * h))
    if formula == "korthikanti_2022_mfu":
        return 72.0 * B * L * s * h * h * (1.0 + s / (6.0 * h) + V / (12.0 * h * L))
    if formula == "mbridge_2025":
        return mbridge_flops_per_token(model, train.seq_len) * B * s
    raise ValueError(f"unknown flops_formula {formula!r}")


def mbridge_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Training FLOPs per token as Megatron-Bridge counts them (``flop_utils.transformer_flops``),
    for full-attention GQA/MHA models (MLA, MTP and sliding windows are not implemented here).

    Every GEMM is counted 3 times (forward, input gradient, weight gradient) at 2 FLOPs per
    multiply-add, i.e. 6 FLOPs per weight per token; recomputation is not counted. Per layer:
    projections ``6 h (q + 2k) + 6 q h`` (``q = a d``, ``k = g d``), causal core attention
    ``6 q s`` (the score and context matmuls, ``2 * 2 q s`` forward, halved for causality, times 3),
    MLP ``6 h f G`` with ``G`` = 3 weight matrices when gated, else 2; MoE layers count
    ``k_top`` routed experts plus the shared MLP; the logits add ``6 h V``. The router is not counted."""
    if model.is_mla or model.mtp_layers or model.sliding_window:
        raise ValueError(f"mbridge_2025 FLOP count is implemented for full-attention GQA models without MTP, "
                         f"not {model.name!r}")
    h, s, V = float(model.hidden_size), float(seq_len), float(model.vocab_size)
    q = float(model.num_heads * model.head_dim)
    k = float(model.num_kv_heads * model.head_dim)
    G = float(model.mlp_matrices)
    attention = 6.0 * (h * (q + 2.0 * k) + q * h + q * s)
    dense_mlp = 6.0 * h * float(model.dense_layer_ffn) * G
    moe_mlp = 6.0 * h * float(model.expert_ffn_hidden_size * model.experts_per_token + model.ffn_hidden_size) * G
    n_moe = float(model.num_moe_layers)
    n_dense = float(model.num_layers) - n_moe
    return (float(model.num_layers) * attention + n_dense * dense_mlp + n_moe * moe_mlp + 6.0 * h * V)


def build_row(row: dict[str, Any], gpu: GpuSpec | None = None) -> tuple[ModelSpec, TrainSpec, Any, Any]:
    """Specs of a row: model, training, cluster and a one-layout batch (``gpu`` replaces the catalogue's)."""
    m = row["model"]
    if isinstance(m, str):
        over = row.get("model_overrides") or {}
        model = model_from_dict({**catalogue.raw("model", m), **over}) if over else catalogue.model(m)
    else:
        model = model_from_dict({"name": row["id"], **m})
    train = train_from_dict({k: v for k, v in row["train"].items()})
    par_data = dict(row["parallel"])
    ov = row.get("overlap", {})
    par_data.update(tp_comm_overlap=bool(ov.get("tp_comm", True)), dp_comm_overlap=bool(ov.get("dp_comm", True)),
                    pp_comm_overlap=bool(ov.get("pp_comm", True)), ep_comm_overlap=bool(ov.get("ep_comm", False)))
    parallel = parallel_from_dict(par_data)
    gpu = gpu or catalogue.gpu(row["gpu"])
    base = catalogue.raw("cluster", BASE_CLUSTER[row["gpu"]])
    base.update(row.get("cluster", {}))
    base.update(num_gpus=row["num_gpus"], pools=[], name=f"{row['id']}_cluster")
    base.pop("gpu", None)
    cluster = cluster_from_dict(base, gpu, catalogue.gpu)
    return model, train, cluster, LayoutBatch.from_specs([parallel], np)


def published_step_s(row: dict[str, Any], model: ModelSpec, train: TrainSpec) -> float:
    pub = row["published"]
    value, metric, n = float(pub["value"]), pub["metric"], float(row["num_gpus"])
    if metric == "step_time_s":
        return value
    if metric == "tokens_per_s_per_gpu":
        return train.global_batch * train.seq_len / (value * n)
    flops = source_flops_per_step(pub["flops_formula"], model, train)
    if metric == "tflops_per_gpu":
        return flops / (value * 1e12 * n)
    if metric == "mfu":
        return flops / (value / 100.0 * float(pub["peak_tflops"]) * 1e12 * n)
    raise ValueError(f"unknown metric {metric!r}")


def evaluate(row: dict[str, Any], gpu: GpuSpec | None = None) -> RowResult:
    model, train, cluster, lay = build_row(row, gpu)
    res = nominal(model, train, cluster, lay, np)
    return RowResult(
        id=row["id"], gpu=row["gpu"], precision=train.precision, moe=model.is_moe,
        metric=row["published"]["metric"], published_value=float(row["published"]["value"]),
        published_step_s=published_step_s(row, model, train), predicted_step_s=float(res.step_time_s_L[0]),
        breakdown_s={k: float(v[0]) for k, v in res.breakdown_s.items()},
        excluded=str(row.get("excluded", "")),
    )


def unstated_errors(row: dict[str, Any]) -> list[tuple[str, Any, float, bool]]:
    """``(key, value, step-time error, fits in HBM)`` for every alternative the row lists under
    ``unstated``: layout values (``micro_batch``, ``vpp``) or training settings (``train.<key>``) its
    source does not publish. The row itself takes the first."""
    out = []
    for key, values in (row.get("unstated") or {}).items():
        for value in values:
            if key.startswith("train."):
                alt = {**row, "train": {**row["train"], key.removeprefix("train."): value}}
            else:
                alt = {**row, "parallel": {**row["parallel"], key: value}}
            model, train, cluster, lay = build_row(alt)
            res = nominal(model, train, cluster, lay, np)
            fits = all(bool(st.memory.fits_L[0]) for st in res.by_gpu_type.values())
            out.append((key, value, float(res.step_time_s_L[0]) / published_step_s(alt, model, train) - 1.0, fits))
    return out


@dataclass(frozen=True)
class OpRow:
    """One op of one layer kind of a row's job, per GPU and micro-batch (for ``validate.py --row``)."""

    layer: str
    """``dense`` or ``moe``."""
    name: str
    kind: str
    fwd_s: float
    bwd_s: float
    flops: float
    kernels: float


def op_table(row: dict[str, Any]) -> list[OpRow]:
    """The per-op roofline times of the row's layer kinds on its GPU: where a layer's time goes."""
    model, train, cluster, lay = build_row(row)
    gpu = cluster.pools[0].gpu
    kinds = ([("dense", False)] if not model.is_moe or model.num_dense_layers > 0 else []) + (
        [("moe", True)] if model.is_moe else [])
    out = []
    for label, moe in kinds:
        ops = layer_ops(model, train, lay, np, moe)
        for op, t in zip(ops, block_time(ops, gpu, train.precision, np).by_op, strict=True):
            flops = float(np.asarray(op.flops_L).reshape(-1)[0])
            kernels = float(np.asarray(op.kernels).reshape(-1)[0])
            out.append(OpRow(label, op.name, op.kind, float(t.fwd_s_L[0]), float(t.bwd_s_L[0]), flops, kernels))
    return out


def evaluate_all(rows: Iterable[dict[str, Any]] | None = None) -> list[RowResult]:
    return [evaluate(r) for r in (load_rows() if rows is None else rows)]


def counted(results: list[RowResult]) -> list[RowResult]:
    """The rows the error summary counts (all but the excluded ones)."""
    return [r for r in results if not r.excluded]


def summary(results: list[RowResult]) -> dict[str, float]:
    """Row count, mean and max absolute error, and the bias: the mean signed error (positive: the model
    predicts slower steps than published on average). A mean absolute error hides direction; the bias is
    what a planner corrects for."""
    signed = np.asarray([r.error for r in results])
    errs = np.abs(signed)
    return {"rows": float(len(results)), "mean_abs_error": float(errs.mean()), "max_abs_error": float(errs.max()),
            "mean_error": float(signed.mean())}


@dataclass(frozen=True)
class DispatchRow:
    """One published expert-parallel dispatch/combine latency against the cost model's."""

    gpu: str
    dispatcher: str
    ep: int
    measured_s: float
    """Mean of the published dispatch and combine latencies."""
    predicted_s: float

    @property
    def ratio(self) -> float:
        return self.predicted_s / self.measured_s


def ep_dispatch_rows() -> list[DispatchRow]:
    """Every row of ``validation/ep_dispatch.yaml`` with the model's latency for one direction.

    ``alltoall``: :meth:`Fabric.all_to_all_s` of the ``T k h`` BF16 bytes a rank sends; ``flex``:
    :meth:`Fabric.node_dedup_all_to_all_s` of its ``T h`` token bytes with the expected other nodes and
    ranks a token reaches (:func:`emulator.cost.routing.remote_nodes_per_token`), expert-parallel ranks
    consecutive (stride 1), as in ``emulator.cost.step``."""
    with open(validation_dir() / "ep_dispatch.yaml", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    setup = data["setup"]
    model = catalogue.model(setup["model"])
    token_bytes = ACT_BYTES * float(setup["tokens_per_rank"]) * float(setup["hidden"])
    out = []
    for gpu_name, dispatcher, ep, dispatch_us, combine_us in data["rows"]:
        gpu = catalogue.gpu(gpu_name)
        base = catalogue.raw("cluster", data["clusters"][gpu_name])
        base.update(num_gpus=max(int(ep), int(base["gpus_per_node"])), pools=[])
        base.pop("gpu", None)
        fabric = Fabric.of(cluster_from_dict(base, gpu, catalogue.gpu), gpu)
        n, one = np.asarray([float(ep)]), np.asarray([1.0])
        if dispatcher == "flex":
            nodes = n / fabric.members_per_domain(n, one, np)
            t = fabric.node_dedup_all_to_all_s(np.asarray([token_bytes]), remote_nodes_per_token(model, nodes, np),
                                               remote_nodes_per_token(model, n, np), n, one, np)
        else:
            t = fabric.all_to_all_s(np.asarray([token_bytes * float(setup["experts_per_token"])]), n, one, np)
        out.append(DispatchRow(gpu_name, dispatcher, int(ep), (dispatch_us + combine_us) / 2.0 * 1e-6, float(t[0])))
    return out


@dataclass(frozen=True)
class ImbalanceRow:
    """One published forced-balance / dropless pair and the load imbalance that reproduces it."""

    seq_len: int
    tp: int
    cp: int
    published_ratio: float
    """Dropless step over forced-balance step (= forced over dropless TFLOP/s, one FLOP count)."""
    implied_imbalance: float
    """``train.moe_load_imbalance`` at which the model's dropless/forced step ratio equals the published one."""


def _imbalance_step_s(setup: dict[str, Any], seq: int, tp: int, cp: int, imbalance: float) -> float:
    pp = int(setup["parallel"]["pp"])
    dp = int(setup["num_gpus"]) // (tp * cp * pp)
    row = {"id": f"imbalance_{seq}", "gpu": setup["gpu"], "num_gpus": setup["num_gpus"], "cluster": setup["cluster"],
           "model": setup["model"],
           "parallel": {**setup["parallel"], "tp": tp, "cp": cp, "dp": dp},
           "train": {**setup["train"], "seq_len": seq, "moe_load_imbalance": imbalance},
           "overlap": {"ep_comm": False}}
    model, train, cluster, lay = build_row(row)
    return float(nominal(model, train, cluster, lay, np).step_time_s_L[0])


def imbalance_rows() -> list[ImbalanceRow]:
    """Every pair of ``validation/moe_imbalance.yaml`` with its implied load imbalance (bisection on
    ``[1, 4]``: the step grows monotonically with the imbalance)."""
    with open(validation_dir() / "moe_imbalance.yaml", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    setup = data["setup"]
    out = []
    for seq, tp, cp, forced_tflops, dropless_tflops in data["pairs"]:
        ratio = float(forced_tflops) / float(dropless_tflops)
        balanced = _imbalance_step_s(setup, int(seq), int(tp), int(cp), 1.0)
        lo, hi = 1.0, 4.0
        for _ in range(30):
            mid = (lo + hi) / 2.0
            if _imbalance_step_s(setup, int(seq), int(tp), int(cp), mid) / balanced < ratio:
                lo = mid
            else:
                hi = mid
        out.append(ImbalanceRow(int(seq), int(tp), int(cp), ratio, (lo + hi) / 2.0))
    return out
