"""Property: any plain config dict either builds a job that evaluates to finite, positive numbers, or is refused
with one ConfigError line naming the key.

The dicts start from the composed default (``to_plain(compose_config([]))``, the shape Hydra hands to
``build_job``) and replace layout, model, cluster-size and training values with random ones, valid and invalid
(0, negatives, non-divisors, unknown modes). ``build_job`` is the one validation gate: no other exception type
may escape it, and whatever it accepts the cost model must evaluate (NumPy warnings are errors in this suite,
so a division by zero fails the property too).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.app import evaluate_nominal
from emulator.config.compose import compose_config
from emulator.config.job import build_job, to_plain
from emulator.spec import ConfigError, JobSpec
from emulator.spec.parallel import RECOMPUTE_MODULES, ep_overlap_blocker

BASE = to_plain(compose_config([]))
KEY_PREFIXES = ("model.", "gpu.", "cluster.", "parallel.", "train.", "run.", "parallel=")
SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


MUTATIONS: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("parallel", "tp"): st.integers(-2, 9),
    ("parallel", "pp"): st.integers(-2, 9),
    ("parallel", "dp"): st.integers(-3, 17),
    ("parallel", "cp"): st.integers(-1, 4),
    ("parallel", "ep"): st.integers(-1, 9),
    ("parallel", "etp"): st.integers(-1, 9),
    ("parallel", "vpp"): st.integers(-1, 4),
    ("parallel", "micro_batch"): st.integers(-1, 5),
    ("parallel", "zero"): st.integers(-1, 4),
    ("parallel", "recompute"): st.sampled_from(["all", "", "Selective"]),
    ("parallel", "recompute_modules"): st.sampled_from([["attn"], [], "moe_act", ["moe", "moe"], [1]]),
    ("parallel", "ep_comm_overlap"): st.just(True),  # refused where Megatron-Core refuses it, else valid
    ("model", "num_layers"): st.integers(-2, 13),
    ("model", "hidden_size"): st.integers(-64, 300),
    ("model", "num_heads"): st.integers(-2, 17),
    ("model", "num_kv_heads"): st.integers(-1, 9),
    ("model", "head_dim"): st.integers(-16, 64),
    ("model", "ffn_hidden_size"): st.integers(-1, 512),
    ("model", "vocab_size"): st.integers(-5, 1000),
    ("model", "num_experts"): st.integers(-1, 9),
    ("model", "experts_per_token"): st.integers(-1, 9),
    ("model", "expert_ffn_hidden_size"): st.integers(-1, 256),
    ("model", "num_dense_layers"): st.integers(-1, 20),
    ("model", "local_layers_fraction"): st.sampled_from([1.5, -0.5, 0.25]),
    ("model", "sliding_window"): st.integers(-1, 300),
    ("cluster", "num_gpus"): st.integers(-8, 130),
    ("cluster", "gpus_per_node"): st.integers(-1, 9),
    ("train", "seq_len"): st.integers(-4, 1030),
    ("train", "global_batch"): st.integers(-2, 70),
    ("train", "precision"): st.sampled_from(["fp16", "FP8"]),
    ("train", "attention_kernel"): st.sampled_from(["sdpa"]),
    ("train", "moe_dispatcher"): st.sampled_from(["deepep", ""]),
    ("train", "moe_fp8_padding"): st.sampled_from(["pad", "Copy"]),
    ("train", "moe_load_imbalance"): st.sampled_from([0.5, -1.0]),
    ("train", "moe_comm_sms"): st.integers(-3, -1),
    ("model", "router_groups"): st.integers(-1, 9),
    ("model", "router_group_topk"): st.integers(-1, 9),
    ("train", "dropout"): st.sampled_from([1.0, -0.1, 0.5]),
}
MUTATION_KEYS = sorted(MUTATIONS)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A consistent small job: model dims, a layout that divides them, a cluster of exactly tp*pp*cp*dp GPUs."""
    cfg = copy.deepcopy(BASE)
    heads = draw(st.sampled_from([2, 4, 8, 16]))
    kv = heads // draw(st.sampled_from([d for d in (1, 2, 4) if heads % d == 0]))
    layers = draw(st.integers(2, 12))
    moe = draw(st.booleans())
    experts = draw(st.sampled_from([4, 8])) if moe else 1
    cfg["model"].update(
        num_layers=layers, hidden_size=draw(st.sampled_from([64, 128, 256])), num_heads=heads, num_kv_heads=kv,
        head_dim=draw(st.sampled_from([16, 32, 64])),
        ffn_hidden_size=draw(st.sampled_from([0, 128])) if moe else draw(st.sampled_from([128, 512])),
        dense_ffn_hidden_size=draw(st.sampled_from([0, 256])),
        num_experts=experts, experts_per_token=draw(st.integers(1, experts)),
        expert_ffn_hidden_size=draw(st.sampled_from([128, 256])) if moe else 0,
        num_dense_layers=draw(st.integers(0, layers - 1)) if moe else 0,
        vocab_size=draw(st.sampled_from([100, 1000])), gated_mlp=draw(st.booleans()),
        tied_embeddings=draw(st.booleans()), sliding_window=draw(st.sampled_from([0, 64])),
        local_layers_fraction=draw(st.sampled_from([0.0, 0.5, 1.0])),
    )
    tp = draw(st.sampled_from([t for t in (1, 2, 4, 8) if kv % t == 0]))
    pp = draw(st.sampled_from([p for p in (1, 2, 4) if p <= layers]))
    vpp = draw(st.sampled_from([v for v in (1, 2) if pp > 1 and pp * v <= layers] or [1]))
    cp = draw(st.sampled_from([1, 2]))
    dp = draw(st.sampled_from([1, 2, 4]))
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8) if experts % e == 0 and (dp * cp) % e == 0]))
    mb = draw(st.sampled_from([1, 2]))
    cfg["parallel"].update(
        tp=tp, pp=pp, vpp=vpp, cp=cp, ep=ep, micro_batch=mb, dp=draw(st.sampled_from([dp, -1])),
        zero=draw(st.integers(0, 3)), recompute=draw(st.sampled_from(["none", "selective", "full"])),
        sequence_parallel=draw(st.booleans()), tp_comm_overlap=draw(st.booleans()),
        dp_comm_overlap=draw(st.booleans()), pp_comm_overlap=draw(st.booleans()),
        ep_comm_overlap=draw(st.booleans()),
    )
    if cfg["parallel"]["recompute"] == "selective":
        cfg["parallel"]["recompute_modules"] = draw(st.lists(st.sampled_from(RECOMPUTE_MODULES), min_size=1,
                                                             max_size=4, unique=True))
    par = cfg["parallel"]
    # A valid job turns the MoE all-to-all overlap on only where Megatron-Core allows it (mutations may break it).
    par["ep_comm_overlap"] = par["ep_comm_overlap"] and not ep_overlap_blocker(
        ep, pp, vpp, par["recompute"], tuple(par.get("recompute_modules", ())))
    if moe:
        groups = draw(st.sampled_from([g for g in (1, 2, 4) if experts % g == 0]))
        topk = draw(st.sampled_from([0, *range(1, groups + 1)]))
        per_token = cfg["model"]["experts_per_token"]
        if topk and per_token > topk * (experts // groups):
            topk = 0
        cfg["model"].update(router_groups=groups, router_group_topk=topk)
    cfg["cluster"].update(num_gpus=tp * pp * cp * dp, gpus_per_node=1, pools=[])
    cfg["train"].update(
        seq_len=2 * cp * draw(st.integers(16, 256)), global_batch=dp * mb * draw(st.integers(1, 8)),
        precision=draw(st.sampled_from(["bf16", "fp8"])),
        attention_kernel=draw(st.sampled_from(["flash", "flash2", "unfused"])),
        dropout=draw(st.sampled_from([0.0, 0.1])), moe_dispatcher=draw(st.sampled_from(["alltoall", "flex"])),
        moe_fp8_padding=draw(st.sampled_from(["auto", "copy", "fused"])),
        moe_comm_sms=draw(st.sampled_from([0, 20, 200])),
    )
    return cfg


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid job with 0, 1 or 2 values replaced by random ones (0, negatives, non-divisors, unknown modes)."""
    cfg = draw(valid_configs())
    for _ in range(draw(st.integers(0, 2))):
        section, key = draw(st.sampled_from(MUTATION_KEYS))
        cfg[section][key] = draw(MUTATIONS[(section, key)])
    return cfg


def _check_error(err: ConfigError) -> None:
    text = str(err)
    assert "\n" not in text, text
    assert "=" in text, text
    assert text.startswith(KEY_PREFIXES), text
    assert text.startswith(f"{err.key}="), text


def _check_job(job: JobSpec) -> None:
    res = evaluate_nominal(job)
    step = float(res.step_time_s_L[0])
    assert math.isfinite(step) and step > 0.0, step
    parts = {k: float(v[0]) for k, v in res.breakdown_s.items()}
    assert all(math.isfinite(v) and v >= 0.0 for v in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(step, rel=1e-9)
    assert float(res.mfu_L[0]) > 0.0 and math.isfinite(float(res.mfu_L[0]))
    for st_ in res.by_gpu_type.values():
        total = float(st_.memory.total_L[0])
        assert math.isfinite(total) and total > 0.0, total
        assert all(math.isfinite(v) and v >= 0.0 for v in st_.memory.as_dict(0).values())


@SETTINGS
@given(cfg=configs())
def test_build_job_accepts_or_refuses_with_one_line(cfg: dict[str, Any]) -> None:
    """build_job(plain dict) returns a JobSpec that evaluates to a finite positive step and memory, or raises a
    ConfigError whose one-line message starts with the offending key (model./gpu./cluster./parallel./train./run.,
    or 'parallel=' for the tp x pp x cp x dp product); no other exception type."""
    try:
        job = build_job(cfg)
    except ConfigError as err:
        _check_error(err)
        return
    _check_job(job)


def test_strategy_reaches_valid_jobs() -> None:
    """Guard: both paths are exercised (many dicts build, many are refused)."""
    ok = bad = 0

    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cfg=configs())
    def count(cfg: dict[str, Any]) -> None:
        nonlocal ok, bad
        try:
            build_job(cfg)
        except ConfigError:
            bad += 1
            return
        ok += 1

    count()
    assert ok >= 10
    assert bad >= 10


# ---------------------------------------------------------------- wrong types (plain dicts skip Hydra's schema)

LAYOUT_KEYS = ("tp", "pp", "cp", "ep", "vpp", "micro_batch", "zero", "recompute", "recompute_modules",
               "sequence_parallel")
MODEL_KEYS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_hidden_size", "vocab_size",
              "gated_mlp", "local_layers_fraction")
TRAIN_KEYS = ("seq_len", "global_batch", "precision", "dropout")
WRONG = [None, "x", 2.5, True, [], {}]


WRONG_CASES = [(section, key, value) for section, keys in (("parallel", LAYOUT_KEYS), ("model", MODEL_KEYS),
                                                             ("train", TRAIN_KEYS))
               for key in keys for value in WRONG]


@pytest.mark.parametrize(("section", "key", "value"), WRONG_CASES,
                         ids=[f"{s}.{k}={v!r}" for s, k, v in WRONG_CASES])
def test_wrong_types_are_config_errors(section: str, key: str, value: Any) -> None:
    """A value of the wrong type (None, a string, a fraction, a bool, a list, a mapping) for a layout, model or
    training key of the default job is either a valid value (a bool for a bool key) or refused with a one-line
    ConfigError naming exactly that key."""
    cfg = copy.deepcopy(BASE)
    cfg[section][key] = value
    try:
        job = build_job(cfg)
    except ConfigError as err:
        _check_error(err)
        assert err.key == f"{section}.{key}", str(err)
        return
    assert isinstance(value, bool), f"{section}.{key}={value!r} was accepted"
    _check_job(job)


# ---------------------------------------------------------------- known holes in the gate (deterministic)


def _small(**overrides: dict[str, Any]) -> dict[str, Any]:
    """A small valid job (tiny dense model on 16 GPUs) with section overrides."""
    cfg = copy.deepcopy(BASE)
    cfg["model"].update(num_layers=4, hidden_size=256, num_heads=4, num_kv_heads=4, head_dim=64, ffn_hidden_size=512,
                        num_experts=1, experts_per_token=1, expert_ffn_hidden_size=0, vocab_size=1000)
    cfg["cluster"].update(num_gpus=16, gpus_per_node=8)
    cfg["parallel"].update(tp=2, pp=1, dp=-1, cp=1, vpp=1, ep=1, etp=0, micro_batch=1, zero=1)
    cfg["train"].update(seq_len=256, global_batch=16)
    for section, values in overrides.items():
        cfg[section].update(values)
    return cfg


def test_small_job_is_valid() -> None:
    """The base of the cases below builds (dp = 16 / tp = 8) and evaluates."""
    job = build_job(_small())
    assert job.parallel.dp == 8
    _check_job(job)




@pytest.mark.parametrize("dp", [None, "x", 8.5])
def test_parallel_dp_of_wrong_type_is_a_config_error(dp: Any) -> None:
    """parallel.dp must be an integer: None, a string or a fraction is a ConfigError naming parallel.dp."""
    with pytest.raises(ConfigError) as info:
        build_job(_small(parallel={"dp": dp}))
    assert info.value.key == "parallel.dp"




@pytest.mark.parametrize(("key", "value"), [("num_gpus", 16.5), ("gpus_per_node", 8.9), ("nvlink_domain", 7.5)])
def test_fractional_cluster_counts_are_config_errors(key: str, value: float) -> None:
    """GPU counts and domain sizes are integers: a fraction is a ConfigError naming the cluster key."""
    with pytest.raises(ConfigError) as info:
        build_job(_small(cluster={key: value}))
    assert info.value.key == f"cluster.{key}"




def test_malformed_pool_entry_is_a_config_error() -> None:
    """cluster.pools entries are mappings {gpu, num_gpus}: anything else is a ConfigError naming cluster.pools[i]."""
    with pytest.raises(ConfigError) as info:
        build_job(_small(cluster={"pools": [5]}))
    assert info.value.key.startswith("cluster.pools")
