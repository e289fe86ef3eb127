"""Snapshots, restores and copies of collections: one streaming layer, no vector recomputed.

Every move reads a collection's points in batches (ids, the full vectors, payloads; ``omniret.index.points``,
each from one point in time) and writes them through ``VectorStore.upsert`` into a store of either backend,
which rebuilds what derives from them: the funnel prefix (``funnel_dim``) and the lexical index (the payload
text under the collection's recorded analyser), exactly as on the first ingestion.

- ``snapshot_collection``: collection -> archive (``omniret.index.archive``): the ledger, the points, the
  collection's own media files, a checksummed table of contents; renamed into place only when complete.
- ``restore_collection``: archive -> collection, FAISS or Qdrant whichever it came from; the archive is
  checked whole first, the collection built in a hidden folder and swapped in at the end.
- ``copy_collection``: collection -> collection, without an archive; resumable (a progress marker in the
  hidden build folder, written after each acknowledged batch; upserts by id make a repeated batch
  harmless), optionally to another FAISS index kind, re-tuned to the recorded recall target.
- ``verify_collections`` (``omniret.index.verify``): counts, and a sample of items fetched and searched
  (dense and lexical) on both sides; every difference is listed.

A destination is built as ``<root>/.<name>.<what>/<name>/`` (a folder already named as the collection,
since the store inside is named after its folder) and renamed to ``<root>/<name>`` when complete. The ledger
is copied (SQLite's online backup) before the points are read, so every source it records as indexed has
its items in the copy. A live Qdrant server collection is exported by scrolling, which is not isolated
from concurrent writers: ``QdrantStore.create_server_snapshot`` uses the server's own snapshot API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omniret.errors import CollectionExists, CollectionMismatch, ConfigError, StoreError
from omniret.index.archive import (
    LEDGER,
    ArchiveError,
    ArchiveWriter,
    check_archive,
    extract_files,
    extract_member,
    fsync_dir,
    read_points,
)
from omniret.index.catalog import existing_collection, open_store
from omniret.index.manifest import BACKENDS, Backend, Manifest, read_manifest, write_manifest
from omniret.index.names import check_collection_name, collections_root
from omniret.index.points import (
    BATCH,
    FILES_DIR,
    LEDGER_FILE,
    backup_sqlite,
    media_files,
    payload_rewriter,
    source_points,
)
from omniret.index.protocol import TunableStore, VectorStore
from omniret.index.verify import VerifyReport, verify_archive, verify_collections

if TYPE_CHECKING:
    from omniret.index.qdrant_store import QdrantStore

__all__ = ["TransferReport", "VerifyReport", "copy_collection", "dest_manifest", "restore_collection",
           "snapshot_collection", "verify_collections"]

#: a copy's progress marker, in its hidden build folder
MARKER = "transfer.json"

Progress = Callable[[int, int | None], None]


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write JSON durably: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    path, manifest = existing_collection(name, root, say_where=True)
    final = Path(out) if out is not None else Path(f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
                                                   ".omniret.tar")
    with source_points(path, manifest, store=store, batch_size=batch_size) as (total, batches):
        # the archive keeps the manifest's JSON object as collection.json holds it
        header = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "collection": manifest.to_json(),
                  "source": {"name": name, "backend": manifest.backend, "path": str(path)},
                  "count_at_start": total}
        with ArchiveWriter(final, header) as w:
            scratch = final.with_name(f"{final.name}.ledger-{os.getpid()}")
            try:
                # the ledger first: every source it records as indexed then has its items in the points
                if backup_sqlite(path / LEDGER_FILE, scratch):
                    w.add_file(LEDGER, scratch)
            finally:
                scratch.unlink(missing_ok=True)
            for ids, vectors, payloads in batches:
                w.add_points(ids, vectors, payloads)
                if progress is not None:
                    progress(w.points, total)
            files = media_files(path)
            for f in files:
                w.add_file(f"{FILES_DIR}/{f.relative_to(path / FILES_DIR).as_posix()}", f)
            w.commit()
    return TransferReport("snapshot", name, str(final), points=w.points, bytes=final.stat().st_size,
                          files=len(files), seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------- destinations
def dest_manifest(source: Manifest, name: str, *, backend: str | None = None, url: str | None = None,
                  index: str | None = None, shards: int | None = None, replicas: int | None = None) -> Manifest:
    """The manifest of a collection made from ``source``'s points: the same model, dim, instruction, funnel
    dim and analyser; the backend, server and index kind the caller chose (default: the source's)."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose 'faiss' or 'qdrant'")
    if url is not None and backend == "faiss":
        raise ConfigError("--qdrant-url is for a Qdrant destination; drop it or use --backend qdrant")
    same = backend is None and url is None
    chosen: Backend = "qdrant" if backend == "qdrant" or (backend is None and url is not None) else (
        source.backend if backend is None else "faiss")
    if same:
        url = source.url
    if chosen == "qdrant" and index not in (None, "flat", "qdrant"):
        raise ConfigError(f"--index-kind {index}: a FAISS index kind; Qdrant manages its own HNSW index")
    if (shards or replicas) and (chosen != "qdrant" or url is None):
        raise ConfigError("--shards/--replicas are for a Qdrant server or cluster: give --qdrant-url")
    old_index = source.index
    kind = index if chosen == "faiss" and index is not None else (
        "qdrant" if chosen == "qdrant" else (old_index if old_index != "qdrant" else "flat"))
    from omniret.index.faiss import FaissOptions
    from omniret.index.qdrant_store import QdrantOptions

    known = FaissOptions.__annotations__ if chosen == "faiss" else QdrantOptions.__annotations__
    options = {k: v for k, v in source.store_options.items() if k in known}
    tuned = source.recall_tuning
    if kind != old_index or chosen != source.backend:
        # a tuned efSearch / nprobe / pool belongs to the index it was measured on
        for key in ("ef_search", "nprobe", "rescore"):
            options.pop(key, None)
        tuned = None
    if shards:
        options["shard_number"] = shards
    if replicas:
        options["replication_factor"] = replicas
    return source.with_changes(name=name, backend=chosen, index=kind, url=url if chosen == "qdrant" else None,
                               store_options=options, recall_tuning=tuned,
                               created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _check_dest(name: str, base: Path, manifest: Manifest, replace: bool, what: str) -> Manifest | None:
    """The existing destination's manifest (None when free); refused unless ``replace``."""
    existing = read_manifest(base / name)
    if existing is None:
        return None
    other = "--as NEWNAME" if what == "snapshot" else "another destination name"
    if (existing.model, existing.dim) != (manifest.model, manifest.dim) and not replace:
        raise CollectionMismatch(
            f"collection {name!r} exists with model {existing.model!r} dim {existing.dim}, but the "
            f"{what} holds model {manifest.model!r} dim {manifest.dim}; use {other}, or --replace "
            "to overwrite it")
    if not replace:
        raise CollectionExists(f"collection {name!r} exists already; use {other}, or --replace to overwrite it")
    return existing


def _server_store(name: str, url: str, options: Mapping[str, Any]) -> QdrantStore:
    """An existing Qdrant server collection (to drop it)."""
    from omniret.index.qdrant_store import QdrantStore, check_options

    return QdrantStore(name, url=url, options=check_options(options), create=False)


def _swap_in(build: Path, final: Path, replace: bool, old: Manifest | None, dest: Manifest) -> None:
    """Move the finished ``build`` folder to ``final``; an old collection there is removed only after."""
    aside = None
    if final.exists():
        if not replace:
            raise CollectionExists(f"collection {final.name!r} appeared while it was being built; nothing replaced")
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, aside)
    os.replace(build, final)
    with contextlib.suppress(OSError):
        fsync_dir(final.parent)
    if aside is not None:
        if old is not None and old.backend == "qdrant" and old.url and (old.url, old.name) != (dest.url, dest.name):
            with contextlib.closing(_server_store(final.name, old.url, old.store_options)) as gone:
                gone.drop()
        shutil.rmtree(aside, ignore_errors=True)


def _open_dest(build: Path, manifest: Manifest, *, api_key: str | None, fresh: bool, replace: bool) -> VectorStore:
    """The destination store in the build folder (a server collection under its final name, the folder's)."""
    opts: dict[str, Any] = {"api_key": api_key} if api_key and manifest.backend == "qdrant" else {}
    if manifest.backend == "qdrant" and manifest.url and fresh:
        with contextlib.suppress(StoreError), contextlib.closing(
                _server_store(build.name, manifest.url, opts)) as there:
            if not replace:
                raise CollectionExists(f"Qdrant at {manifest.url} has a collection {build.name!r} already; pass "
                                       "--replace to overwrite it")
            there.drop()
    return open_store(build, manifest, options=opts, create=True)


def _drop_server_collection(manifest: Manifest, api_key: str | None) -> None:
    if manifest.url is None:
        return
    with contextlib.suppress(Exception), contextlib.closing(
            _server_store(manifest.name, manifest.url, {"api_key": api_key} if api_key else {})) as there:
        there.drop()


def _retune(store: VectorStore, manifest: Manifest, recall: float | None, source: Manifest
            ) -> tuple[Manifest, dict[str, Any] | None]:
    """Re-tune a ``TunableStore`` destination of another index kind to ``recall`` (else the source's recorded
    target); the manifest with the result recorded, and the result."""
    recorded = (source.recall_tuning or {}).get("target")
    target = recall if recall is not None else (float(recorded) if isinstance(recorded, (int, float)) else None)
    if target is None or not isinstance(store, TunableStore) or manifest.index == "flat" or \
            (recall is None and manifest.recall_tuning is not None):
        return manifest, None
    n = store.count()
    if n < 20:  # tune measures recall@10 on held-out vectors: it needs at least 2 x 10
        return manifest, {"target": float(target), "skipped": f"{n} vectors are too few to measure recall on "
                                                              "(20 needed); run `omniret index --recall` once it "
                                                              "has grown"}
    res = store.tune(float(target))
    tuning = {**res.to_dict(), "count": n}
    return manifest.with_changes(store_options={**manifest.store_options, **res.settings},
                                 recall_tuning=tuning), tuning


# ------------------------------------------------------------------------------------------ restore
def _archived_manifest(file: Path, header: Mapping[str, Any]) -> Manifest:
    data = header.get("collection")
    if not isinstance(data, dict):
        raise ArchiveError(f"{file}: the snapshot header holds no collection manifest")
    return Manifest.from_json(cast("dict[str, Any]", data), where=f"snapshot {file}")


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
    source = _archived_manifest(file, header)
    name = check_collection_name(name or str(header["source"]["name"]))
    base = collections_root(root)
    manifest = dest_manifest(source, name, backend=backend, url=url, index=index, shards=shards, replicas=replicas)
    old = _check_dest(name, base, manifest, replace, "snapshot")
    final = base / name
    work = base / f".{name}.restore-{os.getpid()}"
    build = work / name
    shutil.rmtree(work, ignore_errors=True)
    build.mkdir(parents=True)
    report = TransferReport("restore", str(file), name, files=0)
    try:
        store = _open_dest(build, manifest, api_key=api_key, fresh=True, replace=replace)
        try:
            rewrite = payload_rewriter(header["source"].get("path"), final)
            total = int(header.get("points", 0))
            for ids, vectors, payloads in read_points(file):
                store.upsert(ids, vectors, [rewrite(p) for p in payloads])
                report.points += len(ids)
                if progress is not None:
                    progress(report.points, total)
            manifest, report.tuning = _retune(store, manifest, None, source)
        finally:
            store.close()
        extract_member(file, LEDGER, build / LEDGER_FILE)
        report.files = extract_files(file, build / FILES_DIR)
        write_manifest(build, manifest)
        _swap_in(build, final, replace, old, manifest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if manifest.backend == "qdrant" and manifest.url and not final.exists():
            _drop_server_collection(manifest, api_key)  # nothing half-restored on the server either
        raise
    shutil.rmtree(work, ignore_errors=True)
    report.bytes = file.stat().st_size
    report.seconds = time.perf_counter() - t0
    if verify:
        report.verify = verify_archive(file, header, name, base)
    return report


# ---------------------------------------------------------------------------------------- copy
def copy_collection(src: str, dst: str, *, root: str | os.PathLike[str] | None = None,
                    backend: str | None = None, url: str | None = None, api_key: str | None = None,
                    shards: int | None = None, replicas: int | None = None, index: str | None = None,
                    recall: float | None = None, replace: bool = False, verify: bool = True,
                    batch_size: int = BATCH, progress: Progress | None = None) -> TransferReport:
    """Copy collection ``src`` to a new collection ``dst`` without re-embedding (see module docstring).

    Resumable: the destination is built in ``.DST.partial/DST`` with a marker ``.DST.partial/transfer.json``
    holding the last id written; running the same copy again after a kill continues past it (a batch written
    but not yet marked is written again by id, so nothing appears twice). ``index``: another FAISS index kind
    for the destination, re-tuned to ``recall`` (default: the source's recorded target).
    """
    t0 = time.perf_counter()
    base = collections_root(root)
    src_path, src_manifest = existing_collection(src, base, say_where=True)
    check_collection_name(dst)
    if dst == src:
        raise ConfigError(f"copy {src} {dst}: source and destination are the same collection")
    final, work = base / dst, base / f".{dst}.partial"
    build, marker_file = work / dst, work / MARKER
    marker: dict[str, Any] | None = json.loads(marker_file.read_text()) if marker_file.is_file() else None
    if marker is None or marker.get("source") != src or not build.is_dir():
        fresh = True
        manifest = dest_manifest(src_manifest, dst, backend=backend, url=url, index=index, shards=shards,
                                 replicas=replicas)
        marker = {"source": src, "manifest": manifest.to_json(), "after": None, "done": 0}
    else:
        fresh = False
        manifest = Manifest.from_json(marker["manifest"], where=f"copy marker {marker_file}")
    old = _check_dest(dst, base, manifest, replace, "copy")
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        build.mkdir(parents=True)
    report = TransferReport("copy", src, dst, resumed_after=int(marker["done"]))
    with source_points(src_path, src_manifest, batch_size=batch_size, after=marker["after"]) as (total, batches):
        dest = _open_dest(build, manifest, api_key=api_key, fresh=fresh, replace=replace)
        try:
            if fresh:
                _write_json(marker_file, marker)
            # the ledger before the points, as in a snapshot
            backup_sqlite(src_path / LEDGER_FILE, build / LEDGER_FILE)
            rewrite = payload_rewriter(src_path, final)
            done = int(marker["done"])
            for ids, vectors, payloads in batches:
                dest.upsert(ids, vectors, [rewrite(p) for p in payloads])
                done += len(ids)
                report.points += len(ids)
                marker.update(after=ids[-1], done=done)
                _write_json(marker_file, marker)
                if progress is not None:
                    progress(done, total)
            manifest, report.tuning = _retune(dest, manifest, recall, src_manifest)
        finally:
            dest.close()
        files = media_files(src_path)
        for f in files:
            target = build / FILES_DIR / f.relative_to(src_path / FILES_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        report.files = len(files)
        marker_file.unlink()
        write_manifest(build, manifest)
        _swap_in(build, final, replace, old, manifest)
        shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    if verify:
        report.verify = verify_collections(src, dst, root=base)
    return report
