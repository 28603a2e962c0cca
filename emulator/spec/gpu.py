"""GPU type: peaks, memory, links, power and the efficiency curves of the cost model (SI units)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.errors import require, require_fraction, require_non_negative, require_positive

HOST_CPUS = ("x86", "grace")


@dataclass(frozen=True, kw_only=True)
class EfficiencySpec:
    """Achievable fractions of the datasheet peaks, calibrated against published runs.

    The roofline time of an op is ``max(flops / (peak * eff_flops(size)), bytes / (hbm * hbm_efficiency))``.
    For GEMMs ``eff_flops(F) = gemm_max * F / (F + gemm_half_flops)``: large GEMMs approach
    ``gemm_max`` and a GEMM of ``gemm_half_flops`` runs at half of it (launch, tail and wave effects).
    """

    gemm_bf16: float
    """Fraction of the dense BF16 peak reached by large BF16 GEMMs."""
    gemm_fp8: float
    """Fraction of the dense FP8 peak reached by large FP8 GEMMs (0 where FP8 is unsupported)."""
    gemm_half_flops: float
    """GEMM size (FLOPs) at which efficiency is half of its maximum."""
    attention_fwd: float
    """Fraction of the dense BF16 peak reached by the fused (Flash) attention forward kernel."""
    attention_bwd: float
    """Fraction of the dense BF16 peak reached by the fused attention backward kernel."""
    attention_fa2_fwd: float
    """Fraction of the dense BF16 peak reached by the FlashAttention-2 forward kernel (flash-attn 2.x, which
    uses no Hopper- or Blackwell-specific instructions; ``train.attention_kernel=flash2``)."""
    attention_fa2_bwd: float
    """Fraction of the dense BF16 peak reached by the FlashAttention-2 backward kernel."""
    hbm: float
    """Fraction of the HBM bandwidth reached by streaming (memory-bound) kernels."""
    nvlink: float
    """NCCL bus bandwidth of a large NVLink ring collective as a fraction of unidirectional NVLink bandwidth."""
    nvlink_all_to_all: float
    """Per-GPU send bandwidth of a large NVLink all-to-all (expert-parallel dispatch and combine) as a
    fraction of unidirectional NVLink bandwidth: lower than a ring's, since every rank talks to every
    other at once."""
    kernel_overhead_s: float
    """Fixed launch/synchronisation cost per memory-bound kernel."""

    def __post_init__(self) -> None:
        for name in ("gemm_bf16", "attention_fwd", "attention_bwd", "attention_fa2_fwd", "attention_fa2_bwd", "hbm",
                     "nvlink", "nvlink_all_to_all"):
            require_fraction(getattr(self, name), f"gpu.efficiency.{name}")
        require(0.0 <= self.gemm_fp8 <= 1.0, "gpu.efficiency.gemm_fp8", self.gemm_fp8, "must be in [0, 1]")
        require_positive(self.gemm_half_flops, "gpu.efficiency.gemm_half_gflop")
        require_non_negative(self.kernel_overhead_s, "gpu.efficiency.kernel_overhead_us")


@dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """One GPU type. Peaks are dense (no 2:4 sparsity)."""

    name: str
    bf16_flops_per_s: float
    """Dense BF16 tensor-core peak, FLOP/s."""
    fp8_flops_per_s: float
    """Dense FP8 tensor-core peak, FLOP/s (0: no FP8)."""
    hbm_bytes: float
    """HBM capacity, bytes."""
    hbm_bytes_per_s: float
    """HBM bandwidth, bytes/s."""
    nvlink_bytes_per_s: float
    """NVLink bandwidth per GPU, bidirectional aggregate (as NVIDIA quotes it), bytes/s."""
    tdp_w: float
    idle_w: float
    sm_count: int
    """Streaming multiprocessors: what overlapped communication kernels take their share of."""
    host_cpu: str
    """The CPU that launches this GPU's kernels: ``x86`` (HGX/DGX servers) or ``grace`` (GB200/GH200 superchips)."""
    host_launch_s: float
    """Host time to issue one kernel from eager PyTorch on that CPU (Python, autograd and ATen dispatch,
    cudaLaunchKernel), seconds: what a host-bound layer pays per kernel (:mod:`emulator.cost.host`)."""
    efficiency: EfficiencySpec
    source: str = ""

    def __post_init__(self) -> None:
        prefix = "gpu"
        require_positive(self.bf16_flops_per_s, f"{prefix}.bf16_tflops")
        require_non_negative(self.fp8_flops_per_s, f"{prefix}.fp8_tflops")
        require_positive(self.hbm_bytes, f"{prefix}.hbm_gb")
        require_positive(self.hbm_bytes_per_s, f"{prefix}.hbm_tbps")
        require_positive(self.nvlink_bytes_per_s, f"{prefix}.nvlink_gbps")
        require_positive(self.tdp_w, f"{prefix}.tdp_w")
        require_non_negative(self.idle_w, f"{prefix}.idle_w")
        require_positive(self.sm_count, f"{prefix}.sm_count")
        require(self.host_cpu in HOST_CPUS, f"{prefix}.host_cpu", self.host_cpu,
                f"must be one of {', '.join(HOST_CPUS)}")
        require_non_negative(self.host_launch_s, f"{prefix}.host_launch_us")
        require(self.idle_w < self.tdp_w, f"{prefix}.idle_w", self.idle_w, f"must be below tdp_w={self.tdp_w}")

    @property
    def nvlink_unidirectional_bytes_per_s(self) -> float:
        """Per-direction NVLink bandwidth: half of the bidirectional aggregate."""
        return self.nvlink_bytes_per_s / 2.0

    def peak_flops_per_s(self, precision: str) -> float:
        """Dense tensor peak of the GEMM precision (``bf16`` or ``fp8``)."""
        return self.fp8_flops_per_s if precision == "fp8" else self.bf16_flops_per_s

    def gemm_efficiency_max(self, precision: str) -> float:
        return self.efficiency.gemm_fp8 if precision == "fp8" else self.efficiency.gemm_bf16
