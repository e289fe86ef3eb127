"""The durable half of a FAISS store: items, their vectors and the generation counter, in SQLite (WAL).

SQLite is the source of truth. Each item is a row ``(fid, id, vector, payload)``; ``fid`` is an
``AUTOINCREMENT`` row id, never reused, so a FAISS entry left behind by a crash can never alias a new
item. Every write is one ``BEGIN IMMEDIATE`` transaction that also bumps ``meta.generation``; the FAISS
files record the generation they reflect, which is how a reopened store knows they are behind.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from omniret.errors import StoreError
from omniret.index.protocol import Payload, StoredItem
from omniret.types import Hit

#: fids (SQLite row ids) and the float32 vector rows that go with them
Fids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
#: ids per ``IN (...)`` clause (SQLite's default bound-parameter limit is 999)
SQL_CHUNK = 900


def _marks(n: int) -> str:
    return ",".join("?" * n)


class ItemTable:
    """The ``items`` and ``meta`` tables of ``store.sqlite`` (and the connection the lexical table shares)."""

    def __init__(self, db_path: Path, dim: int | None = None) -> None:
        self.path = db_path
        #: vector width; set by the store once it is known (from ``meta`` or the creating call)
        self.dim = dim or 0
        #: the generation this process's FAISS caches are known to reflect, which is what their files are
        #: stamped with: read before they load, then advanced by this connection's own writes only while no
        #: other connection (a second store on the folder, another process) wrote in between. A file stamped
        #: older than SQLite is caught up on the next open; one stamped newer than its contents would be trusted
        self.reflected = 0
        try:
            self.db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("CREATE TABLE IF NOT EXISTS items (fid INTEGER PRIMARY KEY AUTOINCREMENT, "
                            "id TEXT NOT NULL UNIQUE, vector BLOB NOT NULL, payload TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {db_path}: {e}") from e

    # -- meta and generation -----------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.db.execute("SELECT key, value FROM meta").fetchall()}

    def set_meta(self, kv: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(kv.items()))
        self.db.execute("COMMIT")

    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def write(self, what: str) -> Generator[None, None, None]:
        """One durable write: BEGIN IMMEDIATE, the caller's statements, a new generation, COMMIT; any
        SQLite failure rolls back and becomes a ``StoreError`` naming the operation."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            before = self.generation()
            yield
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self.rollback()
            raise StoreError(f"{what} failed: {e}") from e
        if before == self.reflected:
            self.reflected = before + 1

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    # -- rows (inside ``write``) -------------------------------------------------------------------
    def remove(self, ids: Sequence[str]) -> list[int]:
        """Delete the rows of ``ids`` that exist; their fids (for the caches and the lexical table)."""
        old = self.fids_of(ids)
        self.db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in old])
        return list(old.values())

    def insert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> list[int]:
        """Insert new rows (the ids must be absent); their fresh fids, in input order."""
        out: list[int] = []
        for i, v, p in zip(ids, vectors, payloads, strict=True):
            cur = self.db.execute("INSERT INTO items (id, vector, payload) VALUES (?, ?, ?)",
                                  (i, v.tobytes(), json.dumps(p, ensure_ascii=False)))
            out.append(int(cur.lastrowid or 0))
        return out

    # -- reads -------------------------------------------------------------------------------------
    def fids_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            part = list(ids[s:s + SQL_CHUNK])
            for id_, fid in self.db.execute(f"SELECT id, fid FROM items WHERE id IN ({_marks(len(part))})", part):
                out[str(id_)] = int(fid)
        return out

    def all_fids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.db.execute("SELECT fid FROM items")), dtype=np.int64)

    def fids_where(self, where: str, params: Sequence[object]) -> np.ndarray:
        """The fids whose payload passes an SQL condition (from ``omniret.index.filters.to_sql``)."""
        return np.fromiter((r[0] for r in self.db.execute(f"SELECT fid FROM items WHERE {where}", list(params))),
                           dtype=np.int64)

    def vectors(self, fids: Iterable[int] | None = None) -> tuple[Fids, Vectors]:
        """``(fids, vectors)``: all rows (by fid), or the given fids that exist."""
        rows: list[tuple[int, bytes]] = []
        if fids is None:
            rows = self.db.execute("SELECT fid, vector FROM items ORDER BY fid").fetchall()
        else:
            fl = [int(f) for f in fids]
            for s in range(0, len(fl), SQL_CHUNK):
                part = fl[s:s + SQL_CHUNK]
                rows += self.db.execute(f"SELECT fid, vector FROM items WHERE fid IN ({_marks(len(part))})",
                                        part).fetchall()
        return self._matrix(rows)

    def chunks(self, size: int = 20_000) -> Iterator[tuple[Fids, Vectors]]:
        """Every stored ``(fids, vectors)``, ``size`` rows at a time (a scan that never holds them all)."""
        last = -1
        while True:
            rows: list[tuple[int, bytes]] = self.db.execute(
                "SELECT fid, vector FROM items WHERE fid > ? ORDER BY fid LIMIT ?", (last, size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield self._matrix(rows)

    def _matrix(self, rows: Sequence[tuple[int, bytes]]) -> tuple[Fids, Vectors]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        flat: Vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return ids, np.reshape(flat, (len(rows), self.dim))

    def hits(self, scores: np.ndarray, fids: np.ndarray, k: int, skip: set[int] | frozenset[int] = frozenset()
             ) -> list[list[Hit]]:
        """Per query row, the first ``k`` candidates that still exist (and are not in ``skip``), as ``Hit``s."""
        wanted = sorted({int(f) for f in fids.ravel() if f >= 0 and int(f) not in skip})
        rows: dict[int, tuple[str, str]] = {}
        for s in range(0, len(wanted), SQL_CHUNK):
            part = wanted[s:s + SQL_CHUNK]
            for fid, id_, payload in self.db.execute(
                    f"SELECT fid, id, payload FROM items WHERE fid IN ({_marks(len(part))})", part):
                rows[int(fid)] = (str(id_), str(payload))
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

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        """Per id: ``{"id", "payload", "vector"}`` or ``None``."""
        found: dict[str, StoredItem] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            part = list(ids[s:s + SQL_CHUNK])
            for id_, vec, payload in self.db.execute(
                    f"SELECT id, vector, payload FROM items WHERE id IN ({_marks(len(part))})", part):
                vector: Vectors = np.frombuffer(vec, dtype=np.float32)
                found[str(id_)] = {"id": id_, "payload": json.loads(payload), "vector": np.array(vector)}
        return [found.get(i) for i in ids]

    def ids(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT id FROM items ORDER BY fid")]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def has_items(self) -> bool:
        return self.db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None

    def close(self) -> None:
        self.db.close()


def read_points(path: str | Path, batch_size: int = 1000, after: str | None = None
                ) -> Iterator[tuple[list[str], Vectors, list[Payload]]]:
    """The items of the store in folder ``path`` as ``(ids, vectors, payloads)`` batches in id order, read
    without opening the store (no FAISS index is loaded or written, so it is safe beside a live writer in
    this or another process).

    The rows come through a read-only SQLite connection inside one read transaction: WAL gives it the
    database as of its first read, so concurrent upserts and deletes neither appear half way nor wait (a
    reader never blocks a WAL writer). ``after``: start past this id (a resumed copy).
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
            rows: list[tuple[str, bytes, str]] = db.execute(
                "SELECT id, vector, payload FROM items WHERE ? IS NULL OR id > ? ORDER BY id LIMIT ?",
                (last, last, batch_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            flat: Vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            vecs: Vectors = np.reshape(flat, (len(rows), dim))
            yield [r[0] for r in rows], vecs, [json.loads(r[2]) for r in rows]
    except sqlite3.Error as e:
        raise StoreError(f"reading the items of {path} failed: {e}") from e
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute("COMMIT")
        db.close()


def stored_count(path: str | Path) -> int:
    """How many items the store in folder ``path`` holds, read without opening it."""
    with contextlib.closing(sqlite3.connect(f"file:{Path(path) / 'store.sqlite'}?mode=ro", uri=True)) as db:
        row: tuple[int] = db.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(row[0])
