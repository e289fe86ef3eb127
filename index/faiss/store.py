"""``FaissStore``: the embedded default store. FAISS for similarity, SQLite (WAL) for everything durable.

The facade over one folder's parts, each in its own module:

- ``items``: the items, their float32 vectors and the generation counter in ``store.sqlite``, the source
  of truth. An ``upsert`` returns only after its transaction committed, so an acknowledged item survives
  ``kill -9``.
- ``ann``: the FAISS index (flat, HNSW, IVF-PQ, SQ8; GPU; mmap) in ``index.faiss``, a cache of SQLite
  written on close and every ``save_every`` changes, caught up or rebuilt from SQLite on open. The
  periodic write (``save_behind``, the default) clones the index under the store's lock and writes the
  clone from a background thread, so a writer waits for a memory copy (about 1 s at 1M x 384 flat on a
  quiet machine) and not for the file write (1 to 4 s there, up to 22 s beside a snapshot). The price is
  a transient second copy of the index in memory; ``save_behind=False`` writes in the writer's call.
- ``funnel``: with ``funnel_dim``, an exact index over short Matryoshka prefixes (``funnel.faiss``) whose
  candidates are re-scored at full dim.
- ``lexical``: the FTS5 (BM25) table, written in the same transactions as the items.
- ``tune``: recall tuning of the index kind's search setting.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

from omniret.errors import ConfigError, DimensionError, StoreError
from omniret.index.faiss.ann import (
    DEFAULTS,
    INDEX_KINDS,
    AnnIndex,
    FaissOptions,
    IndexKind,
    check_index_kind,
    check_options,
    exact_among,
)
from omniret.index.faiss.cache import CacheCopy, FaissIndex, write_copy
from omniret.index.faiss.funnel import FunnelIndex
from omniret.index.faiss.items import ItemTable, read_points, stored_count
from omniret.index.faiss.lexical import LEXICAL_BUILD_BATCH, LexicalTable
from omniret.index.faiss.tune import tune_index
from omniret.index.filters import Filter, parse_filter, to_sql
from omniret.index.lexical import Analyzer, AnalyzerConfig
from omniret.index.protocol import (
    Payload,
    PointBatch,
    StoredItem,
    check_funnel_dim,
    check_search,
    check_upsert,
    funnel_pool,
    options_json,
)
from omniret.index.tuning import TuneResult, check_recall
from omniret.types import JSON, Hit

logger = logging.getLogger(__name__)

__all__ = ["EXACT_FILTER_ROWS", "INDEX_KINDS", "LEXICAL_BUILD_BATCH", "FaissOptions", "FaissStore", "IndexKind"]

#: filtered searches over at most this many allowed rows are answered exactly from the stored vectors
EXACT_FILTER_ROWS = 4096


class FaissStore:
    """A FAISS index plus a SQLite payload/vector store in one folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, dim: int | None = None, index: IndexKind = "flat",
                 options: FaissOptions | None = None, create: bool = True, funnel_dim: int | None = None,
                 lexical: Mapping[str, object] | AnalyzerConfig | None = None) -> None:
        import faiss

        self.path = Path(path)
        index = check_index_kind(index)
        given: dict[str, Any] = dict(check_options(options))
        db_path = self.path / "store.sqlite"
        if not db_path.exists() and not create:
            raise StoreError(f"no FAISS store at {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._items = ItemTable(db_path)
        self._lexical = LexicalTable(self._items, str(self.path))
        self._closed = False
        #: the background write of the FAISS files (``save_behind``), one at a time
        self._saver: ThreadPoolExecutor | None = None
        self._saving: Future[None] | None = None
        self.kind: IndexKind
        #: the options in force: the defaults, then the stored ones, then this call's
        self.options: dict[str, Any]
        meta = self._items.meta()
        if "dim" in meta:
            stored_dim = int(meta["dim"])
            if dim is not None and dim != stored_dim:
                raise DimensionError(f"FAISS store {self.path}: expected dimension {stored_dim}, got {dim}")
            self.dim = stored_dim
            self.kind = cast(IndexKind, meta["index"])
            self.options = {**DEFAULTS, **json.loads(meta["options"]), **given}
            stored_funnel = int(meta["funnel_dim"]) if meta.get("funnel_dim") else None
            if funnel_dim is not None and funnel_dim != stored_funnel:
                # the short index is fixed at creation, as Qdrant's named vectors are
                raise DimensionError(f"FAISS store {self.path} was created with funnel_dim={stored_funnel}, "
                                     f"not {funnel_dim}")
            self.funnel_dim = stored_funnel
        else:
            if dim is None or dim <= 0:
                raise ConfigError(f"a new FAISS store needs dim > 0, got {dim}")
            self.dim, self.kind = int(dim), index
            self.funnel_dim = check_funnel_dim(funnel_dim, self.dim, where=f"FAISS store {self.path}")
            self.options = {**DEFAULTS, **given}
            self._items.set_meta({"dim": str(self.dim), "index": self.kind, "options": json.dumps(given),
                                  "generation": "0", "funnel_dim": str(self.funnel_dim or ""),
                                  "lexical": json.dumps(AnalyzerConfig.from_dict(lexical).to_dict()),
                                  "lexical_ready": "1"})
            meta = self._items.meta()
        self._items.dim = self.dim
        self._lexical.load(meta, lexical)
        # the caches load from here on: they reflect at least this generation
        self._items.reflected = self._items.generation()
        self._ann = AnnIndex(faiss, self.path, self.kind, self.dim, self.options, self._items)
        self._ann.load()
        self._short = FunnelIndex(faiss, self.path, self.funnel_dim, self._items) if self.funnel_dim else None

    # -- facts -------------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """Whether searches are exact (flat, or a trainable kind still below its training size)."""
        return self._ann.exact

    @property
    def lexical_ready(self) -> bool:
        """Whether the lexical index holds every item (False for a store made before it, until built)."""
        return self._lexical.ready

    @property
    def analyzer(self) -> Analyzer:
        return self._lexical.analyzer

    def info(self) -> dict[str, JSON]:
        """Backend facts for ``Collection.info()``."""
        return {"backend": "faiss", "index": self.kind, "exact": self.exact, "dim": self.dim,
                "funnel_dim": self.funnel_dim, "lexical": self.analyzer.config.to_dict(),
                "lexical_ready": self.lexical_ready,
                "path": str(self.path), "gpu": self._ann.gpu_res is not None, "recall_tuning": self.recall_tuning(),
                "mmap": self._ann.mapped,
                "options": options_json(self.options, omit=("gpu",))}

    # -- VectorStore -------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload] | None = None
               ) -> None:
        """Insert or replace items by id; durable (committed in SQLite) when it returns."""
        ids, m, pls = check_upsert(ids, vectors, payloads, self.dim)
        if not ids:
            return
        terms = self._lexical.terms(pls)
        with self._lock:
            self._check_open()
            with self._items.write(f"upsert of {len(ids)} items"):
                old = self._items.remove(ids)
                self._lexical.remove(old)
                new = self._items.insert(ids, m, pls)
                self._lexical.insert(new, terms)
            new_fids = np.asarray(new, dtype=np.int64)
            if not self._ann.remove(old):
                self._ann.add(new_fids, m)
            if self._short is not None:
                self._short.update(old, new_fids, m)
            self._ann.changes += len(ids)
            self._maybe_save()

    def delete(self, ids: Sequence[str]) -> None:
        """Remove items by id (absent ids are ignored); durable when it returns."""
        ids = [str(i) for i in ids]
        if not ids:
            return
        with self._lock:
            self._check_open()
            with self._items.write(f"delete of {len(ids)} items"):
                old = self._items.remove(ids)
                self._lexical.remove(old)
            self._ann.remove(old)
            if self._short is not None:
                self._short.update(old, np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))
            self._ann.changes += len(old)
            self._maybe_save()

    def search(self, vectors: np.ndarray, k: int, filter: Filter | None = None,  # noqa: A002
               *, funnel: bool | None = None) -> list[list[Hit]]:
        """Best ``k`` hits per query row by inner product; ``filter`` restricts by payload (k honoured).

        ``funnel``: None searches through the short-prefix index when the store has one, True requires
        one, False searches the main index only. Funnel hits carry exact full-dim scores.
        """
        q = check_search(vectors, k, self.dim, funnel=funnel, funnel_dim=self.funnel_dim,
                         where=f"FAISS store {self.path}", create_hint="index")
        short = self._short if funnel is not False else None
        pool = funnel_pool(k, self.options, f"FAISS store {self.path}") if short is not None else 0
        conds = parse_filter(filter)
        with self._lock:
            self._check_open()
            allowed = None
            if conds:
                allowed = self._items.fids_where(*to_sql(conds))
                if not len(allowed):
                    return [[] for _ in range(len(q))]
            ann = self._ann
            if short is not None:
                scores, fids = short.search(q, pool, allowed)
            elif allowed is not None:
                if len(allowed) <= EXACT_FILTER_ROWS and not ann.exact:
                    scores, fids = exact_among(self._items, q, allowed, k)
                else:
                    scores, fids = ann.search(q, k, allowed)
                    if not ann.exact and (fids >= 0).sum(axis=1).min() < min(k, len(allowed)):
                        scores, fids = exact_among(self._items, q, allowed, k)
            else:
                scores, fids = ann.search_all(q, k)
            return self._items.hits(scores, fids, k, ann.dead)

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        """Per id: ``{"id", "payload", "vector"}`` or ``None``."""
        with self._lock:
            self._check_open()
            return self._items.get([str(i) for i in ids])

    def ids(self) -> list[str]:
        """Every stored id."""
        with self._lock:
            self._check_open()
            return self._items.ids()

    def count(self) -> int:
        with self._lock:
            self._check_open()
            return self._items.count()

    # -- lexical (FTS5) index ----------------------------------------------------------------------
    def build_lexical(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the lexical index from the stored payload text (stores made before it existed).

        Resumable: each batch of ``LEXICAL_BUILD_BATCH`` items commits with the position reached, so a
        killed build continues where it stopped. ``progress(done, total)`` is called after each batch.
        Returns how many items got a lexical entry.
        """
        with self._lock:
            self._check_open()
            return self._lexical.build(progress, batch=LEXICAL_BUILD_BATCH)

    def lexical_search(self, texts: Sequence[str], k: int, filter: Filter | None = None,  # noqa: A002
                       ) -> list[list[Hit]]:
        """Best ``k`` items per query text by BM25 over the analysed terms (FTS5 ``bm25()``, negated so
        that higher is better); ``filter`` as in ``search``. A query without index terms finds nothing."""
        with self._lock:
            self._check_open()
            return self._lexical.search(texts, k, filter)

    def lexical_count(self) -> int:
        """How many items have a lexical entry (items without text have none)."""
        with self._lock:
            self._check_open()
            return self._lexical.count()

    def lexical_ids(self) -> list[str]:
        """The ids of the items that have a lexical entry."""
        with self._lock:
            self._check_open()
            return self._lexical.ids()

    # -- recall tuning -----------------------------------------------------------------------------
    def tune(self, recall: float, *, k: int = 10, sample: int = 1000, max_build: int = 200_000,
             seed: int = 0) -> TuneResult:
        """Choose the cheapest efSearch (HNSW), nprobe (IVF-PQ) or re-scoring pool (SQ8, and IVF-PQ when
        nprobe alone falls short) whose recall@k meets ``recall``, and store it (applied on every open).

        Measured on held-out vectors (see ``omniret.index.faiss.tune.tune_index``).
        """
        target = check_recall(recall)
        if target is None:
            raise ConfigError("tune needs a recall target, e.g. 0.95")
        if k <= 0 or sample <= 0:
            raise ConfigError(f"tune needs k > 0 and sample > 0, got k={k}, sample={sample}")
        with self._lock:
            self._check_open()
            res = tune_index(self._ann, target, k=k, sample=sample, max_build=max_build, seed=seed,
                             where=f"FAISS store {self.path}")
            self.options.update(res.settings)
            self._ann.apply_search_params()
            stored = json.loads(self._items.meta().get("options", "{}"))
            self._items.set_meta({"options": json.dumps({**stored, **res.settings}),
                                  "recall_tuning": json.dumps({**res.to_dict(), "count": self._items.count()})})
            return res

    def recall_tuning(self) -> dict[str, JSON] | None:
        """The last ``tune`` result (what was chosen, measured recall, collection size then), or None."""
        raw = self._items.meta().get("recall_tuning")
        return json.loads(raw) if raw else None

    # -- files and lifetime ------------------------------------------------------------------------
    def save(self) -> None:
        """Write the FAISS files now (they are also written on close and every ``save_every`` changes)."""
        with self._lock:
            self._settle()
            self._save()

    def _save(self) -> None:
        self._ann.save()
        if self._short is not None:
            self._short.save()

    def _maybe_save(self) -> None:
        self._ann.changed()
        if self._saving is not None and self._saving.done():
            self._settle()  # a finished write is looked at by the next change: a failure is logged then
        if self._ann.changes < int(self.options["save_every"]):
            return
        if not self.options.get("save_behind", True):
            self._save()
        elif self._saving is None or self._saving.done():
            # a write still running is left alone: the changes since its copy go with the next one
            self._settle()
            copies = [self._ann.copy()] + ([self._short.copy()] if self._short is not None else [])
            if self._saver is None:
                self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniret-faiss-save")
            self._saving = self._saver.submit(self._write_copies, copies)

    def _write_copies(self, copies: list[CacheCopy]) -> None:
        """The background thread's part of ``save_behind``: files only, no index, no lock."""
        for c in copies:
            write_copy(self._ann.faiss, self.path, c)

    @property
    def saving(self) -> bool:
        """Whether a background write of the FAISS files is running now."""
        return self._saving is not None and not self._saving.done()

    def _settle(self) -> None:
        """Wait for the background write of the FAISS files, if one was started. One that failed (a full
        disk) leaves the files behind SQLite, which is logged and marks the index unsaved, so the next save
        or ``close`` writes them again and a lasting failure reaches that caller."""
        fut, self._saving = self._saving, None
        if fut is None:
            return
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - the files are a cache: a failed write is retried, not lost
            logger.warning("FAISS store %s: writing its index files in the background failed (%s); they are "
                           "written again at the next save or on close", self.path, e)
            self._ann.unsaved()

    def close(self) -> None:
        """Write the FAISS files when this store changed them since they were last written, and close SQLite
        (idempotent). A store opened only to read writes nothing: beside a live writer, its files would
        replace the writer's newer ones."""
        with self._lock:
            if self._closed:
                return
            try:
                self._settle()
                if self._ann.dirty:
                    self._save()
            finally:
                if self._saver is not None:
                    self._saver.shutdown(wait=True)
                self._items.close()
                self._closed = True

    # -- the parts under the names the kill-and-reopen tests use -----------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        """The SQLite connection. Closing it and setting ``None`` simulates ``kill -9``: the store is
        then closed without writing its FAISS files."""
        return self._items.db

    @_db.setter
    def _db(self, value: None) -> None:
        self._closed = True

    @property
    def _index(self) -> FaissIndex:
        """The live FAISS index (``IndexIDMap2``)."""
        return self._ann.index

    @property
    def _dead(self) -> set[int]:
        """HNSW tombstones."""
        return self._ann.dead

    @property
    def _funnel(self) -> FaissIndex:
        """The live funnel FAISS index, or None."""
        return self._short.index if self._short is not None else None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"FAISS store {self.path} is closed")

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- point export (``PointExport``: snapshots and copies) ------------------------------------------
    def export_points(self, batch_size: int = 1000, after: str | None = None) -> Iterator[PointBatch]:
        """Every item as ``(ids, vectors, payloads)`` batches in id order, from one point in time (see
        ``items.read_points``)."""
        with self._lock:
            self._check_open()
        return read_points(self.path, batch_size, after)

    #: the items of a store folder, read without opening it (safe beside a live writer)
    read_points = staticmethod(read_points)
    #: how many items a store folder holds, read without opening it
    stored_count = staticmethod(stored_count)
