"""Helpers of the cost-model tests: clusters sized to a layout (any GPU count, NVLink domain as shipped)."""

from __future__ import annotations

from emulator import catalogue
from emulator.config.build import cluster_from_dict
from emulator.spec import ClusterSpec


def sized_cluster(num_gpus: int, gpu: str = "h100", name: str = "dgx_h100") -> ClusterSpec:
    """The shipped cluster ``name`` resized to ``num_gpus`` (nodes shrink below 8 GPUs so any size is valid)."""
    data = catalogue.raw("cluster", name)
    data.pop("gpu", None)
    data["pools"] = []
    data["num_gpus"] = num_gpus
    if num_gpus % data["gpus_per_node"]:
        data["gpus_per_node"] = 1
    return cluster_from_dict(data, catalogue.gpu(gpu), catalogue.gpu)
