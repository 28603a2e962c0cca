"""The space of layouts: a grid over per-axis candidate values, walked in chunks, filtered by the rules.

Axes and their candidates (a search constraint replaces an axis's list):

- tp: powers of two up to the NVLink domain that divide the query heads (and the KV heads for GQA);
- cp: powers of two up to 16 with ``seq_len % (2 cp) == 0`` (load-balanced ring attention);
- pp: 1 .. num_layers;  vpp: 1, 2, 3, 4, 6, 8 with ``num_layers % (pp * vpp) == 0`` when > 1;
- ep: divisors of num_experts (1 for dense);  micro_batch: 1, 2, 4, 8, 16;  zero: 0-3;
- recompute: none, selective, full.

A grid point is valid when ``tp * pp * cp`` divides the GPU count (dp is the rest), the global batch
is a multiple of ``dp * micro_batch``, ep divides ``dp * cp``, and ``pp * vpp <= num_layers`` (the
same rules as :func:`emulator.spec.job.check_layout`). The grid is indexed by one flat integer, so a
chunk is a range of indices: memory is bounded by the chunk, whatever the size of the space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from emulator.spec import ClusterSpec, ModelSpec, TrainSpec
from emulator.spec.parallel import RECOMPUTE_MODES
from emulator.spec.search import SearchSpec

AXES = ("tp", "cp", "pp", "vpp", "ep", "micro_batch", "zero", "recompute")
VPP_CANDIDATES = (1, 2, 3, 4, 6, 8)
MICRO_BATCH_CANDIDATES = (1, 2, 4, 8, 16)
CP_CANDIDATES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Space:
    num_gpus: int
    values: dict[str, np.ndarray]
    """Candidate values per axis (recompute as its code 0/1/2)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.values[a]) for a in AXES)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def grid_chunks(self, chunk: int, model: ModelSpec, train: TrainSpec) -> Iterator[dict[str, np.ndarray]]:
        """Valid layouts by walking the whole grid ``chunk`` points at a time and filtering (the reference
        for :meth:`chunks`, which builds only valid layouts)."""
        for start in range(0, self.size, chunk):
            flat_C = np.arange(start, min(start + chunk, self.size), dtype=np.int64)
            idx = np.unravel_index(flat_C, self.shape)
            col = {a: self.values[a][i].astype(np.float64) for a, i in zip(AXES, idx, strict=True)}
            keep = valid(col, self.num_gpus, model, train)
            if keep.any():
                yield {a: v[keep] for a, v in col.items()}

    def chunks(self, chunk: int, model: ModelSpec, train: TrainSpec) -> Iterator[dict[str, np.ndarray]]:
        """Valid layouts, at most about ``chunk`` at a time, as float64 columns, in grid order.

        Only valid points are built: for each (tp, cp, pp) whose product divides the GPU count, dp is
        fixed, and the micro-batches, expert-parallel sizes and virtual stages that fit it are chosen
        before taking their product with ZeRO and recompute.
        """
        v = self.values
        L, G, gb = model.num_layers, self.num_gpus, train.global_batch
        parts: list[dict[str, np.ndarray]] = []
        size = 0
        for tp in v["tp"]:
            for cp in v["cp"]:
                for pp in v["pp"]:
                    mp = int(tp * cp * pp)
                    if G % mp:
                        continue
                    dp = G // mp
                    vpp = [x for x in v["vpp"] if pp * x <= L and (x == 1 or (pp > 1 and L % (pp * x) == 0))]
                    ep = [x for x in v["ep"] if (dp * cp) % x == 0]
                    mb = [x for x in v["micro_batch"] if gb % (dp * x) == 0]
                    if not (vpp and ep and mb):
                        continue
                    grid = np.meshgrid(np.asarray(vpp), np.asarray(ep), np.asarray(mb), v["zero"], v["recompute"],
                                       indexing="ij")
                    n = grid[0].size
                    block = {"tp": np.full(n, float(tp)), "cp": np.full(n, float(cp)), "pp": np.full(n, float(pp)),
                             "dp": np.full(n, float(dp))}
                    for name, g in zip(("vpp", "ep", "micro_batch", "zero", "recompute"), grid, strict=True):
                        block[name] = g.ravel().astype(np.float64)
                    parts.append(block)
                    size += n
                    if size >= chunk:
                        yield _concat(parts)
                        parts, size = [], 0
        if parts:
            yield _concat(parts)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def valid(col: dict[str, np.ndarray], num_gpus: int, model: ModelSpec, train: TrainSpec) -> np.ndarray:
    """Mask of the grid points that are layouts (same rules as the validation gate)."""
    mp = col["tp"] * col["pp"] * col["cp"]
    ok = np.fmod(float(num_gpus), mp) == 0.0
    dp = np.where(ok, float(num_gpus) / mp, 1.0)
    col["dp"] = dp
    ok &= np.fmod(float(train.global_batch), dp * col["micro_batch"]) == 0.0
    ok &= np.fmod(dp * col["cp"], col["ep"]) == 0.0
    L = float(model.num_layers)
    pv = col["pp"] * col["vpp"]
    ok &= pv <= L
    ok &= (col["vpp"] == 1.0) | ((col["pp"] > 1.0) & (np.fmod(L, pv) == 0.0))
    return ok


def build_space(model: ModelSpec, train: TrainSpec, cluster: ClusterSpec, search: SearchSpec) -> Space:
    num_gpus = search.max_gpus or cluster.num_gpus
    domain = cluster.nvlink_domain
    tp = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= domain and model.num_heads % t == 0
          and (model.is_mla or model.num_kv_heads % t == 0)]
    cp = [c for c in CP_CANDIDATES if c == 1 or train.seq_len % (2 * c) == 0]
    ep = [e for e in range(1, model.num_experts + 1) if model.num_experts % e == 0] if model.is_moe else [1]
    values = {
        "tp": search.tp or tuple(tp),
        "cp": search.cp or tuple(cp),
        "pp": search.pp or tuple(range(1, model.num_layers + 1)),
        "vpp": search.vpp or VPP_CANDIDATES,
        "ep": search.ep or tuple(ep),
        "micro_batch": search.micro_batch or MICRO_BATCH_CANDIDATES,
        "zero": search.zero or (0, 1, 2, 3),
        "recompute": tuple(RECOMPUTE_MODES.index(r) for r in (search.recompute or RECOMPUTE_MODES)),
    }
    return Space(num_gpus, {k: np.asarray(v, dtype=np.int64) for k, v in values.items()})
