"""Helpers for the tests that kill an indexing run part-way (a pool worker, the coordinator, a Ray driver)
and prove the re-run completes it. A helper module, as ``media_files.py``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from omniret.index import open_collection


def write_numbered_docs(folder: Path, n: int) -> Path:
    """``n`` small distinct text files ``doc000.txt`` ... in a new ``folder``."""
    folder.mkdir()
    for i in range(n):
        (folder / f"doc{i:03d}.txt").write_text(f"document number {i} talks about topic {i % 17} and item {i}")
    return folder


def indexed_sources(ledger: Path) -> int:
    """Source files the ledger has recorded as indexed; -1 while it cannot be read yet (opened read-only, so
    polling never creates the file before the indexer does)."""
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    except sqlite3.Error:
        return -1


def wait_for_sources(ledger: Path, at_least: int, timeout_s: float, running: Callable[[], bool] = lambda: True,
                     poll_s: float = 0.1) -> None:
    """Return once ``at_least`` sources are indexed, the timeout passes, or ``running()`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running():
        time.sleep(poll_s)
        if indexed_sources(ledger) >= at_least:
            return


def assert_rerun_completes(root: Path, docs: Path, n: int, done: int, batch_items: int) -> None:
    """A plain re-run of collection ``c`` skips the ``done`` files, indexes the rest, and holds every id once."""
    coll = open_collection("c", root=root)
    report = coll.add_files(docs, progress=False, batch_items=batch_items)
    assert report.unchanged == done and report.indexed_files == n - done
    ids = coll.store.ids()
    assert len(ids) == len(set(ids)) == n == coll.count()
    coll.close()
