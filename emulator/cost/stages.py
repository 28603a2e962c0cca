"""How layers fall on pipeline stages.

Megatron-Core splits ``L`` layers evenly over ``pp`` stages; when ``pp`` does not divide ``L``,
published runs (Llama 3 405B: 126 layers on 16 stages) give the first and the last stage fewer
layers, since they also carry the embedding and the output layer + loss.

Multi-token prediction (DeepSeek-V3, ``mtp_layers``): each MTP module is one more transformer layer
(MoE in an MoE model), a 2h -> h projection and another pass of the shared output head, all on the
last stage (DeepSeek-AI 2024, Sec. 2.2); :func:`StageLayers.of` adds the layers there and the
output head count is ``1 + mtp_layers``. With ``c = ceil(L/pp)``
and ``slack = pp*c - L``: middle stages hold ``c`` layers, the first ``c - floor(slack/2)``, the
last ``c - ceil(slack/2)`` (never below 0). The leading dense layers of an MoE model sit on the
first stage. With interleaving (vpp > 1) each stage holds the same total, in ``vpp`` chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import where
from emulator.cost.layout import LayoutBatch
from emulator.spec.model import ModelSpec


@dataclass(frozen=True)
class StageLayers:
    """Dense and MoE layer counts of the first, a middle and the last pipeline stage."""

    first_dense_L: Any
    first_moe_L: Any
    mid_dense_L: Any
    mid_moe_L: Any
    last_dense_L: Any
    last_moe_L: Any

    @classmethod
    def of(cls, model: ModelSpec, lay: LayoutBatch, xp: Any) -> StageLayers:
        L = float(model.num_layers)
        c_L = xp.ceil(L / lay.pp_L)
        slack_L = lay.pp_L * c_L - L
        first_L = xp.maximum(c_L - xp.floor(slack_L / 2.0), 0.0)
        last_L = xp.maximum(c_L - xp.ceil(slack_L / 2.0), 0.0)
        single = lay.pp_L == 1.0
        first_L = where(single, L, first_L, xp)
        last_L = where(single, L, last_L, xp)
        mtp = float(model.mtp_layers)
        if not model.is_moe:
            zero_L = xp.zeros_like(c_L)
            return cls(first_L + where(single, mtp, 0.0, xp), zero_L, c_L, zero_L, last_L + mtp, zero_L)
        nd = float(model.num_dense_layers)
        first_dense_L = xp.minimum(first_L, nd)
        last_dense_L = where(single, first_dense_L, 0.0, xp)
        first_moe_L = first_L - first_dense_L + where(single, mtp, 0.0, xp)
        return cls(first_dense_L, first_moe_L, xp.zeros_like(c_L), c_L, last_dense_L, last_L - last_dense_L + mtp)
