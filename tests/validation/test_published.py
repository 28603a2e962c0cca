"""The validation script over the published measurements: coverage and error bounds.

The bounds are regression guards at the level the model reaches today (see the README's
validation table); tightening them is the goal, loosening them needs a reason in the commit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emulator.cost.collectives import Fabric
from emulator.cost.step import layer_time
from emulator.spec.parallel import ParallelSpec
from emulator.spec.train import TrainSpec
from emulator.validation import (
    RowResult,
    build_row,
    counted,
    evaluate_all,
    load_rows,
    op_table,
    summary,
    unstated_errors,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def every_row() -> list[RowResult]:
    return evaluate_all()


@pytest.fixture(scope="module")
def results(every_row: list[RowResult]) -> list[RowResult]:
    """The rows the summaries count."""
    return counted(every_row)


def test_exclusions_are_few_and_quote_the_publisher(every_row: list[RowResult]) -> None:
    """Only a figure its publisher calls a regression is left out of the summaries, with the quote and link:
    today 4 of 166 rows (Megatron-Bridge issue #1998, still open, for the dropless Qwen3-30B rows on H100 and B200
    in 25.11 and on B200 in 26.02; PR #1760 / issue #1705 for the 25.11 B200 Qwen3-235B row)."""
    excluded = [r for r in every_row if r.excluded]
    assert len(excluded) <= 4, [r.id for r in excluded]
    for r in excluded:
        assert "regression" in r.excluded.lower() and "https://" in r.excluded, r.id


def test_rows_span_the_required_space(results: list[RowResult]) -> None:
    assert len(results) >= 25
    assert {"a100", "h100"} <= {r.gpu for r in results}
    assert {"bf16", "fp8"} <= {r.precision for r in results}
    assert {True, False} == {r.moe for r in results}


def test_mean_error_stays_within_the_guard(results: list[RowResult]) -> None:
    """Issue 2 asks for a mean within 5%. It held (4.52% over 154 rows) until the 8 Megatron-LM Qwen3 recipe rows
    (PR #5728) came in: the model matches their host-free full-CUDA-graph 235B row (+2.2%) and the tuned H100 rows,
    but misses the eager-stack rows and Qwen3-30B on GB200 by 15-32% (README: known misses), which put the mean
    at 5.11%; the host launch model (5.01%) and the FP8 padding copies around the expert GEMMs (4.98%) brought it
    back within the issue's 5%; the alltoall dispatcher's sort by local expert (4.71%) and per-op backward launches
    (4.66%) since."""
    assert summary(results)["mean_abs_error"] <= 0.050


def test_dense_rows(results: list[RowResult]) -> None:
    """Dense rows: mean within 4%, at most one row beyond 12% (megatron_h100_weak_32B: micro-batch unstated, see
    README)."""
    dense = [r for r in results if not r.moe]
    assert summary(dense)["mean_abs_error"] <= 0.04
    beyond = [f"{r.id} {r.error:+.1%}" for r in dense if abs(r.error) > 0.12]
    assert len(beyond) <= 1, beyond


def test_moe_rows_stay_within_the_guard(results: list[RowResult]) -> None:
    """MoE rows are never fitted; today they are the weak part of the model (README: known misses): mean 8.2%,
    12 rows beyond 12%. It was 11 until the rows took their recipes' recompute modules (parallel.recompute_modules)
    instead of core-attention recompute as a stand-in: mbridge2509_h100_deepseekv3_dropless_1024 recomputes its MLA
    up-projections and dense MLPs, cheaper than its attention core, and moved from -11.5% to -12.0%."""
    moe = [r for r in results if r.moe]
    assert summary(moe)["mean_abs_error"] <= 0.09
    assert len([r for r in moe if abs(r.error) > 0.12]) <= 12


def test_token_drop_qwen3_on_h100(results: list[RowResult]) -> None:
    """Megatron-Bridge published the same Qwen3-30B-A3B layout on 16 H100 with token drop (25.09) and dropless
    (25.11, half as fast: a regression by the publisher's own account, so excluded); the model is within 10% of
    the first."""
    rows = {r.id: r for r in results}
    assert abs(rows["mbridge2509_h100_qwen3_30b_a3b_tokendrop_16"].error) <= 0.10


def test_moe_rows_with_expert_tp_one(results: list[RowResult]) -> None:
    """The Grok-1 dgxc recipe on 512 H100 runs with expert TP 1 (parallel.etp=1, MoE parallel folding): both
    precisions within 12% (with experts split tp=4 ways, as before etp existed, BF16 was +18.5%)."""
    rows = {r.id: r for r in results}
    for rid in ("dgxc_grok1_h100_bf16_512", "dgxc_grok1_h100_fp8_512"):
        assert abs(rows[rid].error) <= 0.12, (rid, rows[rid].error)


def test_blackwell_dense_rows_are_predicted_within_twelve_percent(results: list[RowResult]) -> None:
    """GB200 FP8 efficiency is fitted on its 10 dense rows (leave-one-out mean 3.3%, max 6.2%); B200 takes the
    GB200 fitted/microbenchmark ratio and is never fitted: its dense rows are out-of-sample."""
    blackwell = [r for r in results if r.gpu in ("b200", "gb200") and not r.moe]
    assert len([r for r in blackwell if r.gpu == "b200"]) >= 4
    assert all(abs(r.error) <= 0.12 for r in blackwell), [(r.id, r.error) for r in blackwell]


def test_summary_reports_the_bias_by_hand() -> None:
    """Three rows predicted 10% slow, 20% fast and 4% slow: mean |error| (10 + 20 + 4) / 3 = 11.33%, max 20%, bias
    (10 - 20 + 4) / 3 = -2%."""
    def row(pred: float) -> RowResult:
        return RowResult("r", "h100", "bf16", False, "step_time_s", 1.0, 1.0, pred, {})

    s = summary([row(1.10), row(0.80), row(1.04)])
    assert s["rows"] == 3.0
    assert s["mean_abs_error"] == pytest.approx(0.34 / 3.0)
    assert s["max_abs_error"] == pytest.approx(0.20)
    assert s["mean_error"] == pytest.approx(-0.06 / 3.0)


def test_script_prints_every_row_with_its_error() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate.py")], capture_output=True, text=True,
                          check=True, timeout=300)
    for row in load_rows():
        assert row["id"] in proc.stdout
    assert "mean |error|" in proc.stdout and "max |error|" in proc.stdout and "bias:" in proc.stdout
    assert "h100 fp8 MoE" in proc.stdout  # the GPU x precision x kind groups, where a bias shows
    assert "excluded from the summaries" in proc.stdout
    assert "layout values the source does not state" in proc.stdout


def test_deepseek_v3_on_1024_h100_with_its_recipe_dispatch(results: list[RowResult]) -> None:
    """The 25.09 recipe runs DeepEP (flex dispatcher, node-limited routing) and the merged-1F1B all-to-all
    overlap: the exposed all-to-all falls from 15.6 s (plain all-to-all, no overlap) to under 2 s of a 25.3 s
    step, and the row from +40% to within 15% (README: known misses)."""
    row = {r.id: r for r in results}["mbridge2509_h100_deepseekv3_dropless_1024"]
    assert row.breakdown_s["ep_comm"] < 2.0
    assert abs(row.error) <= 0.15


def test_unstated_values_start_with_the_rows_own_assumption() -> None:
    """``unstated`` lists the layout values a source leaves open; the row's own value comes first and is
    named in its assumptions, and every alternative is a valid layout (evaluated by the script)."""
    rows = [r for r in load_rows() if r.get("unstated")]
    assert rows
    for row in rows:
        for key, values in row["unstated"].items():
            if key.startswith("train."):
                field = key.removeprefix("train.")
                assert field in TrainSpec.__dataclass_fields__, (row["id"], key)
                assert values[0] == row["train"].get(field, TrainSpec.__dataclass_fields__[field].default), (
                    row["id"], key)
            else:
                assert key in ParallelSpec.__dataclass_fields__, (row["id"], key)
                assert values[0] == row["parallel"][key], (row["id"], key)
            assert key in row["assumptions"], (row["id"], key)
    alts = unstated_errors(next(r for r in rows if r["id"] == "megatron_h100_weak_32B"))
    assert [v for _, v, _, _ in alts] == [1, 2, 4]
    assert alts[0][2] == pytest.approx({r.id: r for r in evaluate_all(rows)}["megatron_h100_weak_32B"].error)


def test_row_view_adds_up_to_the_layer_time() -> None:
    """validate.py --row: the per-op table of a layer sums to the cost model's layer time (forward + backward)."""
    row = next(r for r in load_rows() if r["id"] == "mbridge2509_h100_qwen3_30b_a3b_tokendrop_16")
    table = op_table(row)
    assert {o.layer for o in table} == {"moe"}
    model, train, cluster, lay = build_row(row)
    gpu = cluster.pools[0].gpu
    lt = layer_time(model, train, lay, gpu, Fabric.of(cluster, gpu), np, True)
    assert sum(o.fwd_s + o.bwd_s for o in table) == pytest.approx(float(lt.fwd_s_L[0] + lt.bwd_s_L[0]), rel=1e-12)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate.py"), "--row", row["id"]],
                          capture_output=True, text=True, check=True, timeout=120)
    assert "expert_fc1" in proc.stdout and "error" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate.py"), "--row", "no_such_row"],  # noqa: PLW1510
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--row=no_such_row" in bad.stderr


def test_model_overrides_change_only_the_named_fields() -> None:
    """A row may override catalogue model fields (the 25.11 GB200 DeepSeek-V3 rows run "w/o MTP"): the
    overridden field changes, every other field is the catalogue's."""
    rows = {r["id"]: r for r in load_rows()}
    row = rows["mbridge2511_gb200_deepseekv3_fp8mx_256"]
    assert row["model_overrides"] == {"mtp_layers": 0}
    model = build_row(row)[0]
    plain = build_row({k: v for k, v in row.items() if k != "model_overrides"})[0]
    assert model.mtp_layers == 0 and plain.mtp_layers == 1
    assert {k: v for k, v in vars(model).items() if k != "mtp_layers"} == \
        {k: v for k, v in vars(plain).items() if k != "mtp_layers"}
