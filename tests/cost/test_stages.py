"""Layers per pipeline stage (emulator/cost/stages.py).

Llama 3 405B (126 layers) trained on 16 pipeline stages with one layer fewer on the first and the last stage
(Llama 3 paper Sec. 3.3.2): ``c = ceil(L / pp)``, ``slack = pp c - L``, first ``c - floor(slack/2)``, last
``c - ceil(slack/2)``, middle ``c``. The leading dense layers of an MoE model sit on the first stage.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.cost.stages import StageLayers
from tests.conftest import one_layout


def counts(model_name: str, **layout: object) -> tuple[float, ...]:
    st = StageLayers.of(catalogue.model(model_name), one_layout(**layout), np)
    return tuple(float(x[0]) for x in (st.first_dense_L, st.first_moe_L, st.mid_dense_L, st.mid_moe_L,
                                        st.last_dense_L, st.last_moe_L))


def test_llama3_405b_on_16_stages() -> None:
    """126 layers / 16: c = 8, slack = 2: first 7, middle 8, last 7 (7 + 14 x 8 + 7 = 126)."""
    first, _, mid, _, last, _ = counts("llama3_405b", pp=16, dp=1)
    assert (first, mid, last) == (7, 8, 7)
    assert first + 14 * mid + last == 126


@pytest.mark.parametrize("pp", [2, 4, 8, 16, 32])
def test_even_split(pp: int) -> None:
    """Llama 3 8B's 32 layers split evenly over any power-of-two pp."""
    first, _, mid, _, last, _ = counts("llama3_8b", pp=pp, dp=1)
    assert first == mid == last == 32 / pp


def test_single_stage_holds_everything() -> None:
    """pp=1: the one stage is first and last, with all L layers."""
    first, _, _, _, last, _ = counts("llama3_8b", dp=8)
    assert first == last == 32


def test_deepseek_v3_dense_layers_on_the_first_stage() -> None:
    """DeepSeek-V3: 61 layers, 3 dense then 58 MoE, on 16 stages: c = 4, slack = 3: first 3 (all dense),
    middle 4 MoE, last 2 MoE plus the MTP module's MoE layer (mtp_layers=1); 3 + 14 x 4 + 2 = 61 (+1 MTP)."""
    fd, fm, md, mm, ld, lm = counts("deepseek_v3", pp=16, dp=8, ep=8)
    assert (fd, fm, md, mm, ld, lm) == (3, 0, 0, 4, 0, 3)
    assert fd + fm + 14 * (md + mm) + ld + lm == 61 + 1


def test_interleaving_keeps_layers_per_stage() -> None:
    """vpp chunks change the order, not how many layers a stage holds."""
    assert counts("llama3_8b", pp=4, vpp=2, dp=1) == counts("llama3_8b", pp=4, vpp=1, dp=1)
