"""Model FLOPs per token (emulator/cost/flops.py) against Narayanan et al. 2021 (Megatron-LM, eq. 3).

For a GPT model (f = 4h, tied embeddings): FLOPs per iteration without recomputation
``72 B s l h^2 (1 + s / (6 h) + V / (12 l h))`` = per token ``72 l h^2 + 12 l s h + 6 h V``; with full
recomputation ``96 B s l h^2 (1 + s / (6 h) + V / (16 l h))`` = per token ``96 l h^2 + 16 l s h + 6 h V``.
"""

from __future__ import annotations

import pytest

from emulator import catalogue
from emulator.cost.flops import matmul_params_per_token, model_flops_per_token, recompute_flops_per_token


def test_gpt3_model_flops_match_narayanan() -> None:
    """GPT-3 175B, s = 2048: 72 l h^2 + 12 l s h + 6 h V per token."""
    L, h, s, V = 96, 12288, 2048, 51200
    expected = 72 * L * h**2 + 12 * L * s * h + 6 * h * V
    assert model_flops_per_token(catalogue.model("gpt3_175b"), s) == pytest.approx(expected, rel=1e-12)


def test_gpt3_full_recompute_matches_narayanan_96() -> None:
    """With full recomputation (the paper's 4 passes): 96 l h^2 + 16 l s h + 6 h V per token."""
    L, h, s, V = 96, 12288, 2048, 51200
    model = catalogue.model("gpt3_175b")
    total = model_flops_per_token(model, s) + recompute_flops_per_token(model, s, "full")
    assert total == pytest.approx(96 * L * h**2 + 16 * L * s * h + 6 * h * V, rel=1e-12)


def test_selective_recompute_adds_the_attention_core_forward() -> None:
    """Selective recompute runs QK^T and PV again: 2 x 2 s a d per layer and token = 4 L s h for GPT-3."""
    L, h, s = 96, 12288, 2048
    model = catalogue.model("gpt3_175b")
    assert recompute_flops_per_token(model, s, "selective") == pytest.approx(4 * L * s * h, rel=1e-12)
    assert recompute_flops_per_token(model, s, "none") == 0.0


def test_moe_counts_active_parameters_only() -> None:
    """Grok-1: the matmul parameters a token meets are the active ones without the (tied) embedding table."""
    model = catalogue.model("grok1")
    assert matmul_params_per_token(model) == model.active_params() - 131072 * 6144
