"""BEIR-format local runner: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``; no network.

Layout (as the BEIR datasets ship)::

    DATASET/corpus.jsonl      {"_id": str, "title": str, "text": str}   one per line
    DATASET/queries.jsonl     {"_id": str, "text": str}
    DATASET/qrels/test.tsv    query-id <TAB> corpus-id <TAB> score     (first line a header)

Documents are embedded as ``title + " " + text`` (the title left out when empty) with the model's
default instruction; queries carry the task instruction (Qwen3 embedding models expect one). The
first stage runs through an omniret vector store, the optional rerank on its top N: see ``sweeps``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError
from omniret.evaluation.reports import RunResult
from omniret.evaluation.sweeps import Progress, SweepConfig, evaluate_retrieval
from omniret.jsonl import iter_jsonl
from omniret.rerank.protocol import Reranker
from omniret.types import Item

#: the instruction queries get when none is given (the Qwen3 embedding cards' retrieval default)
DEFAULT_QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass
class BeirData:
    """One split of a BEIR-format dataset, in memory."""

    name: str
    split: str
    corpus: dict[str, Item]
    queries: dict[str, Item]
    qrels: dict[str, dict[str, int]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSONL file; a bad line is a ``ConfigError`` naming file and line."""
    return [obj for _, obj in iter_jsonl(path)]


def read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    """``query-id, corpus-id, score`` rows (a header line is skipped) -> {query: {doc: score}}."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ConfigError(f"{path}:{lineno}: expected query-id, corpus-id, score separated by tabs")
            try:
                score = int(float(row[2]))
            except ValueError as e:
                if lineno == 1:  # the header
                    continue
                raise ConfigError(f"{path}:{lineno}: score {row[2]!r} is not a number") from e
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirData:
    """Read a BEIR-format dataset folder; the qrels of ``split`` select the queries."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a BEIR dataset folder (expected corpus.jsonl, queries.jsonl, qrels/)")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise ConfigError(f"{qrels_path}: no such file; splits here: {', '.join(have) or 'none'}")
    corpus: dict[str, Item] = {}
    for i, row in enumerate(read_jsonl(root / "corpus.jsonl")):
        if "_id" not in row:
            raise ConfigError(f"{root / 'corpus.jsonl'}: row {i + 1} has no _id")
        did = str(row["_id"])
        text = " ".join(s for s in (str(row.get("title") or "").strip(), str(row.get("text") or "").strip()) if s)
        corpus[did] = Item(text=text or "NULL", id=did)
    queries: dict[str, Item] = {}
    for i, row in enumerate(read_jsonl(root / "queries.jsonl")):
        if "_id" not in row:
            raise ConfigError(f"{root / 'queries.jsonl'}: row {i + 1} has no _id")
        queries[str(row["_id"])] = Item(text=str(row.get("text") or ""), id=str(row["_id"]))
    qrels = read_qrels_tsv(qrels_path)
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ConfigError(f"{qrels_path}: query id {missing[0]!r} is not in queries.jsonl "
                          f"({len(missing)} missing)")
    return BeirData(name=root.name, split=split, corpus=corpus,
                    queries={q: it for q, it in queries.items() if q in qrels}, qrels=qrels)


def run_beir(path: str | Path, embedder: Embedder, reranker: Reranker | None = None, *, split: str = "test",
             config: SweepConfig | None = None, progress: Progress | None = None) -> list[RunResult]:
    """Evaluate ``embedder`` (and ``reranker``) on a BEIR-format folder; one result per setting."""
    config = config or SweepConfig()
    if config.query_instruction is None:
        config = replace(config, query_instruction=DEFAULT_QUERY_INSTRUCTION)
    data = load_beir(path, split)
    return evaluate_retrieval(data.name, split, data.queries, data.corpus, data.qrels, embedder, reranker,
                              config, progress=progress)
