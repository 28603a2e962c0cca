"""Layout search: the same numbers as emulate, published layouts inside the ranking, one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyarrow import ipc

from emulator.app import evaluate_nominal
from emulator.config.compose import compose_config
from emulator.config.job import build_job, build_search, build_search_job
from emulator.search.ranker import run_search
from emulator.search.space import build_space
from emulator.spec import ConfigError
from emulator.spec.search import SearchSpec

GPT3_6144 = ["model=gpt3_175b", "cluster=dgx_h100", "cluster.num_gpus=6144", "train.seq_len=2048",
             "train.global_batch=1536"]
WEAK_177B = ["cluster=dgx_h100", "cluster.num_gpus=2304", "train.seq_len=4096", "train.global_batch=1152",
             "train.dropout=0.1", "model=gpt3_175b", "model.vocab_size=131072"]

GROK1_512 = ["model=grok1", "cluster=dgx_h100", "cluster.num_gpus=512", "train.seq_len=8192",
             "train.global_batch=1024"]
GROK1_ONE_LAYOUT: dict[str, tuple[int, ...]] = dict(tp=(4,), cp=(2,), pp=(8,), vpp=(8,), ep=(8,), etp=(4,),
                                                    micro_batch=(1,), zero=(1,))
"""Search axes that leave one Grok-1 layout on 512 H100 (with one recompute value)."""


def layouts(tmp_path: Path, overrides: list[str], **search: object) -> list[dict[str, object]]:
    cfg = compose_config(overrides, config_name="emulate_search")
    job = build_search_job(cfg)
    spec = SearchSpec(**{**{"top": 5}, **search})  # type: ignore[arg-type]
    run_search(job, spec, tmp_path, np)
    with ipc.open_file(str(tmp_path / "layouts.arrow")) as reader:
        return reader.read_all().to_pylist()


def emulate_row(overrides: list[str], row: dict[str, object]) -> tuple[float, float, bool]:
    par = [f"parallel.{k}={row[k]}" for k in ("tp", "pp", "dp", "cp", "ep", "etp", "vpp", "micro_batch", "zero",
                                              "recompute")]
    job = build_job(compose_config([*overrides, "parallel=default", *par, "run.steps=0"]))
    res = evaluate_nominal(job)
    mem = max(float(st.memory.total_L[0]) for st in res.by_gpu_type.values())
    fits = all(bool(st.memory.fits_L[0]) for st in res.by_gpu_type.values())
    return float(res.step_time_s_L[0]), mem, fits


def test_every_layout_matches_emulate_alone(tmp_path: Path) -> None:
    """A sample across the ranking: step time, memory and fit equal evaluating the layout by itself."""
    rows = layouts(tmp_path, GPT3_6144)
    assert len(rows) > 1000
    picks = [rows[0], rows[1], rows[len(rows) // 3], rows[len(rows) // 2], rows[-1]]
    picks += [r for r in rows if r["cp"] > 1][:2] + [r for r in rows if r["zero"] == 3][:2]
    for row in picks:
        step, mem, fits = emulate_row(GPT3_6144, row)
        assert step == pytest.approx(row["step_time_s"], rel=1e-12), row
        assert mem == pytest.approx(row["memory_bytes"], rel=1e-12), row
        assert fits == row["fits"], row


def test_ranking_is_best_first_with_fitting_layouts_first(tmp_path: Path) -> None:
    rows = layouts(tmp_path, GPT3_6144)
    fits = [r["fits"] for r in rows]
    assert fits == sorted(fits, reverse=True)
    fitting = [r["objective"] for r in rows if r["fits"]]
    assert fitting == sorted(fitting, reverse=True)


def test_published_layout_is_in_the_ranking_and_the_top_is_at_least_as_fast(tmp_path: Path) -> None:
    """Megatron-LM's 177B weak-scaling run: TP8 PP6 DP48 on 2,304 H100 (validation/throughput.yaml)."""
    rows = layouts(tmp_path, WEAK_177B)
    published = [r for r in rows if (r["tp"], r["pp"], r["dp"], r["cp"], r["vpp"], r["micro_batch"], r["zero"],
                                     r["recompute"]) == (8, 6, 48, 1, 1, 1, 1, "none")]
    assert len(published) == 1
    step, _, _ = emulate_row(WEAK_177B, published[0])
    assert published[0]["step_time_s"] == pytest.approx(step, rel=1e-12)
    assert rows[0]["fits"] and rows[0]["step_time_s"] <= published[0]["step_time_s"]


def test_constraints_fix_an_axis(tmp_path: Path) -> None:
    rows = layouts(tmp_path, GPT3_6144, tp=(8,), recompute=("selective",))
    assert {r["tp"] for r in rows} == {8}
    assert {r["recompute"] for r in rows} == {"selective"}


def test_space_is_bounded_by_chunks_not_the_space() -> None:
    job = build_search_job(compose_config(GPT3_6144, config_name="emulate_search"))
    space = build_space(job.model, job.train, job.cluster, SearchSpec())
    sizes = [len(c["tp"]) for c in space.chunks(5000, job.model, job.train)]
    v = space.values
    one_group = len(v["vpp"]) * len(v["ep"]) * len(v["etp"]) * len(v["micro_batch"]) * len(v["zero"]) \
        * len(v["recompute"])
    assert space.size > 100_000 and max(sizes) <= 5000 + one_group


def test_impossible_constraint_is_a_config_error() -> None:
    cfg = compose_config([*GPT3_6144, "search.tp=[5]"], config_name="emulate_search")
    with pytest.raises(ConfigError) as err:
        build_search_job(cfg).check(build_search(cfg))
    assert err.value.key == "search.tp"


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        (["model=llama3_405b", "cluster=single_node", "train.global_batch=8"], "none of the"),
        (["search.tp=[3]"], "search.tp=3"),
        (["search.objective=speed"], "search.objective=speed"),
        (["search.tp=abc"], "search.tp=abc"),
        (["search.objective=time_to_train"], "train.total_tokens"),
        (["search.max_gpus=1001"], "search.max_gpus=1001"),
        (["search.etp=3"], "search.etp=3"),
        (["model=llama3_8b", "cluster=single_node", "search.etp=1"], "search.etp=1"),
    ],
)
def test_cli_refuses_in_one_line(tmp_path: Path, override: list[str], expect: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "emulator.search_cli", *override], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert expect in line and "Traceback" not in proc.stderr


def test_cli_writes_the_ranked_layouts(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "emulator.search_cli", *GPT3_6144, "search.top=3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    [path] = list(tmp_path.rglob("layouts.arrow"))
    with ipc.open_file(str(path)) as reader:
        table = reader.read_all()
    assert {"tp", "pp", "dp", "cp", "ep", "vpp", "micro_batch", "zero", "recompute", "fits", "step_time_s",
            "tokens_per_s", "mfu", "memory_bytes"} <= set(table.column_names)
    assert list(tmp_path.rglob("search.json"))


def test_mixed_cluster_reports_each_pool_and_each_placement(tmp_path: Path) -> None:
    overrides = ["model=tiny", "cluster=colossus_200k", "cluster.num_gpus=256",
                 "cluster.pools=[{gpu:h100,num_gpus:192},{gpu:h200,num_gpus:64}]", "train.seq_len=1024",
                 "train.global_batch=512", "search.top=2"]
    proc = subprocess.run([sys.executable, "-m", "emulator.search_cli", *overrides], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    import json  # noqa: PLC0415

    [path] = list(tmp_path.rglob("search.json"))
    mixed = json.loads(path.read_text())["mixed"]
    assert set(mixed["by_placement"]) == {"rank_order", "by_replica"}
    assert set(mixed["by_pool"]) == {"0:h100", "1:h200"}
    assert "pool 1:h200 alone" in proc.stdout


def test_built_layouts_equal_the_filtered_grid() -> None:
    """chunks() builds only valid layouts; it must give exactly the grid's valid points."""
    for overrides in (GPT3_6144, ["experiment=grok3_colossus_100k"]):
        job = build_search_job(compose_config(overrides, config_name="emulate_search"))
        space = build_space(job.model, job.train, job.cluster, SearchSpec())

        def rows(chunks: object) -> set[tuple[float, ...]]:
            out: set[tuple[float, ...]] = set()
            for c in chunks:  # type: ignore[attr-defined]
                keys = ("tp", "cp", "pp", "dp", "vpp", "ep", "etp", "micro_batch", "zero", "recompute")
                out |= set(zip(*(c[k].tolist() for k in keys), strict=True))
            return out

        built = rows(space.chunks(100_000, job.model, job.train))
        assert built == rows(space.grid_chunks(100_000, job.model, job.train))
        assert len(built) > 1000


def test_an_axis_takes_a_single_value_as_the_contract_writes_it() -> None:
    """CONTRACT.md: search.tp=8 (a value) as well as search.tp=[4,8] (a list)."""
    one = build_search(compose_config([*GPT3_6144, "search.tp=8"], config_name="emulate_search"))
    many = build_search(compose_config([*GPT3_6144, "search.tp=[4,8]"], config_name="emulate_search"))
    assert one.tp == (8,) and many.tp == (4, 8)


def test_moe_layouts_with_expert_tp_match_emulate_alone(tmp_path: Path) -> None:
    """An MoE search varies expert tensor parallelism (etp) jointly with ep (ep x etp divides tp x cp x dp);
    sampled rows with etp = 1 and etp = tp equal emulate with the same parallel.etp."""
    overrides = GROK1_512
    rows = layouts(tmp_path, overrides, tp=(4,), cp=(2,), pp=(8,), micro_batch=(1,), zero=(1,),
                   recompute=("none",))
    assert {r["etp"] for r in rows} == {1, 2, 4, 8}  # etp may exceed tp: the expert grid is its own
    for row in rows:
        assert (row["tp"] * row["cp"] * row["dp"]) % (row["ep"] * row["etp"]) == 0, row
        m = 1024 // (row["dp"] * row["micro_batch"])
        assert row["vpp"] == 1 or m % row["pp"] == 0, row  # interleaving: micro-batches a multiple of pp
    picks = [r for r in rows if r["ep"] == 8 and r["vpp"] == 8 and r["etp"] in (1, 4)]
    assert len(picks) == 2
    for row in picks:
        step, mem, fits = emulate_row(overrides, row)
        assert step == pytest.approx(row["step_time_s"], rel=1e-12), row
        assert mem == pytest.approx(row["memory_bytes"], rel=1e-12), row
        assert fits == row["fits"], row
    # Folding with etp = 1 keeps the 8 expert-parallel ranks in one node: a faster all-to-all than etp = tp.
    by_etp = {r["etp"]: r for r in picks}
    assert by_etp[1]["step_time_s"] < by_etp[4]["step_time_s"]


def _one_layout_without_and_with_overlap(tmp_path: Path, recompute: str) -> tuple[dict, dict]:
    """The single Grok-1 layout searched with search.ep_comm_overlap off and on."""
    axes = {**GROK1_ONE_LAYOUT, "recompute": (recompute,)}
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = layouts(tmp_path / "off", GROK1_512, **axes)
    on = layouts(tmp_path / "on", GROK1_512, ep_comm_overlap=True, **axes)
    assert len(on) == len(off) == 1
    return off[0], on[0]


def test_search_costs_the_moe_all_to_all_overlap_when_asked(tmp_path: Path) -> None:
    """search.ep_comm_overlap=true: every layout costed as emulate costs it with parallel.ep_comm_overlap=true."""
    off, on = _one_layout_without_and_with_overlap(tmp_path, "none")
    assert on["step_time_s"] < off["step_time_s"]
    step, _, _ = emulate_row([*GROK1_512, "parallel.ep_comm_overlap=true"], on)
    assert step == pytest.approx(on["step_time_s"], rel=1e-12)


def test_search_over_several_module_sets(tmp_path: Path) -> None:
    """search.recompute_modules as a list of lists: every selective layout once per list, each costed as emulate
    costs it with that parallel.recompute_modules, and named in the layouts.arrow recompute_modules column; none
    and full layouts once, with an empty column. The Hydra override takes the nested list."""
    sets = [["core_attn"], ["moe_act", "layernorm"], ["moe"]]
    cfg = compose_config([*GROK1_512, "search.recompute_modules=[[core_attn],[moe_act,layernorm],[moe]]"],
                         config_name="emulate_search")
    assert build_search(cfg).module_sets == tuple(tuple(one) for one in sets)
    rows = layouts(tmp_path, GROK1_512, recompute_modules=tuple(tuple(one) for one in sets), **GROK1_ONE_LAYOUT)
    assert sorted((r["recompute"], r["recompute_modules"]) for r in rows) == sorted(
        [("none", ""), ("full", "")] + [("selective", ",".join(one)) for one in sets])
    for row in rows:
        modules = f"[{row['recompute_modules']}]" if row["recompute_modules"] else "[core_attn]"
        step, mem, _ = emulate_row([*GROK1_512, f"parallel.recompute_modules={modules}"], row)
        assert step == pytest.approx(row["step_time_s"], rel=1e-12), row
        assert mem == pytest.approx(row["memory_bytes"], rel=1e-12), row
    assert len({r["memory_bytes"] for r in rows if r["recompute"] == "selective"}) == 3


@pytest.mark.parametrize(("value", "why"), [
    ([["core_attn"], "moe"], "not a mix"),
    ([["core_attn"], []], "at least one module"),
    ([["moe", "moe_act"], ["moe_act", "moe"]], "the same set twice"),
    ([["moe", "moe"]], "must not repeat"),
])
def test_bad_module_sets_are_one_line_errors(value: list[object], why: str) -> None:
    with pytest.raises(ConfigError, match=r"search\.recompute_modules=.*" + why):
        SearchSpec(recompute_modules=tuple(value))  # type: ignore[arg-type]


def test_search_overlap_only_where_megatron_core_runs_it(tmp_path: Path) -> None:
    """search.ep_comm_overlap=true leaves the layouts Megatron-Core refuses the overlap for (here full
    recomputation) costed without it, as emulate can only cost them."""
    off, on = _one_layout_without_and_with_overlap(tmp_path, "full")
    assert on["step_time_s"] == off["step_time_s"]


def test_search_recomputes_the_named_modules_for_selective(tmp_path: Path) -> None:
    """search.recompute_modules: the searched selective layouts re-run those modules, as emulate with
    parallel.recompute_modules does; the default is Megatron's [core_attn]."""
    overrides = GROK1_512
    axes = {**GROK1_ONE_LAYOUT, "recompute": ("selective",)}
    (tmp_path / "core").mkdir()
    (tmp_path / "act").mkdir()
    core = layouts(tmp_path / "core", overrides, **axes)
    act = layouts(tmp_path / "act", overrides, recompute_modules=("moe_act", "layernorm"), **axes)
    assert len(core) == len(act) == 1
    assert act[0]["memory_bytes"] != core[0]["memory_bytes"]
    step, mem, _ = emulate_row([*overrides, "parallel.recompute_modules=[moe_act,layernorm]"], act[0])
    assert step == pytest.approx(act[0]["step_time_s"], rel=1e-12)
    assert mem == pytest.approx(act[0]["memory_bytes"], rel=1e-12)
    with pytest.raises(ConfigError, match=r"search\.recompute_modules"):
        SearchSpec(recompute_modules=("attn",))
