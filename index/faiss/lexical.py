"""The lexical half of a FAISS store: an FTS5 table ``lex`` beside the items, ranked by ``bm25()``.

One row per item that has text (``rowid`` = the item's fid), holding the terms ``omniret.index.lexical``
analysed out of its payload. The rows are written inside the item table's own transactions, so ``kill -9``
never leaves the two out of step. A store made before the lexical index existed gets it from the stored
payload text by ``build`` (resumable: each batch commits with the position it reached).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from omniret.errors import ConfigError, StoreError
from omniret.index.faiss.items import ItemTable
from omniret.index.filters import Filter, parse_filter, to_sql
from omniret.index.lexical import Analyzer, AnalyzerConfig, fts_match, payload_text
from omniret.index.protocol import Payload
from omniret.types import Hit

#: items per committed batch when ``build`` fills the FTS5 table of an older store
LEXICAL_BUILD_BATCH = 2000


class LexicalTable:
    """The FTS5 table of one store, on the item table's connection."""

    def __init__(self, items: ItemTable, where: str) -> None:
        self.items = items
        #: the store folder, as messages name it
        self.where = where
        try:
            # analysed terms only: the analyser already split and folded them, unicode61 keeps them whole
            items.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS lex USING fts5(terms, "
                             "tokenize='unicode61 remove_diacritics 0')")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {items.path}: {e}") from e
        self.analyzer = Analyzer(AnalyzerConfig())
        self.ready = True

    def load(self, meta: Mapping[str, str], lexical: Mapping[str, object] | AnalyzerConfig | None) -> None:
        """Load the recorded analyser (a store from before the lexical index records one, to be built)."""
        where = f"FAISS store {self.where}: lexical"
        if "lexical" in meta:
            config = AnalyzerConfig.from_dict(json.loads(meta["lexical"]), where=where)
            if lexical is not None and AnalyzerConfig.from_dict(lexical, where=where) != config:
                raise ConfigError(f"{where}: the store was created with analyser {config.to_dict()}; the "
                                  "analyser is fixed at creation (use a new collection to change it)")
            self.ready = meta.get("lexical_ready") == "1"
        else:
            config = AnalyzerConfig.from_dict(lexical, where=where)
            self.ready = not self.items.has_items()
            self.items.set_meta({"lexical": json.dumps(config.to_dict()), "lexical_ready": "1" if self.ready else "0"})
        self.analyzer = Analyzer(config)

    def terms(self, payloads: Sequence[Payload]) -> list[str]:
        """Each payload's analysed terms as one space-separated string ("" when it has no text)."""
        return [" ".join(self.analyzer.tokens(payload_text(p))) for p in payloads]

    # -- rows (inside ``ItemTable.write``) ---------------------------------------------------------
    def remove(self, fids: Sequence[int]) -> None:
        self.items.db.executemany("DELETE FROM lex WHERE rowid = ?", [(f,) for f in fids])

    def insert(self, fids: Sequence[int], terms: Sequence[str]) -> int:
        """Index the items that have terms; how many did."""
        rows = [(f, t) for f, t in zip(fids, terms, strict=True) if t]
        self.items.db.executemany("INSERT INTO lex (rowid, terms) VALUES (?, ?)", rows)
        return len(rows)

    # -- backfill ----------------------------------------------------------------------------------
    def build(self, progress: Callable[[int, int], None] | None = None, *, batch: int = LEXICAL_BUILD_BATCH) -> int:
        """Fill the table from the stored payload text; how many items got an entry (see the module doc)."""
        if self.ready:
            return 0
        db = self.items.db
        upto = int(self.items.meta().get("lexical_upto") or 0)
        total = int(db.execute("SELECT COUNT(*) FROM items WHERE fid > ?", (upto,)).fetchone()[0])
        done = added = 0
        while True:
            rows: list[tuple[int, str]] = db.execute(
                "SELECT fid, payload FROM items WHERE fid > ? ORDER BY fid LIMIT ?", (upto, batch)).fetchall()
            if not rows:
                break
            fids = [r[0] for r in rows]
            terms = self.terms([json.loads(r[1]) for r in rows])
            try:
                db.execute("BEGIN IMMEDIATE")
                self.remove(fids)
                new = self.insert(fids, terms)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('lexical_upto', ?)", (str(fids[-1]),))
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self.items.rollback()
                raise StoreError(f"building the lexical index of {self.where} failed: {e}") from e
            upto, done, added = fids[-1], done + len(rows), added + new
            if progress is not None:
                progress(done, total)
        self.items.set_meta({"lexical_ready": "1"})
        self.ready = True
        return added

    # -- reads -------------------------------------------------------------------------------------
    def search(self, texts: Sequence[str], k: int, filter: Filter | None = None,  # noqa: A002
               ) -> list[list[Hit]]:
        """Best ``k`` items per query text by BM25 (negated so that higher is better)."""
        if k <= 0:
            raise ConfigError(f"k must be > 0, got {k}")
        conds = parse_filter(filter)
        where, params = to_sql(conds) if conds else ("1", [])
        if not self.ready:
            raise StoreError(f"the lexical index of {self.where} is not built yet (the store predates it); "
                             "open the collection with open_collection(...) or run `omniret collections "
                             "build-lexical NAME` to build it")
        out: list[list[Hit]] = []
        for text in texts:
            terms = self.analyzer.query_terms(text)
            if not terms:
                out.append([])
                continue
            sql = "SELECT rowid, bm25(lex) FROM lex WHERE lex MATCH ?"
            args: list[object] = [fts_match(terms)]
            if conds:
                sql += f" AND rowid IN (SELECT fid FROM items WHERE {where})"
                args += params
            try:
                rows: list[tuple[int, float]] = self.items.db.execute(
                    sql + " ORDER BY bm25(lex) LIMIT ?", [*args, k]).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"lexical search in {self.where} failed: {e}") from e
            if not rows:
                out.append([])
                continue
            scores = np.asarray([[-r[1] for r in rows]], dtype=np.float64)
            fids = np.asarray([[r[0] for r in rows]], dtype=np.int64)
            out.append(self.items.hits(scores, fids, k)[0])
        return out

    def count(self) -> int:
        return int(self.items.db.execute("SELECT COUNT(*) FROM lex").fetchone()[0])

    def ids(self) -> list[str]:
        return [str(r[0]) for r in self.items.db.execute(
            "SELECT items.id FROM lex JOIN items ON items.fid = lex.rowid ORDER BY items.fid")]
