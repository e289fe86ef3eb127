"""Index parameters from a recall target, measured on the collection's own vectors.

``--recall 0.95`` asks for the cheapest search setting whose recall@k against exact search reaches 0.95:
HNSW ``efSearch``, IVF ``nprobe`` (and the exact re-scoring pool of compressed kinds). The measurement
holds out a random sample of stored vectors as the queries; for each, the true neighbours are
the exact top-k of the other stored vectors, and the index searched is a scratch copy of the live one
without the sample (queries that sit in an HNSW graph find their neighbours through their own node, so
searching the live index reads high). Grids are walked from cheap to expensive and stop at the first
setting whose recall meets the target with 95 % confidence over queries like the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from omniret.errors import ConfigError
from omniret.types import JSON

#: efSearch values tried for HNSW, cheapest first
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
#: exact re-scoring pools (multiples of k) tried for compressed codes
RESCORE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def check_recall(recall: object) -> float | None:
    """A recall target in (0, 1], or None; anything else is a ``ConfigError`` (checked before any work)."""
    if recall is None:
        return None
    if isinstance(recall, bool) or not isinstance(recall, (int, float)) or not 0 < recall <= 1:
        raise ConfigError(f"recall={recall!r}: a recall target is a fraction in (0, 1], e.g. 0.95")
    return float(recall)


def nprobe_grid(nlist: int) -> list[int]:
    """Powers of two (and their 1.5x) up to ``nlist``, then ``nlist`` itself (exhaustive)."""
    out: set[int] = set()
    p = 1
    while p < nlist:
        out.update({p, min(nlist, p + p // 2)})
        p *= 2
    out.add(nlist)
    return sorted(v for v in out if v >= 1)


def exact_neighbours(chunks: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, query_ids: np.ndarray,
                     k: int) -> np.ndarray:
    """Exact top-``k`` ids by inner product over streamed ``(ids, vectors)`` chunks, each query's own id
    left out; ``(len(queries), k)`` int64, -1 where fewer exist."""
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    for ids, vecs in chunks:
        if not len(ids):
            continue
        sims: npt.NDArray[np.float32] = np.matmul(queries, np.transpose(vecs))
        sims[query_ids[:, None] == ids[None, :]] = -np.inf
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(i, top, axis=1)
    best_i[~np.isfinite(best_s)] = -1
    return best_i


def per_query_recall(found: np.ndarray, truth: np.ndarray, query_ids: np.ndarray | None = None) -> np.ndarray:
    """Each query's share of its true neighbours (``truth``, -1 padded) that ``found`` holds; a query's own
    id in ``found`` is ignored (leave-one-out). Queries without neighbours are left out."""
    out: list[float] = []
    for r in range(len(truth)):
        t = {int(x) for x in truth[r] if x >= 0}
        if not t:
            continue
        f = {int(x) for x in found[r] if x >= 0}
        if query_ids is not None:
            f.discard(int(query_ids[r]))
        out.append(len(t & f) / len(t))
    return np.asarray(out, dtype=np.float64)


def recall_at_k(found: np.ndarray, truth: np.ndarray, query_ids: np.ndarray | None = None) -> float:
    """Mean recall over queries (see ``per_query_recall``); 1.0 when no query has neighbours."""
    per = per_query_recall(found, truth, query_ids)
    return float(per.mean()) if len(per) else 1.0


#: one-sided 95 % normal quantile: a setting is accepted when mean recall - Z * standard error >= target
Z = 1.645


@dataclass
class TuneResult:
    """The chosen setting, its measured recall, and every setting tried on the way (for the record)."""

    target: float
    k: int
    sample: int
    param: str | None
    value: int | None
    recall: float
    met: bool
    tried: list[tuple[int, float]] = field(default_factory=lambda: [])
    extra: dict[str, JSON] = field(default_factory=lambda: {})
    #: the store options this result sets (e.g. ``{"ef_search": 96}``)
    settings: dict[str, int] = field(default_factory=lambda: {})

    def to_dict(self) -> dict[str, JSON]:
        return {"target": self.target, "k": self.k, "sample": self.sample, "param": self.param,
                "value": self.value, "recall": round(self.recall, 4), "met": self.met, "settings": {**self.settings},
                "tried": [[v, round(r, 4)] for v, r in self.tried], **self.extra}


def walk_grid(search: Callable[[int], np.ndarray], grid: Sequence[int], truth: np.ndarray, query_ids: np.ndarray,
              target: float) -> tuple[int, float, bool, list[tuple[int, float]]]:
    """Try ``grid`` values cheapest first; stop at the first whose recall meets ``target`` with 95 %
    confidence (mean minus 1.645 standard errors over the sample's queries), else return the best."""
    tried: list[tuple[int, float]] = []
    for v in grid:
        per = per_query_recall(search(v), truth, query_ids)
        r = float(per.mean()) if len(per) else 1.0
        se = float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else 0.0
        tried.append((v, r))
        if r - Z * se >= target or r >= 1.0:
            return v, r, True, tried
    v, r = max(tried, key=lambda t: (t[1], -t[0]))
    return v, r, False, tried
