"""The space of layouts: a grid over per-axis candidate values, walked in chunks, filtered by the rules.

Axes and their candidates (a search constraint replaces an axis's list):

- tp: powers of two up to the NVLink domain that divide the query heads (and the KV heads for GQA);
- cp: powers of two up to 16 with ``seq_len % (2 cp) == 0`` (load-balanced ring attention);
- pp: 1 .. num_layers;  vpp: 1, 2, 3, 4, 6, 8 with ``num_layers % (pp * vpp) == 0`` when > 1;
- ep: divisors of num_experts (1 for dense);  micro_batch: 1, 2, 4, 8, 16;  zero: 0-3;
- etp (expert tensor parallelism, MoE only): powers of two up to the NVLink domain that divide the
  expert FFN width (0 for a dense model: the same as tp);
- recompute: none, selective, full; ``selective`` once per module list of ``search.recompute_modules`` (a
  layout's ``recompute_modules`` column is that list's bit mask).

A grid point is valid when ``tp * pp * cp`` divides the GPU count (dp is the rest), the global batch
is a multiple of ``dp * micro_batch`` and, with vpp > 1, the micro-batches per step a multiple of
pp, ``ep * etp`` divides ``tp * cp * dp`` (MoE parallel folding; with etp = tp: ep divides
``dp * cp``), and ``pp * vpp <= num_layers`` (the same rules as
:func:`emulator.spec.job.check_layout`). The grid is indexed by one flat integer, so a chunk is a
range of indices: memory is bounded by the chunk, whatever the size of the space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from emulator.spec import ClusterSpec, ModelSpec, TrainSpec
from emulator.spec.parallel import RECOMPUTE_MODES, recompute_module_mask
from emulator.spec.search import SearchSpec

AXES = ("tp", "cp", "pp", "vpp", "ep", "etp", "micro_batch", "zero", "recompute")
VPP_CANDIDATES = (1, 2, 3, 4, 6, 8)
MICRO_BATCH_CANDIDATES = (1, 2, 4, 8, 16)
CP_CANDIDATES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Space:
    num_gpus: int
    values: dict[str, np.ndarray]
    """Candidate values per axis (recompute as an index into ``recompute_variants``)."""
    recompute_variants: np.ndarray
    """Per recompute value: its mode code 0/1/2 and its module mask (:func:`recompute_module_mask`), shape (R, 2)."""

    def _recompute_columns(self, variant_N: np.ndarray) -> dict[str, np.ndarray]:
        """The ``recompute`` (mode code) and ``recompute_modules`` (mask) columns of recompute value indices."""
        picked = self.recompute_variants[variant_N.astype(np.int64)]
        return {"recompute": picked[:, 0].astype(np.float64), "recompute_modules": picked[:, 1].astype(np.float64)}

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
                out = {a: v[keep] for a, v in col.items()}
                yield {**out, **self._recompute_columns(out["recompute"])}

    def chunks(self, chunk: int, model: ModelSpec, train: TrainSpec) -> Iterator[dict[str, np.ndarray]]:
        """Valid layouts, at most about ``chunk`` at a time, as float64 columns, in grid order.

        Only valid points are built. A block is a (tp, cp, pp) whose product divides the GPU count (dp
        is then fixed); within a block, which virtual-stage counts, expert-parallel sizes and
        micro-batches are allowed depends on pp, tp * cp * dp and dp alone, so two masks per block
        (over (vpp, micro_batch) and over (ep, etp) jointly) give the valid (vpp, ep, etp, micro_batch)
        points with one ``nonzero`` over a chunk of blocks, each repeated over every (zero, recompute)
        pair.
        """
        v = self.values
        L, G, gb = model.num_layers, self.num_gpus, train.global_batch
        tp_B, cp_B, pp_B = (g.ravel() for g in np.meshgrid(v["tp"], v["cp"], v["pp"], indexing="ij"))
        ok_B = G % (tp_B * cp_B * pp_B) == 0
        tp_B, cp_B, pp_B = tp_B[ok_B], cp_B[ok_B], pp_B[ok_B]
        dp_B = G // (tp_B * cp_B * pp_B)
        vpp_V, ep_E, etp_X, mb_M = v["vpp"], v["ep"], v["etp"], v["micro_batch"]
        pv_BV = pp_B[:, None] * vpp_V[None, :]
        vpp_ok_BV = (pv_BV <= L) & ((vpp_V[None, :] == 1) | ((pp_B[:, None] > 1) & (L % pv_BV == 0)))
        # etp 0 (dense models) stands for tp: then ep (= 1) must divide cp * dp.
        etp_BX = np.where(etp_X[None, :] == 0, tp_B[:, None], etp_X[None, :])
        ep_ok_BEX = (tp_B * cp_B * dp_B)[:, None, None] % (ep_E[None, :, None] * etp_BX[:, None, :]) == 0
        mb_ok_BM = gb % (dp_B[:, None] * mb_M[None, :]) == 0
        # Interleaving (vpp > 1) needs the micro-batches per step to be a multiple of pp.
        m_BM = gb // (dp_B[:, None] * mb_M[None, :])
        vm_ok_BVM = vpp_ok_BV[:, :, None] & mb_ok_BM[:, None, :] \
            & ((vpp_V[None, :, None] == 1) | (m_BM[:, None, :] % pp_B[:, None, None] == 0))
        zr = len(v["zero"]) * len(v["recompute"])
        count_B = vm_ok_BVM.sum((1, 2)) * ep_ok_BEX.sum((1, 2)) * zr
        zero_K = np.repeat(v["zero"], len(v["recompute"])).astype(np.float64)
        rec_K = np.tile(v["recompute"], len(v["zero"])).astype(np.float64)
        start, n_blocks, size = 0, len(count_B), 0
        for end in range(n_blocks):
            size += int(count_B[end])
            if size < chunk and end < n_blocks - 1:
                continue
            sl = slice(start, end + 1)
            start, size = end + 1, 0
            mask = vm_ok_BVM[sl, :, None, None, :] & ep_ok_BEX[sl, None, :, :, None]
            b, i_v, i_e, i_x, i_m = (np.repeat(ix, zr) for ix in np.nonzero(mask))
            if not b.size:
                continue
            b = b + sl.start
            reps = b.size // zr
            yield {"tp": tp_B[b].astype(np.float64), "cp": cp_B[b].astype(np.float64),
                   "pp": pp_B[b].astype(np.float64), "dp": dp_B[b].astype(np.float64),
                   "vpp": vpp_V[i_v].astype(np.float64), "ep": ep_E[i_e].astype(np.float64),
                   "etp": etp_X[i_x].astype(np.float64),
                   "micro_batch": mb_M[i_m].astype(np.float64), "zero": np.tile(zero_K, reps),
                   **self._recompute_columns(np.tile(rec_K, reps))}


def valid(col: dict[str, np.ndarray], num_gpus: int, model: ModelSpec, train: TrainSpec) -> np.ndarray:
    """Mask of the grid points that are layouts (same rules as the validation gate)."""
    mp = col["tp"] * col["pp"] * col["cp"]
    ok = np.fmod(float(num_gpus), mp) == 0.0
    dp = np.where(ok, float(num_gpus) / mp, 1.0)
    col["dp"] = dp
    ok &= np.fmod(float(train.global_batch), dp * col["micro_batch"]) == 0.0
    etp = np.where(col["etp"] == 0.0, col["tp"], col["etp"])
    ok &= np.fmod(col["tp"] * col["cp"] * dp, col["ep"] * etp) == 0.0
    L = float(model.num_layers)
    pv = col["pp"] * col["vpp"]
    ok &= pv <= L
    ok &= (col["vpp"] == 1.0) | ((col["pp"] > 1.0) & (np.fmod(L, pv) == 0.0))
    m = float(train.global_batch) / (dp * col["micro_batch"])
    ok &= (col["vpp"] == 1.0) | (np.fmod(m, col["pp"]) == 0.0)
    return ok


def build_space(model: ModelSpec, train: TrainSpec, cluster: ClusterSpec, search: SearchSpec) -> Space:
    num_gpus = search.max_gpus or cluster.num_gpus
    domain = cluster.nvlink_domain
    tp = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= domain and model.num_heads % t == 0
          and (model.is_mla or model.num_kv_heads % t == 0)]
    cp = [c for c in CP_CANDIDATES if c == 1 or train.seq_len % (2 * c) == 0]
    ep = [e for e in range(1, model.num_experts + 1) if model.num_experts % e == 0] if model.is_moe else [1]
    etp = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= domain and model.expert_ffn_hidden_size % t == 0] \
        if model.is_moe else [0]
    values = {
        "tp": search.tp or tuple(tp),
        "cp": search.cp or tuple(cp),
        "pp": search.pp or tuple(range(1, model.num_layers + 1)),
        "vpp": search.vpp or VPP_CANDIDATES,
        "ep": search.ep or tuple(ep),
        "etp": search.etp or tuple(etp),
        "micro_batch": search.micro_batch or MICRO_BATCH_CANDIDATES,
        "zero": search.zero or (0, 1, 2, 3),
    }
    # One recompute value per mode, selective once per module list; none and full carry the first list's mask
    # (unused by the cost model, and one mask keeps their layer shapes shared).
    masks = [recompute_module_mask(one) for one in search.module_sets]
    variants = [(RECOMPUTE_MODES.index(r), m) for r in (search.recompute or RECOMPUTE_MODES)
                for m in (masks if r == "selective" else masks[:1])]
    values["recompute"] = tuple(range(len(variants)))
    return Space(num_gpus, {k: np.asarray(v, dtype=np.int64) for k, v in values.items()},
                 np.asarray(variants, dtype=np.int64))
