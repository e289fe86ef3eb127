"""The funnel (short-prefix) index of a FAISS store, for Matryoshka vectors.

Beside the main index the store keeps a small exact index over each vector's first ``funnel_dim``
components, re-normalised (``funnel.faiss``, a cache of SQLite like the main file). A funnel search scans
it for ``k * funnel_candidates`` candidates (the filter applied there, so ``k`` is honoured) and re-scores
them at full dim from the float32 vectors SQLite already holds: one batched read per query batch, so the
scores are exact full-dim inner products.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omniret.embed.matryoshka import truncate
from omniret.index.faiss.ann import rescore
from omniret.index.faiss.cache import (
    CacheCopy,
    FaissIndex,
    FaissModule,
    copy_cache,
    out_of_date,
    read_cache,
    write_cache,
)
from omniret.index.faiss.items import ItemTable

#: the cache file of the funnel index: ``funnel.faiss`` + ``funnel.json``
CACHE = "funnel"


class FunnelIndex:
    """An exact inner-product index over the ``funnel_dim`` prefixes, ids = SQLite fids."""

    def __init__(self, faiss: FaissModule, folder: Path, funnel_dim: int, items: ItemTable) -> None:
        self.faiss: FaissModule = faiss
        self.folder, self.funnel_dim, self.items = folder, funnel_dim, items
        index, saved = read_cache(faiss, folder, CACHE, funnel_dim)
        if index is None:
            self.index: FaissIndex = self._build()
            self.save()
        else:
            self.index = index
            if saved.get("generation") != items.generation():
                stale, missing = out_of_date(faiss, index, items)
                self.update(stale, *items.vectors(missing.tolist()))
                self.save()

    def _build(self) -> FaissIndex:
        index = self.faiss.IndexIDMap2(self.faiss.IndexFlatIP(self.funnel_dim))
        fids, vecs = self.items.vectors()
        if len(fids):
            index.add_with_ids(truncate(vecs, self.funnel_dim), fids)
        return index

    def update(self, removed: np.ndarray | list[int], fids: np.ndarray, vecs: np.ndarray) -> None:
        """Drop the ``removed`` fids and add ``(fids, vecs)`` (full-width vectors, cut here)."""
        gone = np.asarray(removed, dtype=np.int64)
        if len(gone):
            self.index.remove_ids(gone)
        if len(fids):
            self.index.add_with_ids(truncate(vecs, self.funnel_dim), np.asarray(fids, np.int64))

    def save(self) -> None:
        write_cache(self.faiss, self.folder, CACHE, self.index, self.items.reflected,
                    {"funnel_dim": self.funnel_dim})

    def copy(self) -> CacheCopy:
        """The file's contents as of now, for ``write_copy`` (see ``AnnIndex.copy``)."""
        return copy_cache(self.faiss, CACHE, self.index, self.items.reflected, {"funnel_dim": self.funnel_dim})

    def search(self, q: np.ndarray, pool: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``pool`` candidates from the short-prefix index (exact there, filter applied), re-scored at full dim."""
        faiss, index = self.faiss, self.index
        n = index.ntotal
        if n == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        short_q = truncate(q, self.funnel_dim)
        if allowed is not None:
            _, fids = index.search(short_q, min(pool, n, len(allowed)),
                                   params=faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)))
        else:
            _, fids = index.search(short_q, min(pool, n))
        return rescore(self.items, q, fids)
