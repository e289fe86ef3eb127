"""The ingestion ledger: which source files a collection holds, from which folder, with which content and ids.

One SQLite table (WAL, ``synchronous=FULL``) beside the collection, ``ledger.sqlite``. A row is committed
only after the file's items were upserted (``omniret.index.commit``), so the ledger is the resume point of
ingestion: a re-run skips every file whose sha256 it holds, and ``prune`` removes the items of the files
recorded under a folder that are no longer on disk.

Each row keeps the folder the source was indexed from (``root``) and the file's own path. Ray runs made
before one commit path stored every row with root and path ``.``, which ``prune`` could never match;
``Ledger.repair_roots`` restores them from the items' payloads, which always carried the real path.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omniret.index.protocol import VectorStore
from omniret.types import JSON

#: the root (and path) an old Ray run wrote for every row: ``str(Path(""))``
LOST_ROOT = "."


@dataclass
class Source:
    """One file to ingest: its key (path relative to the indexed folder, ``/``-separated), the file, and
    the folder it was found under. A JSONL manifest of items carries them in ``manifest_items``."""

    key: str
    path: Path
    root: Path
    manifest_items: list[dict[str, JSON]] | None = None


@dataclass(frozen=True)
class LedgerRow:
    """What the ledger records of one indexed source: its content hash and the ids its items got."""

    source: Source
    sha256: str
    ids: list[str]


def sha256_of(path: Path) -> str:
    """The file's content hash, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def changed(source: Source, known: dict[str, tuple[str, list[str]]]) -> tuple[str, list[str]] | None:
    """``(sha256, the ids it had)`` when ``source`` must be (re-)indexed, None when the ledger snapshot
    ``known`` holds it with this very content. Raises ``OSError`` when the file cannot be read."""
    sha = sha256_of(source.path)
    prev = known.get(source.key)
    if prev is not None and prev[0] == sha:
        return None
    return sha, prev[1] if prev is not None else []


class Ledger:
    """Per-source root, path, sha256 and item ids, in SQLite (WAL); the resume point of ingestion."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS sources (source TEXT PRIMARY KEY, root TEXT NOT NULL, "
                         "path TEXT NOT NULL, sha256 TEXT NOT NULL, ids TEXT NOT NULL, indexed_at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS sources_sha256 ON sources (sha256)")

    def snapshot(self) -> dict[str, tuple[str, list[str]]]:
        """Every source's ``(sha256, ids)``, read once: a reader thread consults it without touching the
        connection the writer commits through."""
        rows: Iterable[tuple[str, str, str]] = self._db.execute("SELECT source, sha256, ids FROM sources")
        return {k: (sha, _ids(ids)) for k, sha, ids in rows}

    def get(self, key: str) -> tuple[str, list[str]] | None:
        """The source's ``(sha256, ids)``, or None when it was never indexed."""
        row: tuple[str, str] | None = self._db.execute("SELECT sha256, ids FROM sources WHERE source = ?",
                                                        (key,)).fetchone()
        return (row[0], _ids(row[1])) if row else None

    def commit(self, rows: Sequence[LedgerRow]) -> None:
        """Record these sources as indexed, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?)",
                             [(r.source.key, str(r.source.root), str(r.source.path), r.sha256, json.dumps(r.ids),
                               time.time()) for r in rows])
        self._db.execute("COMMIT")

    def source_with(self, sha256: str) -> str | None:
        """A source already indexed with exactly this content (sha256), if any: uploads use it to dedupe."""
        row: tuple[str] | None = self._db.execute(
            "SELECT source FROM sources WHERE sha256 = ? ORDER BY source LIMIT 1", (sha256,)).fetchone()
        return str(row[0]) if row else None

    def under(self, root: Path) -> dict[str, list[str]]:
        """Sources indexed from the folder ``root``, with their ids."""
        rows: Iterable[tuple[str, str]] = self._db.execute("SELECT source, ids FROM sources WHERE root = ?",
                                                           (str(root),))
        return {k: _ids(ids) for k, ids in rows}

    def forget(self, keys: Iterable[str]) -> None:
        """Drop these sources' rows (their items are deleted by the caller first)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM sources WHERE source = ?", [(k,) for k in keys])
        self._db.execute("COMMIT")

    def repair_roots(self, store: VectorStore) -> int:
        """Give rows stored under the lost root ``.`` (Ray runs before one commit path) their real root and
        path back, from the payload ``path`` (the source file) of their first item in ``store``; returns how
        many were repaired. A source's root is that path less its key (``/docs`` from ``/docs/a/b.txt`` and
        ``a/b.txt``). A row whose items are gone, or whose path does not end with its key, is left as it
        was: nothing is guessed.
        """
        lost: list[tuple[str, str]] = list(self._db.execute(
            "SELECT source, ids FROM sources WHERE root IN (?, '')", (LOST_ROOT,)))
        fixed: list[tuple[str, str, str]] = []
        for key, ids_json in lost:
            ids = _ids(ids_json)
            rec = store.get(ids[:1])[0] if ids else None
            path = rec["payload"].get("path") if rec is not None else None
            if not isinstance(path, str):
                continue
            file = Path(path)
            parts = Path(key).parts
            if len(file.parts) <= len(parts) or file.parts[-len(parts):] != parts:
                continue
            fixed.append((str(Path(*file.parts[:-len(parts)])), str(file), key))
        if fixed:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE sources SET root = ?, path = ? WHERE source = ?", fixed)
            self._db.execute("COMMIT")
        return len(fixed)

    def count(self) -> int:
        """Sources recorded."""
        row: tuple[int] = self._db.execute("SELECT COUNT(*) FROM sources").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()


def _ids(text: str) -> list[str]:
    """The ids column (a JSON list of strings)."""
    return [str(i) for i in json.loads(text)]
