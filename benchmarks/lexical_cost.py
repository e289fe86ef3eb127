"""What the lexical side costs beside the dense side: indexing time, query time and index size.

Documents are real text (a BEIR ``corpus.jsonl``; repeated with a suffix to reach ``--n``); vectors are
clustered random unit rows of ``--dim`` (the dense side's cost does not depend on what the vectors mean).
Every figure is measured through omniret's stores, alternating A, B, A, B in the same run:

- indexing: ``upsert`` of the same rows and the same payload bytes into fresh stores, the text under a key the
  lexical index ignores (``{"note": text}``: dense only, the baseline) and under ``text`` (dense + lexical:
  analyser, FTS5 rows / sparse vectors);
- query: ``search`` (dense, one query vector per call) against ``lexical_search`` (one query text per call)
  and hybrid (both lists + RRF, ``first_stage(mode="hybrid")``) on the same store;
- size (FAISS): the FAISS index file and the SQLite pages of the items table (vectors, payloads) against
  the FTS5 tables (SQLite ``dbstat``).

    python benchmarks/lexical_cost.py --corpus benchmarks/eval/data/stdlib-docs/corpus.jsonl --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def texts_of(corpus: Path, n: int) -> list[str]:
    base = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        base.append(" ".join(s for s in (row.get("title") or "", row.get("text") or "") if s))
    return [base[i % len(base)] + ("" if i < len(base) else f" copy{i // len(base)}") for i in range(n)]


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((100, dim)).astype(np.float32)
    x = centers[rng.integers(0, 100, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_store(backend: str, path: Path, dim: int) -> Any:
    from omniret.index import FaissStore, QdrantStore

    if backend == "faiss":
        return FaissStore(path, dim=dim)
    return QdrantStore("bench", dim=dim, path=":memory:")


def index_once(backend: str, tmp: Path, ids: list[str], vecs: np.ndarray, payloads: list[dict] | None,
               batch: int) -> float:
    store = open_store(backend, tmp, vecs.shape[1])
    t0 = time.perf_counter()
    for s in range(0, len(ids), batch):
        store.upsert(ids[s:s + batch], vecs[s:s + batch], None if payloads is None else payloads[s:s + batch])
    took = time.perf_counter() - t0
    store.close()
    return took


def fts_bytes(db: Path) -> tuple[int, int]:
    import sqlite3

    con = sqlite3.connect(str(db))
    rows = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    con.close()
    lex = sum(v for k, v in rows.items() if k.startswith("lex"))
    items = sum(v for k, v in rows.items() if k == "items" or k.startswith("sqlite_autoindex_items"))
    return items, lex


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("benchmarks/eval/data/stdlib-docs/corpus.jsonl"))
    ap.add_argument("--queries", type=Path, default=Path("benchmarks/eval/data/stdlib-docs/queries.jsonl"))
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["faiss", "qdrant"])
    ap.add_argument("--qdrant-n", type=int, default=5000, help="Qdrant local mode is slow to fill; fewer rows")
    a = ap.parse_args()
    from omniret.index.searcher import first_stage

    queries = [json.loads(line)["text"] for line in a.queries.read_text(encoding="utf-8").splitlines()]
    print(f"loadavg before: {os.getloadavg()}")
    for backend in a.backends:
        n = a.n if backend == "faiss" else min(a.n, a.qdrant_n)
        texts = texts_of(a.corpus, n)
        ids = [f"d{i}" for i in range(n)]
        vecs = unit_rows(n, a.dim, 0)
        qv = unit_rows(len(queries), a.dim, 1)
        payloads = [{"text": t} for t in texts]
        unindexed = [{"note": t} for t in texts]  # same bytes, not a lexical field
        dense_s, both_s = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.rounds):  # A, B, A, B
                dense_s.append(index_once(backend, Path(tmp) / f"a{r}", ids, vecs, unindexed, a.batch))
                both_s.append(index_once(backend, Path(tmp) / f"b{r}", ids, vecs, payloads, a.batch))
            store = open_store(backend, Path(tmp) / "q", a.dim)
            for s in range(0, n, a.batch):
                store.upsert(ids[s:s + a.batch], vecs[s:s + a.batch], payloads[s:s + a.batch])
            ms: dict[str, list[float]] = {"dense": [], "lexical": [], "hybrid": []}
            for _ in range(a.rounds):
                for mode in ms:
                    t0 = time.perf_counter()
                    for i, q in enumerate(queries):
                        first_stage(store, qv[i:i + 1], [q], 10, mode=mode, depth=100)
                    ms[mode].append(1000 * (time.perf_counter() - t0) / len(queries))
            size = ""
            if backend == "faiss":
                store.close()
                items_b, lex_b = fts_bytes(Path(tmp) / "q" / "store.sqlite")
                faiss_b = (Path(tmp) / "q" / "index.faiss").stat().st_size
                size = (f"; size: FAISS index {faiss_b / 1e6:.1f} MB + SQLite items (vectors, payloads) "
                        f"{items_b / 1e6:.1f} MB, FTS5 lexical {lex_b / 1e6:.1f} MB")
            else:
                store.close()
        med = {k: statistics.median(v) for k, v in ms.items()}
        print(f"{backend} n={n} dim={a.dim}: index dense-only {statistics.median(dense_s):.2f} s, "
              f"dense+lexical {statistics.median(both_s):.2f} s; query ms (k=10, hybrid depth 100): "
              f"dense {med['dense']:.2f}, lexical {med['lexical']:.2f}, hybrid {med['hybrid']:.2f}{size}")
        print(f"  rounds: dense-only {[round(x, 2) for x in dense_s]}, dense+lexical {[round(x, 2) for x in both_s]}, "
              f"query ms {({k: [round(x, 2) for x in v] for k, v in ms.items()})}; loadavg {os.getloadavg()}")


if __name__ == "__main__":
    main()
