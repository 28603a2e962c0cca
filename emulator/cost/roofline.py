"""Roofline time of an op on a GPU type, with the efficiency curves of the GPU config.

``time = max(flops / (peak * eff_flops), bytes / (hbm_bw * eff_hbm)) + kernels * overhead``

- GEMMs: ``eff_flops(F) = gemm_max * F / (F + F_half)`` for a kernel of ``F`` FLOPs, i.e. a large
  GEMM runs at ``gemm_max`` of the dense peak and a GEMM of ``F_half`` FLOPs at half of that.
  Equivalently ``time = F / (peak * gemm_max) + F_half / (peak * gemm_max)``: a fixed per-kernel
  cost (launch, prologue/epilogue, last partial wave) added to the streaming time.
- The fused attention core: FLOPs at the kernel's measured fraction of the BF16 peak (forward and
  backward differ; FlashAttention-2 has its own fractions), never faster than its HBM traffic allows.
- Element-wise kernels: bytes at the achievable HBM bandwidth plus a fixed cost per kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import where
from emulator.cost.layout import LayoutBatch
from emulator.cost.ops import ATTENTION, ATTENTION_FA2, GEMM, GEMM_BF16, MEMORY, Op
from emulator.spec.gpu import GpuSpec


@dataclass(frozen=True)
class OpTime:
    """Forward and backward seconds of one op (per GPU, per micro-batch)."""

    name: str
    fwd_s_L: Any
    bwd_s_L: Any
    modules: tuple[str, ...]
    """The op's recompute modules (:attr:`emulator.cost.ops.Op.modules`)."""
    memory_bound_s_L: Any
    """Forward + backward seconds of this op where HBM traffic, not arithmetic, sets its time."""


def op_time(op: Op, gpu: GpuSpec, precision: str, xp: Any) -> OpTime:
    eff = gpu.efficiency
    mem_bw = gpu.hbm_bytes_per_s * eff.hbm
    factor = op.backward_factor
    if op.kind in (GEMM, GEMM_BF16):
        prec = precision if op.kind == GEMM else "bf16"
        peak = gpu.peak_flops_per_s(prec) * gpu.gemm_efficiency_max(prec)
        kernel_L = xp.maximum(op.kernel_flops_L, 1.0)
        curve_L = kernel_L / (kernel_L + eff.gemm_half_flops)
        compute_L = op.flops_L / (peak * curve_L)
        traffic_L = op.bytes_L / mem_bw
        fwd = xp.maximum(compute_L, traffic_L)
        bwd = factor * fwd
        mem_bound = where(traffic_L > compute_L, fwd + bwd, 0.0, xp)
    elif op.kind in (ATTENTION, ATTENTION_FA2):
        peak = gpu.bf16_flops_per_s
        fa2 = op.kind == ATTENTION_FA2
        eff_fwd = eff.attention_fa2_fwd if fa2 else eff.attention_fwd
        eff_bwd = eff.attention_fa2_bwd if fa2 else eff.attention_bwd
        compute_L = op.flops_L / (peak * eff_fwd)
        traffic_L = op.bytes_L / mem_bw
        fwd = xp.maximum(compute_L, traffic_L)
        bwd = xp.maximum(factor * op.flops_L / (peak * eff_bwd), factor * traffic_L)
        mem_bound = where(traffic_L > compute_L, fwd + bwd, 0.0, xp)
    else:
        assert op.kind == MEMORY, op.kind
        fwd = op.bytes_L / mem_bw + op.kernels * eff.kernel_overhead_s
        bwd = factor * fwd
        mem_bound = fwd + bwd
    return OpTime(op.name, fwd, bwd, op.modules, mem_bound)


@dataclass(frozen=True)
class BlockTime:
    """Seconds of a group of ops (a layer, the embedding, the output layer) per micro-batch."""

    fwd_s_L: Any
    bwd_s_L: Any
    """Backward, without recomputation."""
    memory_bound_s_L: Any
    """Forward + backward seconds spent in memory-bound ops."""
    by_op: tuple[OpTime, ...]


def block_time(ops: list[Op], gpu: GpuSpec, precision: str, xp: Any) -> BlockTime:
    times = tuple(op_time(op, gpu, precision, xp) for op in ops)
    fwd = sum((t.fwd_s_L for t in times[1:]), times[0].fwd_s_L)
    bwd = sum((t.bwd_s_L for t in times[1:]), times[0].bwd_s_L)
    mem = sum((t.memory_bound_s_L for t in times[1:]), times[0].memory_bound_s_L)
    return BlockTime(fwd, bwd, mem, times)


def recomputed_weights(modules: list[tuple[str, ...]], lay: LayoutBatch, xp: Any) -> list[Any]:
    """Per op (given by its recompute modules): 1.0 in the layouts whose selective recomputation re-runs it
    (any of its modules is in ``parallel.recompute_modules``; an op in two named modules runs once), else 0.0;
    a Python 0.0 for an op in no module."""
    flags: dict[str, Any] = {}
    out: list[Any] = []
    for mods in modules:
        if not mods:
            out.append(0.0)
            continue
        w = None
        for m in mods:
            if m not in flags:
                flags[m] = lay.recomputes(m, xp)
            w = flags[m] if w is None else xp.maximum(w, flags[m])
        out.append(w)
    return out


def weighted_fwd_s(times: tuple[OpTime, ...], weights: list[Any], like: Any) -> Any:
    """Forward seconds of the ops run again, per layout: ``sum w_i fwd_i`` over the ops with an array weight
    (:func:`recomputed_weights`); ``like`` gives the zero to start from."""
    total = like * 0.0
    for t, w in zip(times, weights, strict=True):
        if hasattr(w, "shape"):
            total = total + w * t.fwd_s_L
    return total
