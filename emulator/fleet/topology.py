"""Where every rank sits: node, pipeline stage, data-parallel replica, TP group, GPU type.

Megatron-Core rank order: tp fastest, then cp, then dp, then pp. A TP group (``tp`` consecutive
ranks, inside one NVLink domain) is one pipeline stage of one replica; replicas are indexed by
``(dp, cp)``. Group ``n`` is stage ``n // R`` of replica ``n % R`` with ``R = dp * cp``.

Mixed pools are placed either in rank order (pools fill ranks 0.. in turn, so a pipeline may span
GPU types) or by replica (each replica, i.e. each whole pipeline, on one type).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.spec import ConfigError, JobSpec


@dataclass(frozen=True)
class Topology:
    num_gpus: int
    tp: int
    pp: int
    replicas: int
    gpus_per_node: int
    type_names: tuple[str, ...]
    type_G: np.ndarray
    """Pool index of every GPU (int64)."""
    type_N: np.ndarray
    """Pool index of every TP group."""

    @property
    def num_groups(self) -> int:
        return self.num_gpus // self.tp

    def node_G(self) -> np.ndarray:
        return np.arange(self.num_gpus, dtype=np.int64) // self.gpus_per_node

    def stage_G(self) -> np.ndarray:
        return np.arange(self.num_gpus, dtype=np.int64) // (self.tp * self.replicas)

    @classmethod
    def of(cls, job: JobSpec) -> Topology:
        par, cl = job.parallel, job.cluster
        G, tp, pp = cl.num_gpus, par.tp, par.pp
        R = par.dp * par.cp
        names = tuple(pool.gpu.name for pool in cl.pools)
        sizes = np.asarray([pool.num_gpus for pool in cl.pools], dtype=np.int64)
        for i, size in enumerate(sizes):
            if size % tp:
                raise ConfigError(f"cluster.pools[{i}].num_gpus", int(size), f"must be a multiple of parallel.tp={tp}")
        gpu = np.arange(G, dtype=np.int64)
        if cl.placement == "by_replica" and len(sizes) > 1:
            per_replica = tp * pp
            for i, size in enumerate(sizes):
                if size % per_replica:
                    raise ConfigError(f"cluster.pools[{i}].num_gpus", int(size),
                                      f"placement=by_replica needs a multiple of tp x pp = {per_replica}")
            replica_bounds = np.cumsum(sizes // per_replica)
            replica_G = (gpu // tp) % R
            type_G = np.searchsorted(replica_bounds, replica_G, side="right")
        else:
            type_G = np.searchsorted(np.cumsum(sizes), gpu, side="right")
        gpn = cl.gpus_per_node
        whole_nodes = type_G[: (G // gpn) * gpn].reshape(-1, gpn)
        mixed_nodes = np.flatnonzero((whole_nodes != whole_nodes[:, :1]).any(axis=1))
        if mixed_nodes.size:
            raise ConfigError("cluster.placement", cl.placement,
                              f"puts two GPU types on node {int(mixed_nodes[0])}: with tp={tp}, pp={pp} each pool "
                              f"must hold whole nodes of its replicas (try placement=rank_order)")
        type_N = type_G[::tp].copy()
        return cls(G, tp, pp, R, cl.gpus_per_node, names, type_G.astype(np.int64), type_N.astype(np.int64))
