"""Typed Hydra schemas (OmegaConf structured configs), registered once in the ConfigStore.

These mirror the YAML keys users type; a misspelt key or a wrong type fails at compose time.
They are the edge only: :mod:`emulator.config.job` turns the composed config into a frozen JobSpec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EfficiencyConf:
    gemm_bf16: float = MISSING
    gemm_fp8: float = MISSING
    gemm_half_gflop: float = MISSING
    attention_fwd: float = MISSING
    attention_bwd: float = MISSING
    attention_fa2_fwd: float = MISSING
    attention_fa2_bwd: float = MISSING
    hbm: float = MISSING
    nvlink: float = MISSING
    nvlink_all_to_all: float = MISSING
    kernel_overhead_us: float = MISSING


@dataclass
class GpuConf:
    name: str = MISSING
    bf16_tflops: float = MISSING
    fp8_tflops: float = MISSING
    hbm_gb: float = MISSING
    hbm_tbps: float = MISSING
    nvlink_gbps: float = MISSING
    tdp_w: float = MISSING
    idle_w: float = MISSING
    sm_count: int = MISSING
    host_cpu: str = MISSING
    host_launch_us: float = MISSING
    efficiency: EfficiencyConf = field(default_factory=EfficiencyConf)
    source: str = ""


@dataclass
class ModelConf:
    name: str = MISSING
    num_layers: int = MISSING
    hidden_size: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    head_dim: int = MISSING
    ffn_hidden_size: int = MISSING
    dense_ffn_hidden_size: int = 0
    num_experts: int = 1
    experts_per_token: int = 1
    expert_ffn_hidden_size: int = 0
    num_dense_layers: int = 0
    vocab_size: int = MISSING
    gated_mlp: bool = True
    tied_embeddings: bool = False
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0
    local_layers_fraction: float = 0.0
    mtp_layers: int = 0
    router_groups: int = 1
    router_group_topk: int = 0
    qk_norm: bool = False
    source: str = ""


@dataclass
class PoolConf:
    gpu: str = MISSING
    num_gpus: int = MISSING


@dataclass
class ClusterConf:
    name: str = MISSING
    num_gpus: int = MISSING
    gpus_per_node: int = MISSING
    gpu: str = MISSING
    pools: list[PoolConf] = field(default_factory=list)
    nic_gbps: float = MISSING
    nic_efficiency: float = MISSING
    nic_all_to_all_efficiency: float = MISSING
    scaleout_latency_us: float = MISSING
    nvlink_domain: int = MISSING
    nvlink_latency_us: float = MISSING
    oversubscription: float = 1.0
    speed_sigma: float = 0.01
    jitter_sigma: float = 0.01
    slow_node_fraction: float = 0.0
    slow_node_slowdown: float = 0.10
    placement: str = "rank_order"
    use_extra_memory: bool = True
    source: str = ""


@dataclass
class ParallelConf:
    tp: int = 1
    pp: int = 1
    dp: int = -1
    cp: int = 1
    ep: int = 1
    etp: int = 0
    vpp: int = 1
    micro_batch: int = 1
    zero: int = 1
    sequence_parallel: bool = True
    recompute: str = "none"
    recompute_modules: list[str] = field(default_factory=lambda: ["core_attn"])
    tp_comm_overlap: bool = True
    dp_comm_overlap: bool = True
    pp_comm_overlap: bool = True
    ep_comm_overlap: bool = False


@dataclass
class TrainConf:
    seq_len: int = 8192
    global_batch: int = 1024
    precision: str = "bf16"
    total_tokens: float = 0.0
    dropout: float = 0.0
    attention_kernel: str = "flash"
    grad_reduce_bytes: int = 4
    memory_reserved_gb: float = 3.0
    fragmentation: float = 0.05
    cuda_graph_scope: list[str] = field(default_factory=list)
    moe_host_sync: bool = True
    moe_dispatcher: str = "alltoall"
    moe_fp8_padding: str = "auto"
    moe_load_imbalance: float = 1.0
    moe_comm_sms: int = 20


@dataclass
class RunConf:
    steps: int = 0
    seed: int = 0
    backend: str = "auto"
    progress: bool = True
    trace: bool = True
    steps_per_batch: int = 0


@dataclass
class ReliabilityConf:
    enabled: bool = True
    rates_per_hour: dict[str, float] = field(default_factory=dict)
    detect_s: float = MISSING
    restart_s: float = MISSING
    storage_tbps: float = MISSING
    checkpoint_bytes_per_param: float = 14.0
    checkpoint_interval_steps: int = 0


@dataclass
class PowerWindowConf:
    start_h: float = MISSING
    end_h: float = MISSING
    cap_mw: float = MISSING


@dataclass
class PowerConf:
    compute_fraction_of_tdp: float = MISSING
    comm_fraction_of_tdp: float = MISSING
    host_w_per_gpu: float = MISSING
    network_w_per_gpu: float = MISSING
    pue: float = MISSING
    facility_cap_mw: float = 0.0
    windows: list[PowerWindowConf] = field(default_factory=list)


@dataclass
class EmulateConf:
    model: ModelConf = MISSING
    gpu: GpuConf = MISSING
    cluster: ClusterConf = MISSING
    parallel: ParallelConf = field(default_factory=ParallelConf)
    train: TrainConf = field(default_factory=TrainConf)
    run: RunConf = field(default_factory=RunConf)
    reliability: ReliabilityConf = field(default_factory=ReliabilityConf)
    power: PowerConf = field(default_factory=PowerConf)


@dataclass
class SearchConf:
    """Axes take a value (search.tp=8) or a list (search.tp=[4,8]); emulator.config.job.build_search checks them."""

    tp: Any = field(default_factory=list)
    pp: Any = field(default_factory=list)
    cp: Any = field(default_factory=list)
    ep: Any = field(default_factory=list)
    etp: Any = field(default_factory=list)
    vpp: Any = field(default_factory=list)
    micro_batch: Any = field(default_factory=list)
    zero: Any = field(default_factory=list)
    recompute: Any = field(default_factory=list)
    recompute_modules: Any = field(default_factory=lambda: ["core_attn"])  # a list, or a list of lists
    max_gpus: int = 0
    objective: str = "tokens_per_s"
    must_fit: bool = True
    ep_comm_overlap: bool = False
    top: int = 10
    chunk: int = 50_000


@dataclass
class SearchAppConf(EmulateConf):
    search: SearchConf = field(default_factory=SearchConf)


SCHEMA_NAME = "emulate_schema"
SEARCH_SCHEMA_NAME = "search_schema"
_registered = False


def register() -> None:
    """Register the schema in Hydra's ConfigStore (idempotent)."""
    global _registered  # noqa: PLW0603 - one-time registration guard
    if _registered:
        return
    ConfigStore.instance().store(name=SCHEMA_NAME, node=EmulateConf)
    ConfigStore.instance().store(name=SEARCH_SCHEMA_NAME, node=SearchAppConf)
    _registered = True
