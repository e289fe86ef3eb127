"""Snapshots, restores and copies of collections: one streaming layer, no vector recomputed.

Every move reads a collection's points in batches (ids, the full vectors, payloads; ``export_points`` of
either store, each from one point in time) and writes them through ``VectorStore.upsert`` into a store of
either backend, which rebuilds what derives from them: the funnel prefix (``funnel_dim``) and the lexical
index (the payload text under the collection's recorded analyser), exactly as on the first ingestion.

- ``snapshot_collection``: collection -> archive (``omniret.index.archive``): the ledger, the points, the
  collection's own media files, a checksummed table of contents; renamed into place only when complete.
- ``restore_collection``: archive -> collection, FAISS or Qdrant whichever it came from; the archive is
  checked whole first, the collection built in a hidden folder and swapped in at the end.
- ``copy_collection``: collection -> collection, without an archive; resumable (a progress marker in the
  hidden destination folder, written after each acknowledged batch; upserts by id make a repeated batch
  harmless), optionally to another FAISS index kind, re-tuned to the recorded recall target.
- ``verify_collections``: counts, and a sample of items fetched and searched (dense and lexical) on both
  sides; every difference is listed.

Consistency: FAISS reads inside one SQLite read transaction (WAL: writers never wait, the reader sees the
database as of its first read); Qdrant local mode holds the store's lock for the export (writes through the
same store wait for it); a Qdrant server collection is exported by scrolling, which is not isolated from
concurrent writers: for a live server collection, ``QdrantStore.create_server_snapshot`` uses the server's
own snapshot API. The ledger is copied (SQLite's online backup) before the points are read, so every
source it records as indexed has its items in the copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import CollectionExists, CollectionMismatch, CollectionNotFound, ConfigError, StoreError
from omniret.index.archive import (
    LEDGER,
    ArchiveWriter,
    check_archive,
    extract_files,
    extract_member,
    fsync_dir,
    read_points,
)
from omniret.index.collection import BACKENDS, COLLECTION_NAME, MANIFEST, open_store
from omniret.index.protocol import VectorStore

#: points per batch read and written
BATCH = 1000
#: the folder inside a collection where it keeps its own media files (the service's uploads)
FILES_DIR = "files"
#: payload keys that may name a file; values inside the source collection's folder are moved with it
PATH_KEYS = ("image", "video", "path", "source")
MARKER = "transfer.json"

Progress = Callable[[int, int | None], None]
Batches = Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]


def collections_root(root: str | os.PathLike[str] | None) -> Path:
    """The collections folder: the caller's, else ``$OMNIRET_HOME/collections`` (as ``open_collection``)."""
    if root is not None:
        return Path(root).expanduser()
    from omniret.settings import default_home

    return default_home() / "collections"


def _check_name(name: str) -> None:
    import re

    if not re.match(COLLECTION_NAME, name or ""):
        raise ConfigError(f"collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, "
                          "starting with a letter or digit)")


def _manifest(path: Path) -> dict[str, Any] | None:
    f = path / MANIFEST
    if not f.is_file():
        return None
    try:
        return dict(json.loads(f.read_text(encoding="utf-8")))
    except ValueError as e:
        raise CollectionNotFound(f"collection {path.name!r}: unreadable {MANIFEST} ({e})") from e


def _existing(name: str, root: Path) -> tuple[Path, dict[str, Any]]:
    _check_name(name)
    path = root / name
    manifest = _manifest(path)
    if manifest is None:
        raise CollectionNotFound(f"no collection {name!r} in {root}")
    return path, manifest


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON durably: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def backup_sqlite(src: Path, dest: Path) -> bool:
    """A point-in-time copy of a SQLite file by SQLite's online backup API (writers are not held up); False
    when ``src`` does not exist."""
    if not src.is_file():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as s, \
            contextlib.closing(sqlite3.connect(str(dest))) as d:
        s.backup(d)
    return True


def export_points(store: VectorStore, batch_size: int = BATCH, after: str | None = None) -> Batches:
    """A store's points in batches from one point in time (see module docstring), past id ``after``."""
    export = getattr(store, "export_points", None)
    if export is None:
        raise ConfigError(f"{type(store).__name__} cannot export its points (no export_points)")
    batches: Batches = export(batch_size, after)
    return batches


@contextlib.contextmanager
def source_points(path: Path, name: str, manifest: dict[str, Any], *, store: VectorStore | None = None,
                  batch_size: int = BATCH, after: str | None = None) -> Generator[tuple[int, Batches]]:
    """``(count, batches)`` of a collection's points. A FAISS collection is read from its SQLite file
    without opening the store (a second open store would write its own FAISS cache beside a live writer's);
    a Qdrant one through ``store`` when the caller holds it open, else through a client opened here."""
    from omniret.index.faiss_store import FaissStore

    if store is not None:
        yield store.count(), export_points(store, batch_size, after)
    elif manifest.get("backend", "faiss") == "faiss":
        folder = path / "faiss"
        yield FaissStore.stored_count(folder), FaissStore.read_points(folder, batch_size, after)
    else:
        st = open_store(path, name, manifest, manifest.get("url"), {}, create=False)
        try:
            yield st.count(), export_points(st, batch_size, after)
        finally:
            st.close()


def _rewriter(old: Path | str | None, new: Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Payload paths into the old collection folder, pointed at the new one (its media files move with it)."""
    if old is None or Path(old) == new:
        return lambda p: p
    prefix, to = str(old).rstrip("/") + "/", str(new) + "/"

    def rewrite(p: dict[str, Any]) -> dict[str, Any]:
        hit = [k for k in PATH_KEYS if isinstance(p.get(k), str) and p[k].startswith(prefix)]
        if not hit:
            return p
        return {**p, **{k: to + p[k][len(prefix):] for k in hit}}

    return rewrite


def _media_files(folder: Path) -> list[Path]:
    base = folder / FILES_DIR
    return sorted(f for f in base.rglob("*") if f.is_file()) if base.is_dir() else []


# ------------------------------------------------------------------------------------------ reports
@dataclass
class VerifyReport:
    """What ``verify_collections`` compared and every difference it found."""

    source: str
    dest: str
    counts: tuple[int, int]
    sampled: int = 0
    missing: list[str] = field(default_factory=list)
    payload_differs: list[str] = field(default_factory=list)
    vector_differs: list[str] = field(default_factory=list)
    #: mean share of the source's dense top-k ids the destination returns for the same query vector
    dense_agreement: float | None = None
    #: the same for lexical queries (a few words of each sampled item's own text), where both sides have text
    lexical_agreement: float | None = None

    @property
    def ok(self) -> bool:
        return (self.counts[0] == self.counts[1] and not self.missing and not self.payload_differs
                and not self.vector_differs)

    def problems(self) -> list[str]:
        out = []
        if self.counts[0] != self.counts[1]:
            out.append(f"counts differ: {self.source} has {self.counts[0]}, {self.dest} has {self.counts[1]}")
        for what, ids in (("missing", self.missing), ("payload differs", self.payload_differs),
                          ("vector differs", self.vector_differs)):
            if ids:
                out.append(f"{what} for {len(ids)} of {self.sampled} sampled items, e.g. {ids[:3]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": list(self.counts), "ok": self.ok, "problems": self.problems()}


@dataclass
class TransferReport:
    """What a snapshot, restore or copy moved, how fast, and the verification at the end."""

    action: str
    source: str
    dest: str
    points: int = 0
    bytes: int = 0
    files: int = 0
    resumed_after: int = 0
    seconds: float = 0.0
    verify: VerifyReport | None = None
    tuning: dict[str, Any] | None = None

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "verify"}
        d["points_per_second"] = round(self.points_per_second, 1)
        d["verify"] = self.verify.to_dict() if self.verify is not None else None
        return d


# ----------------------------------------------------------------------------------------- snapshot
def snapshot_collection(name: str, out: str | os.PathLike[str] | None = None, *,
                        root: str | os.PathLike[str] | None = None, store: VectorStore | None = None,
                        batch_size: int = BATCH, progress: Progress | None = None) -> TransferReport:
    """Write collection ``name`` to one archive (default ``NAME-<UTC time>.omniret.tar`` here).

    ``store``: the collection's store when the caller already holds it open (the service does: Qdrant local
    mode admits one client per folder); else it is opened here, without loading the model.
    """
    t0 = time.perf_counter()
    base = collections_root(root)
    path, manifest = _existing(name, base)
    final = Path(out) if out is not None else Path(f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
                                                   ".omniret.tar")
    with source_points(path, name, manifest, store=store, batch_size=batch_size) as (total, batches):
        header = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "collection": manifest,
                  "source": {"name": name, "backend": manifest.get("backend", "faiss"), "path": str(path)},
                  "count_at_start": total}
        with ArchiveWriter(final, header) as w:
            scratch = final.with_name(f"{final.name}.ledger-{os.getpid()}")
            try:
                # the ledger first: every source it records as indexed then has its items in the points
                if backup_sqlite(path / "ledger.sqlite", scratch):
                    w.add_file(LEDGER, scratch)
            finally:
                scratch.unlink(missing_ok=True)
            for ids, vectors, payloads in batches:
                w.add_points(ids, vectors, payloads)
                if progress is not None:
                    progress(w.points, total)
            files = _media_files(path)
            for f in files:
                w.add_file(f"files/{f.relative_to(path / FILES_DIR).as_posix()}", f)
            w.commit()
    return TransferReport("snapshot", name, str(final), points=w.points, bytes=final.stat().st_size,
                          files=len(files), seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------- destinations
def dest_manifest(source: dict[str, Any], name: str, *, backend: str | None = None, url: str | None = None,
                  index: str | None = None, shards: int | None = None, replicas: int | None = None
                  ) -> dict[str, Any]:
    """The manifest of a collection made from ``source``'s points: the same model, dim, instruction, funnel
    dim and analyser; the backend, server and index kind the caller chose (default: the source's)."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose 'faiss' or 'qdrant'")
    if url is not None and backend == "faiss":
        raise ConfigError("--qdrant-url is for a Qdrant destination; drop it or use --backend qdrant")
    same = backend is None and url is None
    backend = backend or ("qdrant" if url is not None else str(source.get("backend", "faiss")))
    if same:
        url = source.get("url")
    if backend == "qdrant" and index not in (None, "flat", "qdrant"):
        raise ConfigError(f"--index-kind {index}: a FAISS index kind; Qdrant manages its own HNSW index")
    if (shards or replicas) and (backend != "qdrant" or url is None):
        raise ConfigError("--shards/--replicas are for a Qdrant server or cluster: give --qdrant-url")
    old_index = str(source.get("index", "flat"))
    kind = index if backend == "faiss" and index is not None else (
        "qdrant" if backend == "qdrant" else (old_index if old_index != "qdrant" else "flat"))
    options = dict(source.get("store_options") or {})
    from omniret.index.faiss_store import FaissOptions
    from omniret.index.qdrant_store import QdrantOptions

    known = FaissOptions.__annotations__ if backend == "faiss" else QdrantOptions.__annotations__
    options = {k: v for k, v in options.items() if k in known}
    tuned = source.get("recall_tuning")
    if kind != old_index or backend != source.get("backend", "faiss"):
        # a tuned efSearch / nprobe / pool belongs to the index it was measured on
        for key in ("ef_search", "nprobe", "rescore"):
            options.pop(key, None)
        tuned = None
    if shards:
        options["shard_number"] = shards
    if replicas:
        options["replication_factor"] = replicas
    out = {**source, "name": name, "backend": backend, "index": kind, "url": url if backend == "qdrant" else None,
           "store_options": options, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.pop("recall_tuning", None)
    if tuned is not None:
        out["recall_tuning"] = tuned
    return out


def _check_dest(name: str, base: Path, manifest: dict[str, Any], replace: bool, what: str) -> dict[str, Any] | None:
    """The existing destination's manifest (None when free); refused unless ``replace``."""
    existing = _manifest(base / name)
    if existing is None:
        return None
    other = "--as NEWNAME" if what == "snapshot" else "another destination name"
    if (existing.get("model"), existing.get("dim")) != (manifest.get("model"), manifest.get("dim")) and not replace:
        raise CollectionMismatch(
            f"collection {name!r} exists with model {existing.get('model')!r} dim {existing.get('dim')}, but the "
            f"{what} holds model {manifest.get('model')!r} dim {manifest.get('dim')}; use {other}, or --replace "
            "to overwrite it")
    if not replace:
        raise CollectionExists(f"collection {name!r} exists already; use {other}, or --replace to overwrite it")
    return existing


def _swap_in(work: Path, final: Path, replace: bool, old: dict[str, Any] | None, dest: dict[str, Any]) -> None:
    """Move the finished ``work`` folder to ``final``; an old collection there is removed only after."""
    aside = None
    if final.exists():
        if not replace:
            raise CollectionExists(f"collection {final.name!r} appeared while it was being built; nothing replaced")
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, aside)
    os.replace(work, final)
    with contextlib.suppress(OSError):
        fsync_dir(final.parent)
    if aside is not None:
        if old is not None and old.get("backend") == "qdrant" and old.get("url") and \
                (old.get("url"), old.get("name")) != (dest.get("url"), dest.get("name")):
            from omniret.index.qdrant_store import QdrantStore

            with contextlib.closing(QdrantStore(final.name, url=old["url"], options=old.get("store_options", {}),
                                                create=False)) as gone:
                gone.drop()
        shutil.rmtree(aside, ignore_errors=True)


def _open_dest(work: Path, name: str, manifest: dict[str, Any], *, api_key: str | None, fresh: bool,
               replace: bool) -> VectorStore:
    """The destination store in the hidden build folder (a server collection under its final name)."""
    opts: dict[str, Any] = {"api_key": api_key} if api_key else {}
    url = manifest.get("url")
    if manifest["backend"] == "qdrant" and url and fresh:
        from omniret.index.qdrant_store import QdrantStore

        with contextlib.suppress(StoreError), contextlib.closing(
                QdrantStore(name, url=url, options=opts, create=False)) as there:  # type: ignore[arg-type]
            if not replace:
                raise CollectionExists(f"Qdrant at {url} has a collection {name!r} already; pass --replace to "
                                       "overwrite it")
            there.drop()
    return open_store(work, name, manifest, url, opts, create=True)


def _drop_server_collection(name: str, manifest: dict[str, Any], api_key: str | None) -> None:
    from omniret.index.qdrant_store import QdrantStore

    with contextlib.suppress(Exception), contextlib.closing(
            QdrantStore(name, url=manifest["url"], options={"api_key": api_key} if api_key else {},
                        create=False)) as there:
        there.drop()


def _retune(store: VectorStore, manifest: dict[str, Any], recall: float | None, source: dict[str, Any]
            ) -> dict[str, Any] | None:
    """Re-tune a FAISS destination of another index kind to ``recall`` (else the source's recorded target);
    the result is recorded in the manifest."""
    from omniret.index.faiss_store import FaissStore

    target = recall if recall is not None else (source.get("recall_tuning") or {}).get("target")
    if target is None or not isinstance(store, FaissStore) or manifest.get("index") == "flat" or \
            (recall is None and manifest.get("recall_tuning") is not None):
        return None
    if store.count() < 20:  # tune measures recall@10 on held-out vectors: it needs at least 2 x 10
        return {"target": float(target), "skipped": f"{store.count()} vectors are too few to measure recall on "
                                                    "(20 needed); run `omniret index --recall` once it has grown"}
    res = store.tune(float(target))
    manifest["store_options"] = {**manifest.get("store_options", {}), **res.settings}
    manifest["recall_tuning"] = {**res.to_dict(), "count": store.count()}
    return manifest["recall_tuning"]


# ------------------------------------------------------------------------------------------ restore
def restore_collection(archive: str | os.PathLike[str], *, name: str | None = None,
                       root: str | os.PathLike[str] | None = None, backend: str | None = None,
                       url: str | None = None, api_key: str | None = None, shards: int | None = None,
                       replicas: int | None = None, index: str | None = None, replace: bool = False,
                       verify: bool = True, batch_size: int = BATCH, progress: Progress | None = None
                       ) -> TransferReport:
    """Make a collection from a snapshot archive, in either backend (see module docstring).

    Refused with one line, before anything is written: a truncated or altered archive, a newer format, an
    existing ``name`` (without ``replace``; a different model or dim is named as such). The collection is
    built in a hidden folder and swapped in when complete; a failure removes the folder.
    """
    t0 = time.perf_counter()
    file = Path(archive)
    header = check_archive(file)
    source = dict(header["collection"])
    name = name or str(header["source"]["name"])
    _check_name(name)
    base = collections_root(root)
    manifest = dest_manifest(source, name, backend=backend, url=url, index=index, shards=shards, replicas=replicas)
    old = _check_dest(name, base, manifest, replace, "snapshot")
    final = base / name
    work = base / f".{name}.restore-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = TransferReport("restore", str(file), name, files=0)
    try:
        store = _open_dest(work, name, manifest, api_key=api_key, fresh=True, replace=replace)
        try:
            rewrite = _rewriter(header["source"].get("path"), final)
            total = int(header.get("points", 0))
            for ids, vectors, payloads in read_points(file):
                store.upsert(ids, vectors, [rewrite(p) for p in payloads])
                report.points += len(ids)
                if progress is not None:
                    progress(report.points, total)
            report.tuning = _retune(store, manifest, None, source)
        finally:
            store.close()
        extract_member(file, LEDGER, work / "ledger.sqlite")
        report.files = extract_files(file, work / FILES_DIR)
        _write_json(work / MANIFEST, manifest)
        _swap_in(work, final, replace, old, manifest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if manifest["backend"] == "qdrant" and manifest.get("url") and not final.exists():
            _drop_server_collection(name, manifest, api_key)  # nothing half-restored on the server either
        raise
    report.bytes = file.stat().st_size
    report.seconds = time.perf_counter() - t0
    if verify:
        report.verify = _verify_archive_against(file, header, name, base)
    return report


def _verify_archive_against(file: Path, header: dict[str, Any], name: str, base: Path) -> VerifyReport:
    """The restored collection against the archive: its count, and the first batch's items read back."""
    path, manifest = _existing(name, base)
    store = open_store(path, name, manifest, manifest.get("url"), {}, create=False)
    try:
        rep = VerifyReport(str(file), name, (int(header.get("points", 0)), store.count()))
        rewrite = _rewriter(header["source"].get("path"), path)
        for ids, vectors, payloads in read_points(file):
            _compare(rep, ids, vectors, [rewrite(p) for p in payloads], store)
            break
        return rep
    finally:
        store.close()


def _compare(rep: VerifyReport, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]],
             other: VectorStore, k: int = 10, lexical: VectorStore | None = None) -> None:
    """Fetch and search ``ids`` in ``other``; record what differs (and the top-k agreement with ``lexical``
    (the source store), when given)."""
    got = other.get(ids)
    rep.sampled += len(ids)
    for i, vec, pay, g in zip(ids, vectors, payloads, got, strict=True):
        if g is None:
            rep.missing.append(i)
            continue
        if g["payload"] != pay:
            rep.payload_differs.append(i)
        if not np.allclose(g["vector"], vec, atol=1e-5):
            rep.vector_differs.append(i)


# ---------------------------------------------------------------------------------------- copy
def copy_collection(src: str, dst: str, *, root: str | os.PathLike[str] | None = None,
                    backend: str | None = None, url: str | None = None, api_key: str | None = None,
                    shards: int | None = None, replicas: int | None = None, index: str | None = None,
                    recall: float | None = None, replace: bool = False, verify: bool = True,
                    batch_size: int = BATCH, progress: Progress | None = None) -> TransferReport:
    """Copy collection ``src`` to a new collection ``dst`` without re-embedding (see module docstring).

    Resumable: the destination is built in ``.DST.partial`` with a marker holding the last id written;
    running the same copy again after a kill continues past it (a batch written but not yet marked is
    written again by id, so nothing appears twice). ``index``: another FAISS index kind for the destination,
    re-tuned to ``recall`` (default: the source's recorded target).
    """
    t0 = time.perf_counter()
    base = collections_root(root)
    src_path, src_manifest = _existing(src, base)
    _check_name(dst)
    if dst == src:
        raise ConfigError(f"copy {src} {dst}: source and destination are the same collection")
    final, work = base / dst, base / f".{dst}.partial"
    marker_file = work / MARKER
    marker = json.loads(marker_file.read_text()) if marker_file.is_file() else None
    fresh = marker is None or marker.get("source") != src
    if fresh:
        manifest = dest_manifest(src_manifest, dst, backend=backend, url=url, index=index, shards=shards,
                                 replicas=replicas)
        marker = {"source": src, "manifest": manifest, "after": None, "done": 0}
    else:
        assert marker is not None
        manifest = marker["manifest"]
    old = _check_dest(dst, base, manifest, replace, "copy")
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    report = TransferReport("copy", src, dst, resumed_after=int(marker["done"]))
    with source_points(src_path, src, src_manifest, batch_size=batch_size, after=marker["after"]) as (total, batches):
        dest = _open_dest(work, dst, manifest, api_key=api_key, fresh=fresh, replace=replace)
        try:
            if fresh:
                _write_json(marker_file, marker)
            # the ledger before the points, as in a snapshot
            backup_sqlite(src_path / "ledger.sqlite", work / "ledger.sqlite")
            rewrite = _rewriter(src_path, final)
            done = int(marker["done"])
            for ids, vectors, payloads in batches:
                dest.upsert(ids, vectors, [rewrite(p) for p in payloads])
                done += len(ids)
                report.points += len(ids)
                marker.update(after=ids[-1], done=done)
                _write_json(marker_file, marker)
                if progress is not None:
                    progress(done, total)
            report.tuning = _retune(dest, manifest, recall, src_manifest)
        finally:
            dest.close()
        files = _media_files(src_path)
        for f in files:
            target = work / FILES_DIR / f.relative_to(src_path / FILES_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        report.files = len(files)
        marker_file.unlink()
        _write_json(work / MANIFEST, manifest)
        _swap_in(work, final, replace, old, manifest)
    report.seconds = time.perf_counter() - t0
    if verify:
        report.verify = verify_collections(src, dst, root=base)
    return report


# -------------------------------------------------------------------------------------- verify
def verify_collections(a: str, b: str, *, root: str | os.PathLike[str] | None = None, sample: int = 100,
                       k: int = 10, seed: int = 0) -> VerifyReport:
    """Compare collection ``b`` with ``a``: counts, then ``sample`` of ``a``'s items fetched from ``b``
    (payload and vector) and searched on both sides, dense (the item's vector) and lexical (the first words
    of its text): the mean share of ``a``'s top-``k`` ids that ``b`` also returns."""
    base = collections_root(root)
    pa, ma = _existing(a, base)
    pb, mb = _existing(b, base)
    sa = open_store(pa, a, ma, ma.get("url"), {}, create=False)
    try:
        sb = open_store(pb, b, mb, mb.get("url"), {}, create=False)
        try:
            rep = VerifyReport(a, b, (sa.count(), sb.count()))
            ids_of = getattr(sa, "ids", None)
            all_ids: list[str] = list(ids_of()) if ids_of is not None else []
            rng = np.random.default_rng(seed)
            picked = sorted(rng.choice(all_ids, min(sample, len(all_ids)), replace=False).tolist()) if all_ids else []
            recs = [r for r in sa.get(picked) if r is not None]
            if not recs:
                return rep
            rewrite = _rewriter(pa, pb)
            ids = [r["id"] for r in recs]
            vectors = np.stack([r["vector"] for r in recs]).astype(np.float32)
            _compare(rep, ids, vectors, [rewrite(r["payload"]) for r in recs], sb)
            hits_a, hits_b = sa.search(vectors, k), sb.search(vectors, k)
            rep.dense_agreement = _agreement(hits_a, hits_b)
            from omniret.index.lexical import payload_text

            texts = [" ".join(payload_text(r["payload"]).split()[:8]) for r in recs]
            texts = [t for t in texts if t]
            lex_a, lex_b = getattr(sa, "lexical_search", None), getattr(sb, "lexical_search", None)
            if texts and lex_a is not None and lex_b is not None:
                rep.lexical_agreement = _agreement(lex_a(texts, k), lex_b(texts, k))
            return rep
        finally:
            sb.close()
    finally:
        sa.close()


def _agreement(a: list[list[Any]], b: list[list[Any]]) -> float:
    shares = [len({h.id for h in x} & {h.id for h in y}) / len(x) for x, y in zip(a, b, strict=True) if x]
    return round(float(np.mean(shares)), 4) if shares else 1.0
