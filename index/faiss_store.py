"""``FaissStore``: the embedded default store. FAISS for similarity, SQLite (WAL) for everything durable.

SQLite holds each item's string id, payload and the float32 vector itself, and a generation counter
bumped by every write. An ``upsert`` returns only after its transaction committed, so an acknowledged
item survives ``kill -9``. The FAISS file is a cache of SQLite: written on close and every
``save_every`` changes (atomically, with the generation it reflects); on open it is caught up from
SQLite (vectors added, stale ids removed) or rebuilt when missing or unreadable.

FAISS ids are SQLite ``AUTOINCREMENT`` row ids, never reused, so a stale FAISS entry can never alias a
new item. HNSW cannot remove vectors: deleted entries become tombstones that searches skip, and the
graph is rebuilt when they pass a quarter of it.

Funnel search (``funnel_dim``, for Matryoshka vectors): beside the main index the store keeps a small exact
index over each vector's first ``funnel_dim`` components, re-normalised (``funnel.faiss``, a cache of
SQLite like the main file). A funnel search scans that short index for ``k * funnel_candidates``
candidates (filters applied there, so ``k`` is honoured) and re-scores them at full dim from the float32
vectors SQLite already holds: one batched read per query batch, scores are exact full-dim inner products.

Lexical index: an FTS5 table ``lex`` in the same database, one row per item that has text (rowid = the
item's fid), holding the analysed terms (``omniret.index.lexical``) and ranked by FTS5's ``bm25()``. It is
written in the same transaction as the item rows, so ``kill -9`` can never leave the two out of step.
A store made before the lexical index existed gets it from the stored payload text by
``build_lexical`` (resumable: each batch commits, and a rerun picks up the items still missing).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import numpy as np

from omniret.embed.matryoshka import truncate
from omniret.errors import ConfigError, DimensionError, StoreError
from omniret.index.filters import Filter, parse_filter, to_sql
from omniret.index.lexical import Analyzer, AnalyzerConfig, fts_match, payload_text
from omniret.index.protocol import check_funnel_dim, check_search, check_upsert, funnel_pool
from omniret.index.tuning import (
    EF_GRID,
    RESCORE_GRID,
    TuneResult,
    check_recall,
    exact_neighbours,
    nprobe_grid,
    walk_grid,
)
from omniret.types import Hit

IndexKind = Literal["flat", "hnsw", "ivfpq", "sq8"]
INDEX_KINDS = ("flat", "hnsw", "ivfpq", "sq8")
_SQL_CHUNK = 900
#: items per committed batch when ``build_lexical`` fills the FTS5 table of an older store
LEXICAL_BUILD_BATCH = 2000
#: filtered searches over at most this many allowed rows are answered exactly from the stored vectors
EXACT_FILTER_ROWS = 4096


class FaissOptions(TypedDict, total=False):
    """Index parameters, under the names FAISS users know."""

    M: int                 # HNSW graph degree
    ef_construction: int   # HNSW efConstruction
    ef_search: int         # HNSW efSearch
    nlist: int             # IVF lists (default: ~4·sqrt(n) at training time)
    m: int                 # PQ sub-quantisers (must divide dim)
    nbits: int             # bits per PQ code
    nprobe: int            # IVF lists visited per query
    train_size: int        # vectors needed before IVF-PQ / SQ8 is trained (exact search until then)
    save_every: int        # changes between automatic FAISS-file saves
    rescore: int           # lossy kinds (ivfpq, sq8): fetch k·rescore candidates, re-score them exactly
    funnel_candidates: int  # funnel search: candidates = k · funnel_candidates from the short index
    gpu: bool | None       # None: use a GPU when faiss has one
    mmap: bool             # map flat/SQ8 codes from the index file instead of reading them into memory


_DEFAULTS: FaissOptions = {"M": 32, "ef_construction": 200, "ef_search": 128, "nbits": 8, "nprobe": 32,
                           "save_every": 50_000}
#: default ``rescore`` per kind: compressed codes re-score from the exact vectors SQLite keeps anyway
_RESCORE = {"ivfpq": 4, "sq8": 2}
def _gpu_resources() -> Any:
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return None
    try:
        return faiss.StandardGpuResources() if faiss.get_num_gpus() > 0 else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means CPU
        return None


class FaissStore:
    """A FAISS index plus a SQLite payload/vector store in one folder (see module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, dim: int | None = None, index: IndexKind = "flat",
                 options: FaissOptions | None = None, create: bool = True, funnel_dim: int | None = None,
                 lexical: Mapping[str, Any] | AnalyzerConfig | None = None) -> None:
        import faiss

        # faiss's SWIG stubs do not describe its Python API (downcast_index, SearchParameters*): use it untyped
        self._faiss: Any = faiss
        self.path = Path(path)
        if index not in INDEX_KINDS:
            raise ConfigError(f"index={index!r}: choose one of {', '.join(INDEX_KINDS)}")
        unknown = set(options or {}) - set(FaissOptions.__annotations__)
        if unknown:
            raise ConfigError(f"unknown FAISS option(s) {sorted(unknown)}; known: "
                              f"{', '.join(FaissOptions.__annotations__)}")
        db_path = self.path / "store.sqlite"
        if not db_path.exists() and not create:
            raise StoreError(f"no FAISS store at {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS items (fid INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "id TEXT NOT NULL UNIQUE, vector BLOB NOT NULL, payload TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            # analysed terms only: the analyser already split and folded them, unicode61 keeps them whole
            self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS lex USING fts5(terms, "
                             "tokenize='unicode61 remove_diacritics 0')")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {db_path}: {e}") from e
        self._closed = False
        self.kind: IndexKind
        #: the options in force: the defaults, then the stored ones, then this call's
        self.options: dict[str, Any]
        meta = self._meta()
        if "dim" in meta:
            stored_dim = int(meta["dim"])
            if dim is not None and dim != stored_dim:
                raise DimensionError(f"FAISS store {self.path}: expected dimension {stored_dim}, got {dim}")
            self.dim = stored_dim
            self.kind = cast(IndexKind, meta["index"])
            self.options = {**_DEFAULTS, **json.loads(meta["options"]), **(options or {})}
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
            self.options = {**_DEFAULTS, **(options or {})}
            self._set_meta({"dim": str(self.dim), "index": self.kind,
                            "options": json.dumps({k: v for k, v in (options or {}).items()}),
                            "generation": "0", "funnel_dim": str(self.funnel_dim or ""),
                            "lexical": json.dumps(AnalyzerConfig.from_dict(lexical).to_dict()),
                            "lexical_ready": "1"})
            meta = self._meta()
        self._init_lexical(meta, lexical)
        if self.kind == "ivfpq":
            self._check_pq()
        gpu = self.options.get("gpu")
        self._gpu_res = _gpu_resources() if gpu is not False else None
        if gpu and self._gpu_res is None:
            raise ConfigError("gpu=True but faiss has no CUDA GPU here (install faiss-gpu-cu12 on a GPU machine)")
        self._gpu_index: Any = None
        self._mapped = False
        self._dead: set[int] = set()
        self._changes = 0
        self._funnel: Any = None
        self._index = self._load_or_rebuild()
        self._funnel = self._load_or_rebuild_funnel() if self.funnel_dim else None

    # -- lexical (FTS5) index ---------------------------------------------------------------------
    def _init_lexical(self, meta: dict[str, str], lexical: Mapping[str, Any] | AnalyzerConfig | None) -> None:
        """Load the recorded analyser; a store from before the lexical index records one, to be built."""
        where = f"FAISS store {self.path}: lexical"
        if "lexical" in meta:
            config = AnalyzerConfig.from_dict(json.loads(meta["lexical"]), where=where)
            if lexical is not None and AnalyzerConfig.from_dict(lexical, where=where) != config:
                raise ConfigError(f"{where}: the store was created with analyser {config.to_dict()}; the "
                                  "analyser is fixed at creation (use a new collection to change it)")
            self.lexical_ready = meta.get("lexical_ready") == "1"
        else:
            config = AnalyzerConfig.from_dict(lexical, where=where)
            has_items = self._db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None
            self.lexical_ready = not has_items
            self._set_meta({"lexical": json.dumps(config.to_dict()), "lexical_ready": "1" if not has_items else "0"})
        self.analyzer = Analyzer(config)

    def _terms(self, payloads: Sequence[dict[str, Any]]) -> list[str]:
        """Each payload's analysed terms as one space-separated string ("" when it has no text)."""
        return [" ".join(self.analyzer.tokens(payload_text(p))) for p in payloads]

    def build_lexical(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the lexical index from the stored payload text (stores made before it existed).

        Resumable: each batch of ``LEXICAL_BUILD_BATCH`` items commits with the position reached, so a
        killed build continues where it stopped. ``progress(done, total)`` is called after each batch.
        Returns how many items got a lexical entry.
        """
        with self._lock:
            self._check_open()
            if self.lexical_ready:
                return 0
            meta = self._meta()
            upto = int(meta.get("lexical_upto") or 0)
            total = int(self._db.execute("SELECT COUNT(*) FROM items WHERE fid > ?", (upto,)).fetchone()[0])
            done = added = 0
            while True:
                rows = self._db.execute("SELECT fid, payload FROM items WHERE fid > ? ORDER BY fid LIMIT ?",
                                        (upto, LEXICAL_BUILD_BATCH)).fetchall()
                if not rows:
                    break
                terms = self._terms([json.loads(r[1]) for r in rows])
                fids = [r[0] for r in rows]
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("DELETE FROM lex WHERE rowid = ?", [(f,) for f in fids])
                    new = [(f, t) for f, t in zip(fids, terms, strict=True) if t]
                    self._db.executemany("INSERT INTO lex (rowid, terms) VALUES (?, ?)", new)
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('lexical_upto', ?)", (str(fids[-1]),))
                    self._db.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    raise StoreError(f"building the lexical index of {self.path} failed: {e}") from e
                upto, done, added = fids[-1], done + len(rows), added + len(new)
                if progress is not None:
                    progress(done, total)
            self._set_meta({"lexical_ready": "1"})
            self.lexical_ready = True
            return added

    def lexical_search(self, texts: Sequence[str], k: int, filter: Filter | None = None,  # noqa: A002
                       ) -> list[list[Hit]]:
        """Best ``k`` items per query text by BM25 over the analysed terms (FTS5 ``bm25()``, negated so
        that higher is better); ``filter`` as in ``search``. A query without index terms finds nothing."""
        if k <= 0:
            raise ConfigError(f"k must be > 0, got {k}")
        conds = parse_filter(filter)
        where, params = to_sql(conds) if conds else ("1", [])
        out: list[list[Hit]] = []
        with self._lock:
            self._check_open()
            if not self.lexical_ready:
                raise StoreError(f"the lexical index of {self.path} is not built yet (the store predates it); "
                                 "open the collection with open_collection(...) or run `omniret collections "
                                 "build-lexical NAME` to build it")
            for text in texts:
                terms = self.analyzer.query_terms(text)
                if not terms:
                    out.append([])
                    continue
                sql = "SELECT rowid, bm25(lex) FROM lex WHERE lex MATCH ?"
                args: list[Any] = [fts_match(terms)]
                if conds:
                    sql += f" AND rowid IN (SELECT fid FROM items WHERE {where})"
                    args += params
                try:
                    rows = self._db.execute(sql + " ORDER BY bm25(lex) LIMIT ?", [*args, k]).fetchall()
                except sqlite3.Error as e:
                    raise StoreError(f"lexical search in {self.path} failed: {e}") from e
                scores = np.asarray([[-r[1] for r in rows]], dtype=np.float64)
                fids = np.asarray([[r[0] for r in rows]], dtype=np.int64)
                out.append(self._hits(scores, fids, k)[0] if rows else [])
        return out

    def lexical_count(self) -> int:
        """How many items have a lexical entry (items without text have none)."""
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM lex").fetchone()[0])

    def lexical_ids(self) -> list[str]:
        """The ids of the items that have a lexical entry."""
        with self._lock:
            self._check_open()
            return [r[0] for r in self._db.execute(
                "SELECT items.id FROM lex JOIN items ON items.fid = lex.rowid ORDER BY items.fid")]

    # -- SQLite helpers --------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, kv: dict[str, str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(kv.items()))
        self._db.execute("COMMIT")

    def _generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _vectors(self, fids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(fids, vectors)`` from SQLite: all rows, or the given fids."""
        if fids is None:
            rows = self._db.execute("SELECT fid, vector FROM items ORDER BY fid").fetchall()
        else:
            rows = []
            fl = list(fids)
            for s in range(0, len(fl), _SQL_CHUNK):
                part = fl[s:s + _SQL_CHUNK]
                rows += self._db.execute(f"SELECT fid, vector FROM items WHERE fid IN ({','.join('?' * len(part))})",
                                         part).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs

    # -- FAISS index lifecycle -------------------------------------------------------------------
    def _check_pq(self) -> None:
        m = self.options.get("m")
        if m is not None and (m <= 0 or self.dim % m):
            raise ConfigError(f"ivfpq: m={m} must divide dim={self.dim}")

    def _train_size(self) -> int:
        if self.kind == "sq8":
            return int(self.options.get("train_size") or 1000)
        if self.kind == "ivfpq":
            nlist = self.options.get("nlist") or 256
            return int(self.options.get("train_size") or 39 * max(nlist, 2 ** self.options["nbits"]))
        return 0

    def _empty_index(self, n: int) -> Any:
        """The index for ``n`` vectors: the exact fallback until a trainable kind has enough to train."""
        faiss, d = self._faiss, self.dim
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, int(self.options["M"]), ip)
            inner.hnsw.efConstruction = int(self.options["ef_construction"])
            inner.hnsw.efSearch = int(self.options["ef_search"])
        elif self.kind in ("ivfpq", "sq8") and n >= self._train_size():
            if self.kind == "sq8":
                inner = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip)
            else:
                nlist = self.options.get("nlist") or int(max(16, min(4 * math.sqrt(n), n / 39)))
                m = self.options.get("m") or next(c for c in (64, 32, 16, 8, 4, 2, 1) if d % c == 0 and c <= d)
                inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, int(nlist), int(m), int(self.options["nbits"]), ip)
                inner.nprobe = int(self.options["nprobe"])
        else:
            inner = faiss.IndexFlatIP(d)
        return faiss.IndexIDMap2(inner)

    @property
    def exact(self) -> bool:
        """Whether searches are exact (flat, or a trainable kind still below its training size)."""
        return isinstance(self._faiss.downcast_index(self._index.index), self._faiss.IndexFlat)

    def _build(self) -> Any:
        fids, vecs = self._vectors()
        index = self._empty_index(len(fids))
        inner = self._faiss.downcast_index(index.index)
        if not inner.is_trained:
            rng = np.random.default_rng(0)
            sample = vecs if len(vecs) <= 100_000 else vecs[rng.choice(len(vecs), 100_000, replace=False)]
            inner.train(sample)
        if len(fids):
            index.add_with_ids(vecs, fids)
        self._dead = set()
        return index

    # -- the FAISS files: caches of SQLite, one path for the main and the funnel index ------------------
    def _cache_file(self, name: str) -> Path:
        return self.path / f"{name}.faiss"

    def _read_cache(self, name: str, dim: int, *, flags: int = 0) -> tuple[Any, dict[str, Any]]:
        """The saved ``NAME.faiss`` (read with FAISS IO ``flags``, e.g. memory-mapped) and its sidecar
        ``NAME.json``; ``(None, {})`` when either is missing or unreadable, or the index has another width:
        the caller then rebuilds it from SQLite."""
        f, side = self._cache_file(name), self.path / f"{name}.json"
        if not (f.exists() and side.exists()):
            return None, {}
        try:
            saved: dict[str, Any] = json.loads(side.read_text())
            index = self._faiss.read_index(str(f), flags)
        except (RuntimeError, ValueError, OSError):
            return None, {}
        if index.d != dim:
            return None, {}
        return index, saved

    def _write_cache(self, name: str, index: Any, facts: dict[str, Any]) -> None:
        """Write ``NAME.faiss``, then its sidecar (SQLite's generation, ``facts``), each by temp file + rename."""
        gen = self._generation()
        f = self._cache_file(name)
        tmp = f.with_suffix(".faiss.tmp")
        self._faiss.write_index(index, str(tmp))
        os.replace(tmp, f)
        side_tmp = self.path / f"{name}.json.tmp"
        side_tmp.write_text(json.dumps({"generation": gen, **facts, "ntotal": int(index.ntotal)}))
        os.replace(side_tmp, self.path / f"{name}.json")

    def _out_of_date(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(stale, missing)``: fids the index holds that SQLite no longer has, and the reverse."""
        in_index = self._faiss.vector_to_array(index.id_map).astype(np.int64)
        live = np.fromiter((r[0] for r in self._db.execute("SELECT fid FROM items")), dtype=np.int64)
        return (np.setdiff1d(in_index, live, assume_unique=True),
                np.setdiff1d(live, in_index, assume_unique=True))

    def _load_or_rebuild(self) -> Any:
        mapped = bool(self.options.get("mmap")) and self.kind in ("flat", "sq8", "hnsw")
        index, saved = self._read_cache("index", self.dim, flags=self._faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        if index is not None and saved.get("kind") != self.kind:
            index = None
        self._mapped = mapped
        if index is None:
            self._mapped = False
            index = self._build()
            self._index = index
            self._save()
            return index
        self._index = index
        self._apply_search_params()
        self._catch_up(same_generation=saved.get("generation") == self._generation())
        return index

    def _apply_search_params(self) -> None:
        """Set efSearch / nprobe from the options on the live index: a file read back carries the values
        it was saved with, so a tuned or changed setting would otherwise not apply on open."""
        inner = self._faiss.downcast_index(self._index.index)
        if isinstance(inner, self._faiss.IndexHNSW):
            inner.hnsw.efSearch = int(self.options["ef_search"])
        elif isinstance(inner, self._faiss.IndexIVF):
            inner.nprobe = int(self.options["nprobe"])
        self._gpu_index = None

    def _catch_up(self, *, same_generation: bool) -> None:
        """Make the FAISS index hold exactly SQLite's rows (the file may be behind after a crash)."""
        if same_generation and self.kind != "hnsw":
            return
        stale, missing = self._out_of_date(self._index)
        if not self._remove_fids(stale) and len(missing):
            fids, vecs = self._vectors(missing.tolist())
            self._add(fids, vecs)
        if len(stale) or len(missing):
            self._changes += len(stale) + len(missing)
            self._maybe_save()

    def _writable(self) -> None:
        """A memory-mapped index is read-only (FAISS aborts the process on a write to mapped codes): the
        first change copies it into memory. Mapping is for serving processes that only search."""
        if self._mapped:
            # not clone_index: a clone shares the mapped codes; nothing was written since the file was
            # mapped (every write comes through here first), so reading it whole gives the same index
            self._index = self._faiss.read_index(str(self._cache_file("index")))
            self._mapped = False
            self._apply_search_params()

    def _add(self, fids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(fids):
            return
        self._writable()
        if self.kind in ("ivfpq", "sq8") and self.exact and self._index.ntotal + len(fids) >= self._train_size():
            # enough vectors now: replace the exact fallback by the trained index (SQLite already has them)
            self._index = self._build()
            self._changes += self._index.ntotal
            return
        self._index.add_with_ids(vecs, fids)

    def _remove_fids(self, fids: np.ndarray | list[int]) -> bool:
        """Drop FAISS entries; True when that rebuilt the index from SQLite (which then holds everything)."""
        fids = np.asarray(fids, dtype=np.int64)
        if not len(fids):
            return False
        self._writable()
        if self.kind == "hnsw":
            self._dead.update(int(x) for x in fids)
            if len(self._dead) > max(1000, self._index.ntotal // 4):
                self._index = self._build()
                return True
        else:
            self._index.remove_ids(fids)
        return False

    def _save(self) -> None:
        self._write_cache("index", self._index, {"kind": self.kind})
        self._save_funnel()
        self._changes = 0

    def _maybe_save(self) -> None:
        self._gpu_index = None
        if self._changes >= int(self.options["save_every"]):
            self._save()

    # -- funnel (short-prefix) index -------------------------------------------------------------
    def _build_funnel(self) -> Any:
        faiss, fd = self._faiss, int(self.funnel_dim or 0)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(fd))
        fids, vecs = self._vectors()
        if len(fids):
            index.add_with_ids(truncate(vecs, fd), fids)
        return index

    def _load_or_rebuild_funnel(self) -> Any:
        index, saved = self._read_cache("funnel", int(self.funnel_dim or 0))
        if index is None:
            self._funnel = self._build_funnel()
            self._save_funnel()
            return self._funnel
        self._funnel = index
        if saved.get("generation") != self._generation():
            stale, missing = self._out_of_date(index)
            self._funnel_update(stale, *self._vectors(missing.tolist()))
            self._save_funnel()
        return index

    def _funnel_update(self, removed: np.ndarray | list[int], fids: np.ndarray, vecs: np.ndarray) -> None:
        if self._funnel is None:
            return
        removed = np.asarray(removed, dtype=np.int64)
        if len(removed):
            self._funnel.remove_ids(removed)
        if len(fids):
            self._funnel.add_with_ids(truncate(vecs, int(self.funnel_dim or 0)), np.asarray(fids, np.int64))

    def _save_funnel(self) -> None:
        if self._funnel is None:
            return
        self._write_cache("funnel", self._funnel, {"funnel_dim": self.funnel_dim})

    def save(self) -> None:
        """Write the FAISS file now (it is also written on close and every ``save_every`` changes)."""
        with self._lock:
            self._save()

    # -- VectorStore -----------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None
               ) -> None:
        """Insert or replace items by id; durable (committed in SQLite) when it returns."""
        ids, m, pls = check_upsert(ids, vectors, payloads, self.dim)
        if not ids:
            return
        terms = self._terms(pls)
        with self._lock:
            self._check_open()
            with self._write(f"upsert of {len(ids)} items"):
                old = self._fids_of(ids)
                self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in old])
                self._db.executemany("DELETE FROM lex WHERE rowid = ?", [(f,) for f in old.values()])
                new = [self._db.execute("INSERT INTO items (id, vector, payload) VALUES (?, ?, ?)",
                                        (i, v.tobytes(), json.dumps(p, ensure_ascii=False))).lastrowid
                       for i, v, p in zip(ids, m, pls, strict=True)]
                self._db.executemany("INSERT INTO lex (rowid, terms) VALUES (?, ?)",
                                     [(f, t) for f, t in zip(new, terms, strict=True) if t])
            new_fids = np.asarray(new, dtype=np.int64)
            if not self._remove_fids(list(old.values())):
                self._add(new_fids, m)
            self._funnel_update(list(old.values()), new_fids, m)
            self._changes += len(ids)
            self._maybe_save()

    def delete(self, ids: Sequence[str]) -> None:
        """Remove items by id (absent ids are ignored); durable when it returns."""
        ids = [str(i) for i in ids]
        if not ids:
            return
        with self._lock:
            self._check_open()
            with self._write(f"delete of {len(ids)} items"):
                old = self._fids_of(ids)
                self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in old])
                self._db.executemany("DELETE FROM lex WHERE rowid = ?", [(f,) for f in old.values()])
            self._remove_fids(list(old.values()))
            self._funnel_update(list(old.values()), np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))
            self._changes += len(old)
            self._maybe_save()

    def search(self, vectors: np.ndarray, k: int, filter: Filter | None = None,  # noqa: A002
               *, funnel: bool | None = None) -> list[list[Hit]]:
        """Best ``k`` hits per query row by inner product; ``filter`` restricts by payload (k honoured).

        ``funnel``: None searches through the short-prefix index when the store has one, True requires
        one, False searches the main index only. Funnel hits carry exact full-dim scores.
        """
        q = check_search(vectors, k, self.dim, funnel=funnel, funnel_dim=self.funnel_dim,
                         where=f"FAISS store {self.path}", create_hint="index")
        use_funnel = self.funnel_dim is not None and funnel is not False
        pool = funnel_pool(k, dict(self.options), f"FAISS store {self.path}") if use_funnel else 0
        conds = parse_filter(filter)
        with self._lock:
            self._check_open()
            if use_funnel:
                allowed = None
                if conds:
                    where, params = to_sql(conds)
                    allowed = np.fromiter(
                        (r[0] for r in self._db.execute(f"SELECT fid FROM items WHERE {where}", params)),
                        dtype=np.int64)
                    if not len(allowed):
                        return [[] for _ in range(len(q))]
                scores, fids = self._funnel_search(q, pool, allowed)
            elif conds:
                where, params = to_sql(conds)
                allowed = np.fromiter((r[0] for r in self._db.execute(f"SELECT fid FROM items WHERE {where}", params)),
                                      dtype=np.int64)
                if not len(allowed):
                    return [[] for _ in range(len(q))]
                if len(allowed) <= EXACT_FILTER_ROWS and not self.exact:
                    scores, fids = self._exact_among(q, allowed, k)
                else:
                    scores, fids = self._index_search(q, k, allowed)
                    if not self.exact and (fids >= 0).sum(axis=1).min() < min(k, len(allowed)):
                        scores, fids = self._exact_among(q, allowed, k)
            else:
                scores, fids = self._search_all(q, k)
            return self._hits(scores, fids, k)

    def _search_all(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered search as the options set it: ANN candidates, exactly re-scored for compressed kinds."""
        factor = int(self.options.get("rescore", _RESCORE.get(self.kind, 0)))
        if factor > 1 and not self.exact:
            scores, fids = self._index_search(q, k * factor + len(self._dead), None)
            return self._rescore(q, fids)
        return self._index_search(q, k + len(self._dead), None)

    def _funnel_search(self, q: np.ndarray, pool: int, allowed: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``pool`` candidates from the short-prefix index (exact there, filter applied), re-scored at full dim."""
        faiss, index = self._faiss, self._funnel
        n = index.ntotal
        if n == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        short_q = truncate(q, int(self.funnel_dim or 0))
        if allowed is not None:
            _, fids = index.search(short_q, min(pool, n, len(allowed)),
                                   params=faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)))
        else:
            _, fids = index.search(short_q, min(pool, n))
        return self._rescore(q, fids)

    def _rescore(self, q: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products for ANN candidates (from the stored float32 vectors), best first."""
        uniq = sorted({int(f) for f in fids.ravel() if f >= 0})
        got, vecs = self._vectors(uniq)
        pos = {int(f): i for i, f in enumerate(got)}
        scores = np.full(fids.shape, -np.inf, dtype=np.float32)
        for r in range(len(fids)):
            cols = [c for c, f in enumerate(fids[r]) if int(f) in pos]
            if cols:
                scores[r, cols] = vecs[[pos[int(fids[r, c])] for c in cols]] @ q[r]
        order = np.argsort(-scores, axis=1, kind="stable")
        fids = np.take_along_axis(np.where(np.isfinite(scores), fids, -1), order, axis=1)
        return np.take_along_axis(scores, order, axis=1), fids

    def _index_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        n = self._index.ntotal
        if n == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        k = min(k, n)
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
            k = min(k, len(allowed))
        elif self._dead:
            dead = np.fromiter(self._dead, dtype=np.int64)
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        if sel is not None:
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(int(self.options["ef_search"]), k))
            elif isinstance(inner, faiss.IndexIVF):
                params = faiss.SearchParametersIVF(sel=sel, nprobe=int(self.options["nprobe"]))
            else:
                params = faiss.SearchParameters(sel=sel)
            return self._index.search(q, k, params=params)
        index = self._search_index()
        return index.search(q, k)

    def _search_index(self) -> Any:
        if self._gpu_res is None or self.kind == "hnsw":
            return self._index
        if self._gpu_index is None:
            self._gpu_index = self._faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index)
        return self._gpu_index

    def _exact_among(self, q: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        fids, vecs = self._vectors(allowed.tolist())
        sims = q @ vecs.T
        k = min(k, len(fids))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, axis=1), fids[top]

    def _hits(self, scores: np.ndarray, fids: np.ndarray, k: int) -> list[list[Hit]]:
        wanted = sorted({int(f) for f in fids.ravel() if f >= 0 and int(f) not in self._dead})
        rows: dict[int, tuple[str, str]] = {}
        for s in range(0, len(wanted), _SQL_CHUNK):
            part = wanted[s:s + _SQL_CHUNK]
            for fid, id_, payload in self._db.execute(
                    f"SELECT fid, id, payload FROM items WHERE fid IN ({','.join('?' * len(part))})", part):
                rows[fid] = (id_, payload)
        out: list[list[Hit]] = []
        for srow, frow in zip(scores, fids, strict=True):
            hits: list[Hit] = []
            for sc, f in zip(srow, frow, strict=True):
                r = rows.get(int(f))
                if r is None:
                    continue
                hits.append(Hit(id=r[0], score=float(sc), payload=json.loads(r[1])))
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Per id: ``{"id", "payload", "vector"}`` or ``None``."""
        ids = [str(i) for i in ids]
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._check_open()
            for s in range(0, len(ids), _SQL_CHUNK):
                part = ids[s:s + _SQL_CHUNK]
                for id_, vec, payload in self._db.execute(
                        f"SELECT id, vector, payload FROM items WHERE id IN ({','.join('?' * len(part))})", part):
                    found[id_] = {"id": id_, "payload": json.loads(payload),
                                  "vector": np.frombuffer(vec, dtype=np.float32).copy()}
        return [found.get(i) for i in ids]

    def ids(self) -> list[str]:
        """Every stored id."""
        with self._lock:
            self._check_open()
            return [r[0] for r in self._db.execute("SELECT id FROM items ORDER BY fid")]

    def count(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def tune(self, recall: float, *, k: int = 10, sample: int = 1000, max_build: int = 200_000,
             seed: int = 0) -> TuneResult:
        """Choose the cheapest efSearch (HNSW), nprobe (IVF-PQ) or re-scoring pool (SQ8, and IVF-PQ when
        nprobe alone falls short) whose recall@k meets ``recall``, and store it (applied on every open).

        Measured on held-out vectors: ``sample`` stored vectors are the queries, and a scratch index of this
        kind and parameters is built over the others (at most ``max_build`` of them, a random subset
        beyond); truth is exact search over that same set. Queries that sit in the graph would find their
        neighbours through their own node, so a leave-one-out estimate on the live index reads high.
        """
        target = check_recall(recall)
        assert target is not None
        if k <= 0 or sample <= 0:
            raise ConfigError(f"tune needs k > 0 and sample > 0, got k={k}, sample={sample}")
        with self._lock:
            self._check_open()
            all_fids = np.fromiter((r[0] for r in self._db.execute("SELECT fid FROM items")), dtype=np.int64)
            if len(all_fids) < 2 * k:
                raise ConfigError(f"FAISS store {self.path} holds {len(all_fids)} vector(s); recall tuning needs "
                                  f"at least {2 * k} to measure on (index first)")
            rng = np.random.default_rng(seed)
            picked = rng.choice(all_fids, min(sample, len(all_fids) // 5 or 1), replace=False)
            qids, q = self._vectors(picked.tolist())
            rest = np.setdiff1d(all_fids, qids)
            if len(rest) > max_build:
                rest = np.sort(rng.choice(rest, max_build, replace=False))
            rest_ids, rest_vecs = self._vectors(rest.tolist())
            truth = exact_neighbours(((rest_ids[s:s + 20_000], rest_vecs[s:s + 20_000])
                                      for s in range(0, len(rest_ids), 20_000)), q, qids, k)
            live_inner = self._faiss.downcast_index(self._index.index)
            if self.kind in ("ivfpq", "sq8") and not self.exact:
                # the live index's own training (centroids, codebooks, ranges), without its vectors
                inner = self._faiss.clone_index(live_inner)
                inner.reset()
                scratch = self._faiss.IndexIDMap2(inner)
            else:
                scratch = self._empty_index(len(rest_ids))
                inner = self._faiss.downcast_index(scratch.index)
                if not inner.is_trained:
                    inner.train(rest_vecs if len(rest_vecs) <= 100_000
                                else rest_vecs[rng.choice(len(rest_vecs), 100_000, replace=False)])
            scratch.add_with_ids(rest_vecs, rest_ids)
            del rest_vecs
            res = TuneResult(target=target, k=k, sample=len(qids), param=None, value=None, recall=1.0, met=True)
            live, dead = self._index, self._dead
            self._index, self._dead = scratch, set()
            try:
                if self.exact:
                    res.extra["exact"] = True
                elif self.kind == "hnsw":
                    v, r, met, tried = walk_grid(lambda ef: self._probe(q, k, ef_search=ef), EF_GRID, truth, qids,
                                                 target)
                    res.param, res.value, res.recall, res.met, res.tried = "ef_search", v, r, met, tried
                elif self.kind == "ivfpq":
                    grid = nprobe_grid(int(inner.nlist))
                    v, r, met, tried = walk_grid(lambda p: self._probe(q, k, nprobe=p), grid, truth, qids, target)
                    res.param, res.value, res.recall, res.met, res.tried = "nprobe", v, r, met, tried
                    if not met:  # the codes themselves are too coarse: widen the exact re-scoring pool
                        nprobe = v
                        v, r, met, more = walk_grid(lambda f: self._probe(q, k, nprobe=nprobe, rescore=f),
                                                    RESCORE_GRID, truth, qids, target)
                        res.extra["nprobe"] = nprobe
                        res.param, res.value, res.recall, res.met, res.tried = "rescore", v, r, met, tried + more
                else:  # sq8: one knob, the re-scoring pool
                    v, r, met, tried = walk_grid(lambda f: self._probe(q, k, rescore=f), RESCORE_GRID, truth, qids,
                                                 target)
                    res.param, res.value, res.recall, res.met, res.tried = "rescore", v, r, met, tried
            finally:
                self._index, self._dead = live, dead
            chosen: dict[str, int] = {}
            if res.param is not None and res.value is not None:
                chosen[res.param] = int(res.value)
                if "nprobe" in res.extra:
                    chosen["nprobe"] = int(res.extra["nprobe"])
            res.settings = chosen
            self.options.update(chosen)
            self._apply_search_params()
            stored = json.loads(self._meta().get("options", "{}"))
            self._set_meta({"options": json.dumps({**stored, **chosen}),
                            "recall_tuning": json.dumps({**res.to_dict(), "count": len(all_fids)})})
            return res

    def _probe(self, q: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               rescore: int | None = None) -> np.ndarray:
        """The ids an unfiltered search returns under trial settings."""
        saved = dict(self.options)
        try:
            if ef_search is not None:
                self.options["ef_search"] = ef_search
            if nprobe is not None:
                self.options["nprobe"] = nprobe
            if rescore is not None:
                self.options["rescore"] = rescore
            self._apply_search_params()
            return self._search_all(q, k)[1]
        finally:
            self.options = saved
            self._apply_search_params()

    def _chunks(self, size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored ``(fids, vectors)``, ``size`` rows at a time (a scan that never holds them all)."""
        last = -1
        while True:
            rows = self._db.execute("SELECT fid, vector FROM items WHERE fid > ? ORDER BY fid LIMIT ?",
                                    (last, size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)

    def recall_tuning(self) -> dict[str, Any] | None:
        """The last ``tune`` result (what was chosen, measured recall, collection size then), or None."""
        raw = self._meta().get("recall_tuning")
        return json.loads(raw) if raw else None

    def info(self) -> dict[str, Any]:
        """Backend facts for ``Collection.info()``."""
        return {"backend": "faiss", "index": self.kind, "exact": self.exact, "dim": self.dim,
                "funnel_dim": self.funnel_dim, "lexical": self.analyzer.config.to_dict(),
                "lexical_ready": self.lexical_ready,
                "path": str(self.path), "gpu": self._gpu_res is not None, "recall_tuning": self.recall_tuning(),
                "mmap": self._mapped,
                "options": {k: v for k, v in self.options.items() if k != "gpu"}}

    def close(self) -> None:
        """Write the FAISS file and close SQLite (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._save()
            finally:
                self._db.close()
                self._closed = True

    # -- internals -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"FAISS store {self.path} is closed")

    def _fids_of(self, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in range(0, len(ids), _SQL_CHUNK):
            part = ids[s:s + _SQL_CHUNK]
            out.update(self._db.execute(f"SELECT id, fid FROM items WHERE id IN ({','.join('?' * len(part))})",
                                        part).fetchall())
        return out

    def _bump_generation(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[None]:
        """One durable SQLite write: BEGIN IMMEDIATE, the caller's statements, a new generation, COMMIT;
        any SQLite failure rolls back and becomes a ``StoreError`` naming the operation."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._bump_generation()
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise StoreError(f"{what} failed: {e}") from e

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transfer capability (snapshots and copies, ``omniret.index.transfer``) ------------------------
    # Kept together at the end of the class so it moves as one block when the store is split up.
    def export_points(self, batch_size: int = 1000, after: str | None = None
                      ) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Every item as ``(ids, vectors, payloads)`` batches in id order, from one point in time (see
        ``read_points``)."""
        with self._lock:
            self._check_open()
        return self.read_points(self.path, batch_size, after)

    @staticmethod
    def read_points(path: str | os.PathLike[str], batch_size: int = 1000, after: str | None = None
                    ) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """The items of the store in folder ``path``, read without opening it (no FAISS index is loaded or
        written, so it is safe beside a live writer in this or another process).

        The rows come through a read-only SQLite connection inside one read transaction: WAL gives it the
        database as of its first read, so concurrent upserts and deletes neither appear half way nor wait
        (a reader never blocks a WAL writer). ``after``: start past this id (a resumed copy).
        """
        db_file = Path(path) / "store.sqlite"
        if not db_file.is_file():
            raise StoreError(f"no FAISS store at {path}")
        db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        try:
            db.execute("BEGIN")
            dim = int(db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])
            last = after
            while True:
                rows = db.execute("SELECT id, vector, payload FROM items WHERE ? IS NULL OR id > ? ORDER BY id "
                                  "LIMIT ?", (last, last, batch_size)).fetchall()
                if not rows:
                    return
                last = rows[-1][0]
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                yield [r[0] for r in rows], vecs, [json.loads(r[2]) for r in rows]
        except sqlite3.Error as e:
            raise StoreError(f"reading the items of {path} failed: {e}") from e
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("COMMIT")
            db.close()

    @staticmethod
    def stored_count(path: str | os.PathLike[str]) -> int:
        """How many items the store in folder ``path`` holds, read without opening it."""
        with contextlib.closing(sqlite3.connect(f"file:{Path(path) / 'store.sqlite'}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
