"""Typed, validated job description: the one validation gate between configs and the logic."""

from emulator.spec.cluster import ClusterSpec, PoolSpec
from emulator.spec.errors import ConfigError
from emulator.spec.gpu import EfficiencySpec, GpuSpec
from emulator.spec.job import JobSpec, check_layout
from emulator.spec.model import ModelSpec
from emulator.spec.parallel import RECOMPUTE_MODES, ParallelSpec
from emulator.spec.power import PowerSpec, PowerWindowSpec
from emulator.spec.reliability import COMPONENTS, ReliabilitySpec
from emulator.spec.run import RunSpec
from emulator.spec.train import TrainSpec

__all__ = [
    "COMPONENTS",
    "RECOMPUTE_MODES",
    "ClusterSpec",
    "ConfigError",
    "EfficiencySpec",
    "GpuSpec",
    "JobSpec",
    "ModelSpec",
    "ParallelSpec",
    "PoolSpec",
    "PowerSpec",
    "PowerWindowSpec",
    "ReliabilitySpec",
    "RunSpec",
    "TrainSpec",
    "check_layout",
]
