"""The validated job: model x cluster x layout x training x run, with every cross-field check."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.spec.cluster import ClusterSpec
from emulator.spec.errors import require
from emulator.spec.model import ModelSpec
from emulator.spec.parallel import ParallelSpec
from emulator.spec.power import PowerSpec
from emulator.spec.reliability import ReliabilitySpec
from emulator.spec.run import RunSpec
from emulator.spec.train import TrainSpec


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    model: ModelSpec
    cluster: ClusterSpec
    parallel: ParallelSpec
    train: TrainSpec
    run: RunSpec
    reliability: ReliabilitySpec | None = None
    """Failures and checkpoints (None: no failures)."""
    power: PowerSpec | None = None
    """Site power model (None: power not emulated)."""

    def __post_init__(self) -> None:
        check_layout(self.model, self.cluster, self.parallel, self.train)
        if self.power is not None:
            check_power(self.cluster, self.power)

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch * self.train.seq_len


def check_layout(model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec, train: TrainSpec) -> None:
    """Cross-field rules of a Megatron-Core layout; each failure names the key the user set."""
    require(par.num_gpus == cluster.num_gpus, "parallel", f"tp{par.tp}*pp{par.pp}*cp{par.cp}*dp{par.dp}"
            f"={par.num_gpus}", f"tp x pp x cp x dp must equal cluster.num_gpus={cluster.num_gpus}")
    require(model.num_heads % par.tp == 0, "parallel.tp", par.tp, f"must divide model.num_heads={model.num_heads}")
    if not model.is_mla:
        require(model.num_kv_heads % par.tp == 0, "parallel.tp", par.tp,
                f"must divide model.num_kv_heads={model.num_kv_heads}")
    require(par.pp * par.vpp <= model.num_layers, "parallel.pp", par.pp,
            f"pp x vpp must be <= model.num_layers={model.num_layers}")
    if model.is_moe:
        require(model.num_experts % par.ep == 0, "parallel.ep", par.ep,
                f"must divide model.num_experts={model.num_experts}")
        require(model.expert_ffn_hidden_size % par.expert_tp == 0, "parallel.etp", par.etp,
                f"expert tensor parallelism {par.expert_tp} must divide model.expert_ffn_hidden_size="
                f"{model.expert_ffn_hidden_size}")
    else:
        # parallel.etp has no effect on a dense model (it has no experts): not checked.
        require(par.ep == 1, "parallel.ep", par.ep,
                "must be 1 for a dense model (model.num_experts=1): add parallel.ep=1, or parallel=default")
    per_step = par.dp * par.micro_batch
    require(train.global_batch % per_step == 0, "train.global_batch", train.global_batch,
            f"must be a multiple of parallel.dp x parallel.micro_batch = {per_step}")
    if par.vpp > 1:
        # Megatron-Core's interleaved 1F1B (schedules.forward_backward_pipelining_with_interleaving) raises
        # "number of microbatches (m) is not divisible by pipeline-model-parallel-size (pp)".
        m = train.global_batch // per_step
        require(m % par.pp == 0, "parallel.vpp", par.vpp,
                f"interleaving needs the micro-batches per step, train.global_batch / (parallel.dp x "
                f"parallel.micro_batch) = {m}, to be a multiple of parallel.pp={par.pp}; use parallel.vpp=1")
    if par.cp > 1:
        require(train.seq_len % (2 * par.cp) == 0, "train.seq_len", train.seq_len,
                f"must be a multiple of 2 x parallel.cp = {2 * par.cp} (load-balanced context parallel)")
    for gpu in cluster.gpu_types:
        require(train.precision != "fp8" or gpu.fp8_flops_per_s > 0, "train.precision", train.precision,
                f"gpu {gpu.name} has no FP8 tensor cores: use bf16")


def check_power(cluster: ClusterSpec, power: PowerSpec) -> None:
    """A facility cap (or demand-response cap) must leave every GPU more than its idle power."""
    overhead = cluster.num_gpus * (power.host_w_per_gpu + power.network_w_per_gpu)
    idle = sum(pool.num_gpus * pool.gpu.idle_w for pool in cluster.pools) + overhead
    floor_w = idle * power.pue
    caps = [("power.facility_cap_mw", power.facility_cap_w)] + [
        (f"power.windows[{i}].cap_mw", w.cap_w) for i, w in enumerate(power.windows)]
    for key, cap in caps:
        require(cap == 0.0 or cap > floor_w, key, cap / 1e6,
                f"must exceed the site's idle draw {floor_w / 1e6:.1f} MW (GPUs at idle + hosts + network, x PUE)")
