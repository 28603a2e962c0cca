"""Host (CPU) launch time and the GPU idle time it causes, per layer and micro-batch.

An eager PyTorch stack issues every kernel from one host thread. Issuing costs ``c`` seconds per kernel
(``gpu.host_launch_s``: Python, autograd and ATen dispatch and ``cudaLaunchKernel`` on that system's
CPU; 13.5 us on DGX H100's Xeon, 37.1 us on GB200's Grace for the same PyTorch Linear forward,
NVIDIA/TransformerEngine issue #2053). Kernels of a part captured in a CUDA graph
(``train.cuda_graph_scope``) cost one graph launch for the whole captured run of ops; a
``full_iteration`` graph costs nothing per layer.

The GPU runs a kernel when both the kernel before it has finished and the host has issued it. Two
regimes:

- The host may run ahead (no sync in the layer; every backward): the queue absorbs any front-loaded
  host work, so only the totals matter. A layer pass of GPU time ``G`` and host time ``H`` idles
  ``max(H - G, 0)``.
- The host waits for the GPU (``train.moe_host_sync``: the dropless dispatcher copies the tokens per
  expert to the host before the dispatch all-to-all): at the sync the queue is empty, and the GPU can
  only follow the host from there. With op ``i`` of ``k_i`` kernels taking ``g_i`` on the GPU and
  ``H_<i`` the host time to issue the ops before it (counted from the sync), its kernels are issued at
  ``H_<i + j c`` (``j = 1..k_i``); each of the ``k_i`` kernels takes ``g_i / k_i``, so it finishes at

      ``F_i = max(F_{i-1} + g_i,  H_<i + c + g_i,  H_<i + k_i c + g_i / k_i)``

  (a max-plus recurrence: the first term is the GPU queue, the second the op's first kernel, the third
  its last one; the other kernels lie between when host and GPU rates are each constant over the op).
  The forward pass from one sync to the next idles ``F_n - sum g_i``. The ops run in the order of the
  layer, rotated to start just after the sync; the exposed dispatch and combine all-to-alls are GPU
  time at their places with one host launch each.

Backward issues each op's backward kernels (:attr:`emulator.cost.ops.Op.backward_launches_per_kernel` per forward
kernel: two for a GEMM, three for fused attention, two for a norm, one for an element-wise or copy kernel, none
for the dispatcher's token counting; one launch per backward all-to-all) and has no sync, so it idles
``max(H_bwd - G_bwd, 0)``, unless it re-runs the dispatcher's preprocessing (full recomputation, or the ``moe``
recompute module), whose sync it then waits at (:func:`layer_host_idle_s`). Under the MoE all-to-all overlap
the forward of one micro-batch and the backward of another run as one merged layer, so the backward's launches
follow the sync too (:func:`merged_layer_idle_s`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.cost.arrays import as_float
from emulator.cost.ops import Op
from emulator.spec.gpu import GpuSpec
from emulator.spec.train import TrainSpec

SYNC_AFTER = "moe_preprocess"
"""The op at whose end the dropless dispatcher's device-to-host copy of the tokens per expert waits."""


@dataclass(frozen=True)
class HostStep:
    """One op's place in the host/GPU race: its GPU seconds and host launches."""

    gpu_s_L: Any
    launches: Any
    """Host launches: a float, or an array over layouts (grouped expert GEMMs launch one kernel per local expert)."""


def host_launches(ops: list[Op], train: TrainSpec) -> list[Any]:
    """Host launches of each op in forward order: one per kernel; ops captured by a CUDA graph scope
    count one graph launch for each run of consecutive ops of that scope (each scope is its own graph),
    and none under ``full_iteration``."""
    scopes = set(train.cuda_graph_scope)
    if "full_iteration" in scopes:
        return [0.0 for _ in ops]
    out: list[Any] = []
    previous = ""
    for op in ops:
        captured = op.graph_scope != "" and op.graph_scope in scopes
        out.append((0.0 if previous == op.graph_scope else 1.0) if captured else op.kernels)
        previous = op.graph_scope if captured else ""
    return out


def backward_launches(ops: list[Op], train: TrainSpec) -> list[Any]:
    """Host launches of each op's backward: its backward kernels per forward kernel when eager; a part
    captured by a CUDA-graph scope replays its backward graph, one launch per run of consecutive ops, as in
    forward (Transformer Engine captures the forward and the backward graph of a scope separately)."""
    fwd = host_launches(ops, train)
    scopes = set(train.cuda_graph_scope)
    return [n if (op.graph_scope != "" and op.graph_scope in scopes) or "full_iteration" in scopes
            else op.backward_launches_per_kernel * op.kernels for op, n in zip(ops, fwd, strict=True)]


def host_syncs(ops: list[Op], train: TrainSpec, moe: bool) -> bool:
    """True where the layer's host waits for the GPU once per pass: an MoE layer under dropless dispatch
    (``train.moe_host_sync``) with the dispatcher's preprocessing op to sync after."""
    return moe and train.moe_host_sync and any(op.name == SYNC_AFTER for op in ops)


def _ramp_finish(prev_finish_L: Any, issued_before_L: Any, step: HostStep, c: float, xp: Any) -> Any:
    """``F_i`` of the recurrence in the module docstring."""
    g, k = step.gpu_s_L, step.launches
    if isinstance(k, float) and k == 0.0:
        return prev_finish_L + g
    first = issued_before_L + c + g
    last = issued_before_L + k * c + g / (k if isinstance(k, float) else xp.maximum(k, 1.0))
    ramp_L = xp.maximum(xp.maximum(prev_finish_L + g, first), last)
    if isinstance(k, float):
        return ramp_L
    # Launches vary over layouts, and an op may launch nothing in some of them (it is absent there).
    some = as_float(k > 0.0, xp)
    return some * ramp_L + (1.0 - some) * (prev_finish_L + g)


def synced_idle_s(steps: list[HostStep], c: float, xp: Any) -> Any:
    """GPU idle seconds of a pass that starts at a host-device sync (empty queue, host at zero)."""
    finish_L = xp.zeros_like(steps[0].gpu_s_L)
    issued_L = xp.zeros_like(steps[0].gpu_s_L)
    busy_L = xp.zeros_like(steps[0].gpu_s_L)
    for step in steps:
        finish_L = _ramp_finish(finish_L, issued_L, step, c, xp)
        issued_L = issued_L + step.launches * c
        busy_L = busy_L + step.gpu_s_L
    return finish_L - busy_L


def recompute_launches(launches: list[Any], weights: list[Any]) -> Any:
    """Host launches that selective recomputation adds to a layer's backward: each re-run op's forward launches
    (``launches``, :func:`host_launches`; ``weights``: 1.0 where the op is re-run, per layout, or a Python 0.0)."""
    total: Any = 0.0
    for n, w in zip(launches, weights, strict=True):
        if hasattr(w, "shape") and not (isinstance(n, float) and n == 0.0):
            total = total + w * n
    return total


def layer_host_idle_s(ops: list[Op], n_attn: int, fwd_s_L: list[Any], bwd_s_L: list[Any], gpu_fwd_extra_L: Any,
                      gpu_bwd_extra_L: Any, ep_one_L: Any, recompute_full_L: Any, gpu: GpuSpec, train: TrainSpec,
                      moe: bool, xp: Any, recompute_weights: list[Any] | None = None) -> Any:
    """GPU idle seconds per micro-batch in one layer (forward + backward) waiting for the host.

    ``fwd_s_L`` and ``bwd_s_L`` are the ops' forward and backward seconds in layer order (the first ``n_attn`` the
    attention part); ``gpu_fwd_extra_L`` the layer's other exposed forward GPU time (TP and CP communication);
    ``gpu_bwd_extra_L`` its other exposed backward GPU time (TP and CP communication, with what recomputation
    runs again of it); ``ep_one_L`` the exposed dispatch + combine all-to-all of one direction (0 for a dense
    layer); ``recompute_full_L`` 1 where full recomputation re-runs the whole forward before the backward;
    ``recompute_weights`` per op, 1 where selective recomputation re-runs its forward (:func:`recompute_launches`).
    A re-run forward issues its ops' launches again, and its all-to-alls where it re-runs the permutation. An MoE
    layer (``moe``) adds one launch per all-to-all.

    Under ``train.moe_host_sync`` the forward waits at the sync (the max-plus recurrence of the module docstring).
    The backward does too where it re-runs the dispatcher's preprocessing (full recomputation, or the ``moe``
    module): Megatron-Core's checkpoint re-runs the MoE block's forward, token counts to the host included. From
    that sync the host issues, in order: the re-run forward from the permutation on (with the dispatch and
    combine), the MLP part's backward (ops in reverse, the combine's backward all-to-all before the second expert
    GEMM's and the dispatch's after the permutation's), the selective re-run of attention ops, the attention
    backward and the other backward GPU time, then the next layer's re-run forward up to its sync (under full
    recomputation its attention too); the wait is the recurrence over that sequence. Otherwise the backward has
    no sync and the host runs ahead: it idles ``max(H_bwd - G_bwd, 0)``."""
    c = gpu.host_launch_s
    launches = host_launches(ops, train)
    bwd_launches = backward_launches(ops, train)
    comm_launch = 0.0 if "full_iteration" in train.cuda_graph_scope or not moe else 1.0
    names = [op.name for op in ops]
    sel = recompute_weights or [0.0] * len(ops)
    rerun = [recompute_full_L + w for w in sel]  # per op: 1 where the backward re-runs its forward
    zero_L = xp.zeros_like(ep_one_L)
    rerun_a2a_L = rerun[names.index("moe_permute")] if "moe_permute" in names else zero_L
    host_fwd = (sum(launches) + 2.0 * comm_launch) * c
    host_bwd_L = (sum(bwd_launches) + 2.0 * comm_launch) * c \
        + (sum((r * n for r, n in zip(rerun, launches, strict=True)), zero_L) + rerun_a2a_L * 2.0 * comm_launch) * c
    gpu_bwd_L = sum(bwd_s_L[1:], bwd_s_L[0]) + sum((r * f for r, f in zip(rerun, fwd_s_L, strict=True)), zero_L) \
        + gpu_bwd_extra_L + ep_one_L * (1.0 + rerun_a2a_L)
    idle_bwd_L = xp.maximum(host_bwd_L - gpu_bwd_L, 0.0)
    if not host_syncs(ops, train, moe):
        gpu_fwd_L = sum(fwd_s_L[1:], fwd_s_L[0]) + gpu_fwd_extra_L + ep_one_L
        return xp.maximum(host_fwd - gpu_fwd_L, 0.0) + idle_bwd_L
    half_L = ep_one_L / 2.0
    at = names.index(SYNC_AFTER) + 1
    # Rotate to start after the sync; the dispatch all-to-all follows the permutation and the combine
    # follows the last expert GEMM.
    seq: list[HostStep] = []
    for i in [*range(at, len(ops)), *range(at)]:
        seq.append(HostStep(fwd_s_L[i], launches[i]))
        if names[i] in ("moe_permute", "expert_fc2"):
            seq.append(HostStep(half_L, comm_launch))
    seq.append(HostStep(gpu_fwd_extra_L, 0.0))
    idle_fwd_L = synced_idle_s(seq, c, xp)
    pre_L = rerun[at - 1]  # 1 where the backward re-runs the preprocessing, and its sync
    again: list[HostStep] = []
    for i in range(at, len(ops)):
        again.append(HostStep(rerun[i] * fwd_s_L[i], rerun[i] * launches[i]))
        if names[i] in ("moe_permute", "expert_fc2"):
            again.append(HostStep(rerun_a2a_L * half_L, rerun_a2a_L * comm_launch))
    for i in reversed(range(n_attn, len(ops))):
        if names[i] == "expert_fc2":
            again.append(HostStep(half_L, comm_launch))
        again.append(HostStep(bwd_s_L[i], bwd_launches[i]))
        if names[i] == "moe_permute":
            again.append(HostStep(half_L, comm_launch))
    again += [HostStep(sel[i] * fwd_s_L[i], sel[i] * launches[i]) for i in range(n_attn)
              if hasattr(sel[i], "shape")]
    again += [HostStep(bwd_s_L[i], bwd_launches[i]) for i in reversed(range(n_attn))]
    again.append(HostStep(gpu_bwd_extra_L, 0.0))
    before_sync = [*((i, recompute_full_L) for i in range(n_attn)), *((i, rerun[i]) for i in range(n_attn, at))]
    again += [HostStep(w * fwd_s_L[i], w * launches[i]) for i, w in before_sync]
    idle_synced_L = synced_idle_s(again, c, xp)
    return idle_fwd_L + pre_L * idle_synced_L + (1.0 - pre_L) * idle_bwd_L


def merged_layer_idle_s(ops: list[Op], n_attn: int, fwd_s_L: list[Any], bwd_s_L: list[Any], rec_attn_L: Any,
                        gpu: GpuSpec, train: TrainSpec, xp: Any, rec_mlp_L: Any = 0.0,
                        recompute_weights: list[Any] | None = None) -> Any:
    """GPU idle seconds of one merged layer under the MoE all-to-all overlap (``parallel.ep_comm_overlap``) with
    dropless dispatch's host sync: the forward of micro-batch B and the backward of micro-batch A run as one
    layer (Megatron-Core's merged 1F1B, the phases of :func:`emulator.cost.step._ep_paired`).

    B's sync (its tokens per expert, at the end of ``moe_preprocess``) falls between phase 1 (A's backward
    combine beside B's attention and router) and phase 2, so after it the host issues, and the compute
    stream runs, in this order: A's MLP backward (ops in reverse), B's MLP forward from the permutation on,
    A's attention backward (with its recomputation: ``rec_attn_L`` seconds; selective recomputation of MLP
    modules, ``rec_mlp_L``, runs before A's MLP backward), then phase 1 of the next layer (B's attention,
    router and preprocessing) up to the next sync. The wait is the max-plus recurrence of
    :func:`synced_idle_s` over that sequence: unlike an unmerged layer, the backward's launches
    (:func:`backward_launches`; one graph replay for a captured scope) come after a
    sync too, so the host cannot run ahead of them. This replaces the forward and backward waits of
    :func:`layer_host_idle_s` for the micro-batches that run merged."""
    c = gpu.host_launch_s
    launches = host_launches(ops, train)
    bwd = backward_launches(ops, train)
    at = [op.name for op in ops].index(SYNC_AFTER) + 1
    weights = recompute_weights or [0.0] * len(ops)
    mlp_again = recompute_launches(launches[n_attn:], weights[n_attn:])
    attn_again = recompute_launches(launches[:n_attn], weights[:n_attn])
    seq = [HostStep(rec_mlp_L, mlp_again)] if hasattr(mlp_again, "shape") else []
    seq += [HostStep(bwd_s_L[i], bwd[i]) for i in reversed(range(n_attn, len(ops)))]
    seq += [HostStep(fwd_s_L[i], launches[i]) for i in range(at, len(ops))]
    attn_bwd = [HostStep(bwd_s_L[i], bwd[i]) for i in reversed(range(n_attn))]
    attn_bwd[-1] = HostStep(attn_bwd[-1].gpu_s_L + rec_attn_L, attn_bwd[-1].launches + attn_again)
    seq += attn_bwd
    seq += [HostStep(fwd_s_L[i], launches[i]) for i in range(at)]
    return synced_idle_s(seq, c, xp)
