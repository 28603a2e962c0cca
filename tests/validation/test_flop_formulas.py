"""The FLOP counts the sources use, recomputed by hand and against figures their publishers printed in pairs."""

from __future__ import annotations

import re

import pytest

from emulator import catalogue
from emulator.validation import build_row, load_rows, mbridge_flops_per_token, source_flops_per_step


def test_mbridge_count_by_hand_for_qwen3_235b() -> None:
    """Qwen3-235B-A22B: L 94, h 4096, 64 query heads and 4 KV heads of 128, 8 of 128 experts of width 1536 (SwiGLU),
    no shared expert, vocab 151,936, sequence 4096."""
    L, h, q, k, s, f, top, V = 94, 4096, 64 * 128, 4 * 128, 4096, 1536, 8, 151936
    attention = 6 * (h * (q + 2 * k) + q * h + q * s)
    mlp = 6 * h * f * top * 3
    by_hand = L * (attention + mlp) + 6 * h * V
    assert by_hand == pytest.approx(148.0348e9, rel=1e-6)
    assert mbridge_flops_per_token(catalogue.model("qwen3_235b_a22b"), 4096) == pytest.approx(by_hand, rel=1e-12)


def test_mbridge_count_reproduces_a_published_pair() -> None:
    """Megatron-Bridge PR #5722 printed both figures of two Qwen3-235B-A22B MXFP8 runs on 256 GPUs:
    1,083.66 TFLOP/s/GPU = 7,320.274 tokens/s/GPU (GB200) and 1,300.44 = 8,784.492 (GB300)."""
    per_token = mbridge_flops_per_token(catalogue.model("qwen3_235b_a22b"), 4096)
    for tflops, tokens in ((1083.66, 7320.274), (1300.44, 8784.492)):
        assert tflops * 1e12 / tokens == pytest.approx(per_token, rel=1e-4)


def test_mbridge_count_matches_the_tflops_printed_beside_tokens_per_s() -> None:
    """Megatron-Bridge tables print model TFLOP/s/GPU beside tokens/s/GPU; the rows keep the former in their notes.
    For every full-attention GQA row the count turns one into the other within the rounding of the table."""
    checked = 0
    for row in load_rows():
        m = re.search(r"Also published: ([\d,.]+) model TFLOP/s/GPU \(mbridge_2025", row.get("notes", ""))
        if not m or row["published"]["metric"] != "tokens_per_s_per_gpu":
            continue
        model, train, _, _ = build_row(row)
        if model.is_mla or model.mtp_layers or model.sliding_window:
            continue
        tflops = float(m.group(1).replace(",", ""))
        predicted = mbridge_flops_per_token(model, train.seq_len) * row["published"]["value"] / 1e12
        assert predicted == pytest.approx(tflops, abs=0.6, rel=0.005), row["id"]
        checked += 1
    assert checked >= 30


def test_per_step_count_scales_with_the_global_batch() -> None:
    model = catalogue.model("qwen3_30b_a3b")
    row = next(r for r in load_rows() if r["id"] == "mlm5728_h100_qwen3_30b_a3b_bf16_32")
    _, train, _, _ = build_row(row)
    assert source_flops_per_step("mbridge_2025", model, train) == pytest.approx(
        mbridge_flops_per_token(model, 4096) * 256 * 4096, rel=1e-12)


def test_mbridge_count_refuses_what_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="deepseek"):
        mbridge_flops_per_token(catalogue.model("deepseek_v3"), 4096)
