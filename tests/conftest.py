"""Shared fixtures: specs built from the shipped YAML, without Hydra."""

from __future__ import annotations

import numpy as np
import pytest

from emulator import catalogue
from emulator.config.build import cluster_from_dict
from emulator.cost.layout import LayoutBatch
from emulator.spec import ClusterSpec, ParallelSpec, TrainSpec


def make_cluster(name: str = "dgx_h100", gpu: str = "h100", num_gpus: int | None = None) -> ClusterSpec:
    data = catalogue.raw("cluster", name)
    data.pop("gpu", None)
    if num_gpus is not None:
        data["num_gpus"] = num_gpus
        data["pools"] = []
    return cluster_from_dict(data, catalogue.gpu(gpu), catalogue.gpu)


def one_layout(**kwargs: object) -> LayoutBatch:
    return LayoutBatch.from_specs([ParallelSpec(**kwargs)], np)  # type: ignore[arg-type]


@pytest.fixture
def h100_cluster() -> ClusterSpec:
    return make_cluster()


@pytest.fixture
def train_4k() -> TrainSpec:
    return TrainSpec(seq_len=4096, global_batch=64)
