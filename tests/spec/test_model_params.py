"""Parameter counts of the shipped model configs against published sizes.

The counts come from ``ModelSpec.total_params`` / ``active_params`` (projection, MLP, expert, router and
embedding weights; norms and biases ignored). Each published size is quoted with its source; where the
test recomputes a count by hand it writes the formula out with the config's numbers.
"""

from __future__ import annotations

import pytest

from emulator import catalogue
from emulator.spec import ModelSpec

# (model, published total, published active or None, relative tolerance, source)
PUBLISHED = [
    ("llama3_405b", 405.8e9, None, 0.005, "Llama 3 Herd of Models, Table 3: 405B (HF card 405.8B)"),
    ("llama3_70b", 70.6e9, None, 0.005, "Llama 3.1 70B HF card: 70.6B"),
    ("llama3_8b", 8.03e9, None, 0.005, "Llama 3.1 8B HF card: 8.03B"),
    ("gpt3_175b", 174.6e9, None, 0.01, "Brown et al. 2020: 175B (174.6B with vocab 51200)"),
    ("grok1", 315.7e9, 83.8e9, 0.01, "published.yaml arch.grok1 derived_total/active_params_b"),
    ("grok2", 269.5e9, 114.9e9, 0.01, "published.yaml arch.grok2 derived_total/active_params_b"),
    ("deepseek_v3", 671e9, 37e9, 0.03, "DeepSeek-V3 report abstract: 671B total, 37B active (MTP not counted)"),
    ("qwen3_30b_a3b", 30.5e9, 3.3e9, 0.05, "Qwen3-30B-A3B model card: 30.5B total, 3.3B activated"),
    ("gpt_oss_120b", 116.8e9, None, 0.03, "OpenAI gpt-oss model card: 116.8B total"),
]


@pytest.mark.parametrize(("name", "total", "active", "rel", "source"), PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_total_and_active_params_match_published(name: str, total: float, active: float | None, rel: float,
                                                  source: str) -> None:
    """The shipped config reproduces the published total (and active) parameter count."""
    model = catalogue.model(name)
    assert model.total_params() == pytest.approx(total, rel=rel), source
    if active is not None:
        assert model.active_params() == pytest.approx(active, rel=rel), source
    elif not model.is_moe:
        assert model.active_params() == model.total_params()


def test_gpt3_175b_is_12_l_h2_plus_v_h() -> None:
    """GPT-3 175B (tied embeddings, no GQA, f = 4h): N = 12 L h^2 + V h (Kaplan et al. 2020 / Narayanan 2021)."""
    L, h, V = 96, 12288, 51200
    by_hand = 12 * L * h**2 + V * h
    assert by_hand == 174_575_321_088
    assert catalogue.model("gpt3_175b").total_params() == pytest.approx(by_hand, rel=0.01)
    assert by_hand == pytest.approx(174.6e9, rel=0.001)


def test_llama3_8b_gqa_attention_params_by_hand() -> None:
    """Llama 3 8B GQA block: Wq h x (32*128), Wk and Wv h x (8*128), Wo (32*128) x h: h(q + 2kv) + q h."""
    h, q, kv = 4096, 32 * 128, 8 * 128
    by_hand = h * (q + 2 * kv) + q * h
    assert by_hand == 41_943_040
    assert catalogue.model("llama3_8b").attention_params() == by_hand


def test_llama3_8b_total_by_hand() -> None:
    """Llama 3 8B: L (attention + 3 h f) + 2 V h (untied input and output embeddings) = 8.03e9."""
    L, h, f, V = 32, 4096, 14336, 128256
    attn = h * (32 * 128 + 2 * 8 * 128) + 32 * 128 * h
    by_hand = L * (attn + 3 * h * f) + 2 * V * h
    assert by_hand == catalogue.model("llama3_8b").total_params()
    assert by_hand == pytest.approx(8.03e9, rel=0.001)


def test_grok1_total_and_active_by_hand() -> None:
    """Grok-1 (published.yaml arch.grok1): 64 layers of GQA attention + 8 gated experts (3 h f_e each) + router
    h*E, tied embedding V h counted once; active keeps 2 of 8 experts."""
    L, h, E, k, fe, V = 64, 6144, 8, 2, 32768, 131072
    attn = h * (48 * 128 + 2 * 8 * 128) + 48 * 128 * h
    expert = 3 * h * fe
    total = L * (attn + E * expert + h * E) + V * h
    active = total - L * (E - k) * expert
    model = catalogue.model("grok1")
    assert model.total_params() == total
    assert model.active_params() == active
    assert total == pytest.approx(315.7e9, rel=0.001)
    assert active == pytest.approx(83.8e9, rel=0.001)


def test_deepseek_v3_mla_attention_by_hand() -> None:
    """DeepSeek-V3 MLA (report Sec. 2.1): q down h*1536, q up 1536*128*(128+64), kv down h*(512+64),
    kv up 512*128*(128+128), out 128*128*h."""
    h, a = 7168, 128
    by_hand = h * 1536 + 1536 * a * (128 + 64) + h * (512 + 64) + 512 * a * (128 + 128) + a * 128 * h
    assert catalogue.model("deepseek_v3").attention_params() == by_hand


def test_moe_active_counts_only_top_k_experts() -> None:
    """Active = total - (E - k) * expert weights per MoE layer, for a small synthetic MoE."""
    m = ModelSpec(name="m", num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=4, head_dim=16,
                  ffn_hidden_size=0, num_experts=4, experts_per_token=1, expert_ffn_hidden_size=128,
                  vocab_size=100, gated_mlp=False)
    attn = 4 * 64 * 64
    expert = 2 * 64 * 128
    total = 3 * (attn + 4 * expert + 64 * 4) + 2 * 100 * 64
    assert m.total_params() == total
    assert m.active_params() == total - 3 * 3 * expert
