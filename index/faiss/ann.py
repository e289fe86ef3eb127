"""The approximate-nearest-neighbour half of a FAISS store: index kinds, GPU, mmap, and the cache file.

Kinds: ``flat`` (exact), ``hnsw``, ``ivfpq`` and ``sq8``. The trainable kinds (IVF-PQ, SQ8) search
exactly until SQLite holds ``train_size`` vectors, then are trained and filled from it. Compressed kinds
fetch ``k * rescore`` candidates and re-score them exactly from the float32 vectors SQLite keeps anyway.
HNSW cannot remove vectors: deleted entries become tombstones that searches skip, and the graph is rebuilt
when they pass a quarter of it. ``index.faiss`` is a cache of SQLite (see ``omniret.index.faiss.cache``):
on open it is caught up (stale ids removed, missing vectors added) or rebuilt when missing or unreadable.
With ``mmap`` a flat/SQ8/HNSW file is mapped instead of read, until the first write copies it into memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import numpy as np
import numpy.typing as npt

from omniret.errors import ConfigError
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

IndexKind = Literal["flat", "hnsw", "ivfpq", "sq8"]
INDEX_KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivfpq", "sq8")
#: the cache file of the main index: ``index.faiss`` + ``index.json``
CACHE = "index"


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
    save_behind: bool      # automatic saves clone the index and write the clone from a background thread (default)
    rescore: int           # lossy kinds (ivfpq, sq8): fetch k·rescore candidates, re-score them exactly
    funnel_candidates: int  # funnel search: candidates = k · funnel_candidates from the short index
    gpu: bool | None       # None: use a GPU when faiss has one
    mmap: bool             # map flat/SQ8 codes from the index file instead of reading them into memory


DEFAULTS: FaissOptions = {"M": 32, "ef_construction": 200, "ef_search": 128, "nbits": 8, "nprobe": 32,
                          "save_every": 50_000, "save_behind": True}
#: default ``rescore`` per kind: compressed codes re-score from the exact vectors SQLite keeps anyway
RESCORE: dict[str, int] = {"ivfpq": 4, "sq8": 2}


def check_index_kind(kind: object) -> IndexKind:
    """``kind`` as an ``IndexKind``; ``ConfigError`` listing the kinds otherwise."""
    for known in INDEX_KINDS:
        if kind == known:
            return known
    raise ConfigError(f"index={kind!r}: choose one of {', '.join(INDEX_KINDS)}")


def check_options(options: Mapping[str, object] | None) -> FaissOptions:
    """The FAISS options a caller or a manifest gives; ``ConfigError`` naming unknown ones (checked before
    anything is opened). Values are checked where they are used."""
    given = dict(options or {})
    unknown = set(given) - set(FaissOptions.__annotations__)
    if unknown:
        raise ConfigError(f"unknown FAISS option(s) {sorted(unknown)}; known: {', '.join(FaissOptions.__annotations__)}")
    return cast(FaissOptions, given)


def gpu_resources(faiss: FaissModule) -> object | None:
    """FAISS GPU resources when this faiss build has CUDA and sees a GPU, else None."""
    if not hasattr(faiss, "StandardGpuResources"):
        return None
    try:
        return faiss.StandardGpuResources() if faiss.get_num_gpus() > 0 else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup means CPU
        return None


def rescore(items: ItemTable, q: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products for ANN candidates (from the stored float32 vectors), best first."""
    uniq = sorted({int(f) for f in fids.ravel() if f >= 0})
    got, vecs = items.vectors(uniq)
    pos = {int(f): i for i, f in enumerate(got)}
    scores = np.full(fids.shape, -np.inf, dtype=np.float32)
    for r in range(len(fids)):
        cols = [c for c, f in enumerate(fids[r]) if int(f) in pos]
        if cols:
            scores[r, cols] = vecs[[pos[int(fids[r, c])] for c in cols]] @ q[r]
    order = np.argsort(-scores, axis=1, kind="stable")
    fids = np.take_along_axis(np.where(np.isfinite(scores), fids, -1), order, axis=1)
    return np.take_along_axis(scores, order, axis=1), fids


def exact_among(items: ItemTable, q: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` among the ``allowed`` fids, from the stored vectors."""
    fids, vecs = items.vectors(allowed.tolist())
    sims: npt.NDArray[np.float32] = np.matmul(q, np.transpose(vecs))
    k = min(k, len(fids))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, axis=1), fids[top]


class AnnIndex:
    """The live FAISS index of one store (``IndexIDMap2`` over the kind's index, ids = SQLite fids)."""

    def __init__(self, faiss: FaissModule, folder: Path, kind: IndexKind, dim: int, options: dict[str, Any],
                 items: ItemTable) -> None:
        # faiss's SWIG stubs do not describe its Python API (downcast_index, SearchParameters*): use it untyped
        self.faiss: FaissModule = faiss
        self.folder, self.kind, self.dim, self.items = folder, kind, dim, items
        #: the store's options (one dict, shared with the store: tuning and reopening change it in place)
        self.options = options
        if kind == "ivfpq":
            m = options.get("m")
            if m is not None and (m <= 0 or dim % m):
                raise ConfigError(f"ivfpq: m={m} must divide dim={dim}")
        gpu = options.get("gpu")
        self.gpu_res: object | None = gpu_resources(faiss) if gpu is not False else None
        if gpu and self.gpu_res is None:
            raise ConfigError("gpu=True but faiss has no CUDA GPU here (install faiss-gpu-cu12 on a GPU machine)")
        self._gpu_index: FaissIndex = None
        #: whether the index is the memory-mapped file (read-only until the first write)
        self.mapped = False
        #: HNSW tombstones: fids deleted from SQLite that the graph still holds
        self.dead: set[int] = set()
        #: changes since the file was last written
        self.changes = 0
        #: the generation the file on disk is stamped with, as this store last read or wrote it
        self.stamped: object = None
        self.index: FaissIndex = None

    # -- building ----------------------------------------------------------------------------------
    def train_size(self) -> int:
        if self.kind == "sq8":
            return int(self.options.get("train_size") or 1000)
        if self.kind == "ivfpq":
            nlist = self.options.get("nlist") or 256
            return int(self.options.get("train_size") or 39 * max(nlist, 2 ** self.options["nbits"]))
        return 0

    def empty_index(self, n: int) -> FaissIndex:
        """The index for ``n`` vectors: the exact fallback until a trainable kind has enough to train."""
        faiss, d = self.faiss, self.dim
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, int(self.options["M"]), ip)
            inner.hnsw.efConstruction = int(self.options["ef_construction"])
            inner.hnsw.efSearch = int(self.options["ef_search"])
        elif self.kind in ("ivfpq", "sq8") and n >= self.train_size():
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

    def inner(self) -> FaissIndex:
        return self.faiss.downcast_index(self.index.index)

    @property
    def exact(self) -> bool:
        """Whether searches are exact (flat, or a trainable kind still below its training size)."""
        return isinstance(self.inner(), self.faiss.IndexFlat)

    def build(self) -> FaissIndex:
        """A fresh index of everything SQLite holds (trained first when the kind needs it)."""
        fids, vecs = self.items.vectors()
        index = self.empty_index(len(fids))
        inner = self.faiss.downcast_index(index.index)
        if not inner.is_trained:
            rng = np.random.default_rng(0)
            sample = vecs if len(vecs) <= 100_000 else vecs[rng.choice(len(vecs), 100_000, replace=False)]
            inner.train(sample)
        if len(fids):
            index.add_with_ids(vecs, fids)
        self.dead = set()
        return index

    # -- the cache file ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read ``index.faiss`` (mapped when asked) and catch it up from SQLite, or rebuild and write it."""
        mapped = bool(self.options.get("mmap")) and self.kind in ("flat", "sq8", "hnsw")
        index, saved = read_cache(self.faiss, self.folder, CACHE, self.dim,
                                  flags=self.faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        if index is not None and saved.get("kind") != self.kind:
            index = None
        self.stamped = saved.get("generation")
        if index is None:
            self.mapped = False
            self.index = self.build()
            self.save()
            return
        self.mapped = mapped
        self.index = index
        self.apply_search_params()
        self._catch_up(same_generation=saved.get("generation") == self.items.generation())

    def save(self) -> None:
        write_cache(self.faiss, self.folder, CACHE, self.index, self.items.reflected, {"kind": self.kind})
        self.changes = 0
        self.stamped = self.items.reflected

    def copy(self) -> CacheCopy:
        """The file's contents as of now, to be written by ``write_copy`` later (counted as saved: call
        ``unsaved`` if that write fails)."""
        out = copy_cache(self.faiss, CACHE, self.index, self.items.reflected, {"kind": self.kind})
        self.changes = 0
        self.stamped = self.items.reflected
        return out

    def unsaved(self) -> None:
        """The last ``copy`` never reached the disk: the file is behind again (``dirty``)."""
        self.stamped = None

    @property
    def dirty(self) -> bool:
        """Whether the file is behind this index: changes not yet written, or a stamp that is not the
        generation the index reflects (a write through this store that changed no entry)."""
        return self.changes > 0 or self.stamped != self.items.reflected

    def _catch_up(self, *, same_generation: bool) -> None:
        """Make the index hold exactly SQLite's rows (the file may be behind after a crash)."""
        if same_generation and self.kind != "hnsw":
            return
        stale, missing = out_of_date(self.faiss, self.index, self.items)
        if not self.remove(stale) and len(missing):
            self.add(*self.items.vectors(missing.tolist()))
        if len(stale) or len(missing):
            self.changes += len(stale) + len(missing)
            self.changed()
            if self.changes >= int(self.options["save_every"]):
                self.save()

    def apply_search_params(self) -> None:
        """Set efSearch / nprobe from the options on the live index: a file read back carries the values
        it was saved with, so a tuned or changed setting would otherwise not apply on open."""
        inner = self.inner()
        if isinstance(inner, self.faiss.IndexHNSW):
            inner.hnsw.efSearch = int(self.options["ef_search"])
        elif isinstance(inner, self.faiss.IndexIVF):
            inner.nprobe = int(self.options["nprobe"])
        self._gpu_index = None

    def changed(self) -> None:
        """Forget the GPU copy after a change (it is made again on the next search)."""
        self._gpu_index = None

    # -- writes ------------------------------------------------------------------------------------
    def _writable(self) -> None:
        """A memory-mapped index is read-only (FAISS aborts the process on a write to mapped codes): the
        first change copies it into memory. Mapping is for serving processes that only search."""
        if self.mapped:
            # not clone_index: a clone shares the mapped codes; nothing was written since the file was
            # mapped (every write comes through here first), so reading it whole gives the same index
            self.index = self.faiss.read_index(str(self.folder / f"{CACHE}.faiss"))
            self.mapped = False
            self.apply_search_params()

    def add(self, fids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(fids):
            return
        self._writable()
        if self.kind in ("ivfpq", "sq8") and self.exact and self.index.ntotal + len(fids) >= self.train_size():
            # enough vectors now: replace the exact fallback by the trained index (SQLite already has them)
            self.index = self.build()
            self.changes += self.index.ntotal
            return
        self.index.add_with_ids(vecs, fids)

    def remove(self, fids: np.ndarray | list[int]) -> bool:
        """Drop entries; True when that rebuilt the index from SQLite (which then holds everything)."""
        fids = np.asarray(fids, dtype=np.int64)
        if not len(fids):
            return False
        self._writable()
        if self.kind == "hnsw":
            self.dead.update(int(x) for x in fids)
            if len(self.dead) > max(1000, self.index.ntotal // 4):
                self.index = self.build()
                return True
        else:
            self.index.remove_ids(fids)
        return False

    # -- search ------------------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(scores, fids)``, ``-1`` padded; restricted to ``allowed`` fids, tombstones skipped."""
        faiss = self.faiss
        n = self.index.ntotal
        if n == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        k = min(k, n)
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
            k = min(k, len(allowed))
        elif self.dead:
            dead = np.fromiter(self.dead, dtype=np.int64)
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        if sel is not None:
            inner = self.inner()
            if isinstance(inner, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(int(self.options["ef_search"]), k))
            elif isinstance(inner, faiss.IndexIVF):
                params = faiss.SearchParametersIVF(sel=sel, nprobe=int(self.options["nprobe"]))
            else:
                params = faiss.SearchParameters(sel=sel)
            return self.index.search(q, k, params=params)
        return self._search_index().search(q, k)

    def search_all(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered search as the options set it: ANN candidates, exactly re-scored for compressed kinds."""
        factor = int(self.options.get("rescore", RESCORE.get(self.kind, 0)))
        if factor > 1 and not self.exact:
            _, fids = self.search(q, k * factor + len(self.dead), None)
            return rescore(self.items, q, fids)
        return self.search(q, k + len(self.dead), None)

    def _search_index(self) -> FaissIndex:
        if self.gpu_res is None or self.kind == "hnsw":
            return self.index
        if self._gpu_index is None:
            self._gpu_index = self.faiss.index_cpu_to_gpu(self.gpu_res, 0, self.index)
        return self._gpu_index
