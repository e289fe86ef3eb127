"""MMEB-style multimodal runner over local data: queries and candidates of any modality, any direction.

Folder layout (one task)::

    TASK/task.json         optional: {"name", "category": "image"|"video"|"visdoc",
                                       "query_instruction", "rerank_instruction"}
    TASK/queries.jsonl     one item dict per line, with an "id"
    TASK/candidates.jsonl  one item dict per line, with an "id"
    TASK/qrels/<split>.tsv query-id <TAB> corpus-id <TAB> score (header line), or qrels/<split>.jsonl
                           ({"query_id", "corpus_id", "score"}), or qrels.tsv / qrels.jsonl for one split

An item dict takes ``omniret.Item``'s keys (``text``, ``image``, ``video``, ``fps``, ``max_frames``,
``video_start``, ``video_end``, ``instruction``, ``metadata``); media paths are relative to the folder.
A document page is ``{"image": "doc.pdf", "page": n}`` (1-based): the runner renders that page with
``omniret.base.media.pdf_page_items`` (the page image, as MMEB-V2's visual-document tasks embed it;
its text layer is kept in metadata, not embedded). Pre-rendered page images are plain images.

Scores follow MMEB-V2's reporting: Hit@1 is the main score of image and video tasks, nDCG@5 of
visual-document tasks; Recall@k and MRR@10 come alongside. ``category`` is read from ``task.json`` or
inferred: any PDF page makes a ``visdoc`` task, else any video a ``video`` task, else ``image``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError
from omniret.evaluation.beir import read_jsonl, read_qrels_tsv
from omniret.evaluation.reports import RunResult
from omniret.evaluation.sweeps import Progress, SweepConfig, evaluate_retrieval
from omniret.jsonl import resolve_media
from omniret.rerank.protocol import Reranker
from omniret.types import ITEM_KEYS, Item

CATEGORIES = ("image", "video", "visdoc")
MAIN_METRIC = {"image": "hit@1", "video": "hit@1", "visdoc": "ndcg@5"}
MMEB_METRICS = ("hit@1", "ndcg@5", "recall@1", "recall@5", "recall@10", "mrr@10")


@dataclass
class MmebTask:
    """One MMEB-style task split, in memory."""

    name: str
    split: str
    category: str
    queries: dict[str, Item]
    candidates: dict[str, Item]
    qrels: dict[str, dict[str, int]]
    query_instruction: str | None = None
    rerank_instruction: str | None = None

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.category]


def read_items(path: Path) -> tuple[dict[str, Item], bool]:
    """Items of a queries/candidates file by id, and whether any is a PDF page."""
    from omniret.base.media import pdf_page_items

    base = path.parent
    items: dict[str, Item] = {}
    has_page = False
    for i, row in enumerate(read_jsonl(path)):
        where = f"{path}: line {i + 1}"
        if row.get("id") in (None, ""):
            raise ConfigError(f"{where}: every item needs an \"id\"")
        iid = str(row["id"])
        if iid in items:
            raise ConfigError(f"{where}: id {iid!r} appears twice")
        page = row.pop("page", None)
        unknown = sorted(set(row) - set(ITEM_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; an item takes {list(ITEM_KEYS)} and \"page\"")
        for key in ("image", "video"):
            if key in row:
                row[key] = resolve_media(row[key], base)
        if page is not None:
            pdf = row.get("image")
            if not isinstance(pdf, str) or not pdf.lower().endswith(".pdf"):
                raise ConfigError(f"{where}: \"page\" needs \"image\" to be one PDF file, got {pdf!r}")
            if isinstance(page, bool) or not isinstance(page, int):
                raise ConfigError(f"{where}: \"page\" must be a 1-based integer, got {page!r}")
            rendered = pdf_page_items(pdf, pages=[page])[0]
            row["image"] = rendered.image
            row["metadata"] = {**rendered.metadata, **(row.get("metadata") or {})}
            has_page = True
        items[iid] = Item.from_dict(row, index=i)
    return items, has_page


def _read_qrels(root: Path, split: str) -> dict[str, dict[str, int]]:
    for cand in (root / "qrels" / f"{split}.tsv", root / "qrels" / f"{split}.jsonl", root / "qrels.tsv",
                 root / "qrels.jsonl"):
        if cand.is_file():
            if cand.suffix == ".tsv":
                return read_qrels_tsv(cand)
            qrels: dict[str, dict[str, int]] = {}
            for i, row in enumerate(read_jsonl(cand)):
                q = row.get("query_id", row.get("query-id"))
                d = row.get("corpus_id", row.get("corpus-id"))
                if q is None or d is None:
                    raise ConfigError(f"{cand}: line {i + 1} needs \"query_id\" and \"corpus_id\"")
                qrels.setdefault(str(q), {})[str(d)] = int(row.get("score", 1))
            return qrels
    raise ConfigError(f"{root}: no qrels for split {split!r} (looked for qrels/{split}.tsv, qrels/{split}.jsonl, "
                      "qrels.tsv, qrels.jsonl)")


def load_mmeb(path: str | Path, split: str = "test") -> MmebTask:
    """Read an MMEB-style task folder (see module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a task folder (expected queries.jsonl, candidates.jsonl, qrels)")
    meta: dict[str, Any] = {}
    if (root / "task.json").is_file():
        meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
    category = meta.get("category")
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"{root / 'task.json'}: category {category!r}: use one of {', '.join(CATEGORIES)}")
    qrels = _read_qrels(root, split)
    queries, q_pages = read_items(root / "queries.jsonl")
    candidates, c_pages = read_items(root / "candidates.jsonl")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ConfigError(f"{root}: qrels name query {missing[0]!r}, which queries.jsonl does not have")
    if category is None:
        if q_pages or c_pages:
            category = "visdoc"
        elif any(it.videos for it in (*queries.values(), *candidates.values())):
            category = "video"
        else:
            category = "image"
    return MmebTask(name=str(meta.get("name", root.name)), split=split, category=category,
                    queries={q: it for q, it in queries.items() if q in qrels}, candidates=candidates,
                    qrels=qrels, query_instruction=meta.get("query_instruction"),
                    rerank_instruction=meta.get("rerank_instruction"))


def run_mmeb(path: str | Path, embedder: Embedder, reranker: Reranker | None = None, *, split: str = "test",
             config: SweepConfig | None = None, progress: Progress | None = None) -> list[RunResult]:
    """Evaluate on an MMEB-style folder; metrics default to MMEB-V2's (Hit@1, nDCG@5, Recall@k)."""
    task = load_mmeb(path, split)
    config = config or SweepConfig(metrics=MMEB_METRICS)
    metrics = list(config.metrics)
    if task.main_metric not in metrics:
        metrics.insert(0, task.main_metric)
    config = replace(
        config,
        metrics=metrics,
        query_instruction=config.query_instruction or task.query_instruction,
        rerank_instruction=config.rerank_instruction or task.rerank_instruction,
        extra_settings={**config.extra_settings, "category": task.category, "main_metric": task.main_metric},
    )
    return evaluate_retrieval(task.name, split, task.queries, task.candidates, task.qrels, embedder, reranker,
                              config, progress=progress)
