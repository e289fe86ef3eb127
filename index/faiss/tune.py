"""Recall tuning of a FAISS store's index: the measurement of ``omniret.index.tuning`` run on its kind.

HNSW tunes ``ef_search``; IVF-PQ ``nprobe`` and, when the codes alone fall short, the exact re-scoring
pool; SQ8 the re-scoring pool. The grids are walked on a scratch index of the same kind and parameters
(see ``tune_index``), never on the live one.
"""

from __future__ import annotations

import numpy as np

from omniret.errors import ConfigError
from omniret.index.faiss.ann import AnnIndex
from omniret.index.tuning import EF_GRID, RESCORE_GRID, TuneResult, exact_neighbours, nprobe_grid, walk_grid


def _probe(ann: AnnIndex, q: np.ndarray, k: int, **trial: int) -> np.ndarray:
    """The ids an unfiltered search returns under trial settings (the options are restored after)."""
    saved = dict(ann.options)
    try:
        ann.options.update(trial)
        ann.apply_search_params()
        return ann.search_all(q, k)[1]
    finally:
        ann.options.clear()
        ann.options.update(saved)
        ann.apply_search_params()


def tune_index(ann: AnnIndex, target: float, *, k: int, sample: int, max_build: int, seed: int,
               where: str) -> TuneResult:
    """The cheapest setting whose held-out recall@k meets ``target``; ``settings`` holds what it sets.

    ``sample`` stored vectors are the queries, and a scratch index of this kind and parameters is built
    over the others (at most ``max_build``, a random subset beyond); truth is exact search over that same
    set. Queries that sit in the graph would find their neighbours through their own node, so a
    leave-one-out estimate on the live index reads high. Nothing is stored here.
    """
    faiss, items = ann.faiss, ann.items
    all_fids = items.all_fids()
    if len(all_fids) < 2 * k:
        raise ConfigError(f"{where} holds {len(all_fids)} vector(s); recall tuning needs at least {2 * k} to "
                          "measure on (index first)")
    rng = np.random.default_rng(seed)
    picked = rng.choice(all_fids, min(sample, len(all_fids) // 5 or 1), replace=False)
    qids, q = items.vectors(picked.tolist())
    rest = np.setdiff1d(all_fids, qids)
    if len(rest) > max_build:
        rest = np.sort(rng.choice(rest, max_build, replace=False))
    rest_ids, rest_vecs = items.vectors(rest.tolist())
    truth = exact_neighbours(((rest_ids[s:s + 20_000], rest_vecs[s:s + 20_000])
                              for s in range(0, len(rest_ids), 20_000)), q, qids, k)
    if ann.kind in ("ivfpq", "sq8") and not ann.exact:
        # the live index's own training (centroids, codebooks, ranges), without its vectors
        inner = faiss.clone_index(ann.inner())
        inner.reset()
        scratch = faiss.IndexIDMap2(inner)
    else:
        scratch = ann.empty_index(len(rest_ids))
        inner = faiss.downcast_index(scratch.index)
        if not inner.is_trained:
            inner.train(rest_vecs if len(rest_vecs) <= 100_000
                        else rest_vecs[rng.choice(len(rest_vecs), 100_000, replace=False)])
    scratch.add_with_ids(rest_vecs, rest_ids)
    del rest_vecs
    res = TuneResult(target=target, k=k, sample=len(qids), param=None, value=None, recall=1.0, met=True)
    wide_nprobe: int | None = None  # ivfpq: the nprobe kept when the target also needed a wider rescore
    live, dead = ann.index, ann.dead
    ann.index, ann.dead = scratch, set()
    try:
        if ann.exact:
            res.extra["exact"] = True
        elif ann.kind == "hnsw":
            v, r, met, tried = walk_grid(lambda ef: _probe(ann, q, k, ef_search=ef), EF_GRID, truth, qids, target)
            res.param, res.value, res.recall, res.met, res.tried = "ef_search", v, r, met, tried
        elif ann.kind == "ivfpq":
            grid = nprobe_grid(int(inner.nlist))
            v, r, met, tried = walk_grid(lambda p: _probe(ann, q, k, nprobe=p), grid, truth, qids, target)
            res.param, res.value, res.recall, res.met, res.tried = "nprobe", v, r, met, tried
            if not met:  # the codes themselves are too coarse: widen the exact re-scoring pool
                nprobe = wide_nprobe = v
                v, r, met, more = walk_grid(lambda f: _probe(ann, q, k, nprobe=nprobe, rescore=f),
                                            RESCORE_GRID, truth, qids, target)
                res.extra["nprobe"] = nprobe
                res.param, res.value, res.recall, res.met, res.tried = "rescore", v, r, met, tried + more
        else:  # sq8: one knob, the re-scoring pool
            v, r, met, tried = walk_grid(lambda f: _probe(ann, q, k, rescore=f), RESCORE_GRID, truth, qids,
                                         target)
            res.param, res.value, res.recall, res.met, res.tried = "rescore", v, r, met, tried
    finally:
        ann.index, ann.dead = live, dead
    chosen: dict[str, int] = {}
    if res.param is not None and res.value is not None:
        chosen[res.param] = int(res.value)
        if wide_nprobe is not None:
            chosen["nprobe"] = wide_nprobe
    res.settings = chosen
    return res
