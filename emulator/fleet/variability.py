"""Per-GPU speed: a persistent factor per GPU and per-step jitter.

- Persistent factor ``f_g = exp(speed_sigma * z_g) * (1 + slow_node_slowdown * [node degraded])``
  with ``z_g`` standard normal and a node degraded with probability ``slow_node_fraction`` (the
  'lemon' nodes of Kokolis et al. 2025, MegaScale's ~10% straggler hosts).
- Per-step jitter: each GPU's step work is stretched by ``1 + eps``, ``eps`` Gumbel-distributed
  with mean 0 and standard deviation ``jitter_sigma`` (right-skewed: a kernel can be delayed, not
  sped up). A TP group computes in lockstep, so its work is stretched by the maximum over its
  ``tp`` GPUs; Gumbel is max-stable, so that maximum is drawn exactly with one draw per group
  (``rng.max_of_gumbels``, a test compares it with the brute force).
- A group's persistent factor is the maximum over its GPUs (the slowest sets the pace).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emulator.backend import rng

STREAM_SPEED = 1
STREAM_SLOW_NODE = 2
STREAM_JITTER = 3
EULER_GAMMA = 0.5772156649015329
GUMBEL_SD = math.pi / math.sqrt(6.0)


def persistent_factor_G(seed: int, num_gpus: int, gpus_per_node: int, speed_sigma: float, slow_fraction: float,
                        slow_slowdown: float) -> np.ndarray:
    """Persistent speed factor (>= 0; 1 = nominal; larger = slower) of every GPU, on the host."""
    counter = np.arange(num_gpus, dtype=np.uint64)
    z = rng.normal(np, seed, STREAM_SPEED, counter)
    nodes = np.arange((num_gpus + gpus_per_node - 1) // gpus_per_node, dtype=np.uint64)
    slow_node = rng.uniform(np, seed, STREAM_SLOW_NODE, nodes) < slow_fraction
    slow_G = np.repeat(slow_node, gpus_per_node)[:num_gpus]
    return np.exp(speed_sigma * z) * np.where(slow_G, 1.0 + slow_slowdown, 1.0)


def group_max(values_G: np.ndarray, tp: int) -> np.ndarray:
    """Maximum over each TP group of ``tp`` consecutive GPUs."""
    return values_G.reshape(-1, tp).max(axis=1)


def group_jitter_BN(xp: Any, seed: int, attempt0: int, steps: int, num_groups: int, tp: int, sigma: float) -> Any:
    """Per-step stretch ``max over the group of eps`` for ``steps`` attempts from ``attempt0``: (B, N)."""
    attempt_B = xp.arange(attempt0, attempt0 + steps, dtype=xp.uint64)
    group_N = xp.arange(num_groups, dtype=xp.uint64)
    counter_BN = attempt_B[:, None] * xp.asarray(num_groups, dtype=xp.uint64) + group_N[None, :]
    g_BN = rng.max_of_gumbels(xp, seed, STREAM_JITTER, counter_BN, float(tp))
    return (sigma / GUMBEL_SD) * (g_BN - EULER_GAMMA)
