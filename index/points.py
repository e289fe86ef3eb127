"""A collection's points streamed out, and what moves with them: for snapshots, copies and verification.

``source_points`` reads a collection's points in batches (ids, the full vectors, payloads) from one point
in time: a FAISS collection straight from its SQLite file inside one read transaction (WAL: writers never
wait, the reader sees the database as of its first read) without opening the store, a Qdrant one through
``PointExport.export_points`` (local mode holds the store's lock for the export; a server collection is
scrolled, which is not isolated from concurrent writers). ``payload_rewriter`` points payload paths into
the old collection folder at the new one, since the collection's own media files move with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from omniret.errors import ConfigError
from omniret.index.manifest import Manifest
from omniret.index.protocol import Payload, PointBatch, PointExport, VectorStore
from omniret.types import JSON

#: points per batch read and written
BATCH = 1000
#: the folder inside a collection where it keeps its own media files (the service's uploads)
FILES_DIR = "files"
#: payload keys that may name a file; values inside the source collection's folder are moved with it
PATH_KEYS = ("image", "video", "path", "source")
#: the ingestion ledger's file in a collection folder
LEDGER_FILE = "ledger.sqlite"

Batches = Iterator[PointBatch]


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
    """A store's points in batches (``PointExport``), past id ``after``; ``ConfigError`` for a store that
    cannot export them."""
    if not isinstance(store, PointExport):
        raise ConfigError(f"{type(store).__name__} cannot export its points (it is no PointExport store)")
    return store.export_points(batch_size, after)


@contextlib.contextmanager
def source_points(path: Path, manifest: Manifest, *, store: VectorStore | None = None, batch_size: int = BATCH,
                  after: str | None = None) -> Generator[tuple[int, Batches]]:
    """``(count, batches)`` of the points of the collection in folder ``path``.

    A FAISS collection is read from its SQLite file without opening the store (an open store would write
    its FAISS cache on close, beside a live writer's); a Qdrant one through ``store`` when the caller holds
    it open (local mode admits one client per folder), else through a client opened here.
    """
    if store is not None:
        yield store.count(), export_points(store, batch_size, after)
    elif manifest.backend == "faiss":
        from omniret.index.faiss import FaissStore

        folder = path / "faiss"
        yield FaissStore.stored_count(folder), FaissStore.read_points(folder, batch_size, after)
    else:
        from omniret.index.catalog import open_store

        opened = open_store(path, manifest, create=False)
        try:
            yield opened.count(), export_points(opened, batch_size, after)
        finally:
            opened.close()


def payload_rewriter(old: Path | str | None, new: Path) -> Callable[[Payload], Payload]:
    """Payload paths into the old collection folder, pointed at the new one (its media files move with it)."""
    if old is None or Path(old) == new:
        return lambda p: p
    prefix, to = str(old).rstrip("/") + "/", str(new) + "/"

    def rewrite(p: Payload) -> Payload:
        moved: dict[str, JSON] = {}
        for k in PATH_KEYS:
            v = p.get(k)
            if isinstance(v, str) and v.startswith(prefix):
                moved[k] = to + v[len(prefix):]
        return {**p, **moved} if moved else p

    return rewrite


def media_files(folder: Path) -> list[Path]:
    """The media files a collection keeps in its own folder (``files/``), sorted."""
    base = folder / FILES_DIR
    return sorted(f for f in base.rglob("*") if f.is_file()) if base.is_dir() else []

