"""The retrieval evaluation every local runner shares: embed once, sweep dims, modes and rerank depths.

The corpus and the queries are embedded once at the model's full dimension; each Matryoshka dim is the
re-normalised prefix of those vectors (exactly what ``embed(..., dim=d)`` returns), pushed into an
omniret ``VectorStore`` (FAISS or Qdrant, exact or ANN) that answers the first stage. Each rerank depth
``N`` reorders the first stage's top ``N`` by the reranker's score and keeps the first-stage tail
after them; ``N = 0`` is the first stage alone. Depths are reranked incrementally (the top-N sets are
nested), so the rerank time reported for ``N`` is the time spent scoring exactly those ``N`` pairs.

Each first-stage ``mode`` (``dense``, ``lexical``, ``hybrid``; ``omniret.index.fusion``) is answered by the
same store through ``omniret.index.searcher.first_stage``, exactly as a collection search is: the store
holds each document's text in its payload, so its lexical index is built by the same upserts.

Scores are computed on the rankings the system returned (``metrics.run_from_rankings``), with
trec_eval semantics (``metrics.evaluate_run``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError, DimensionError
from omniret.evaluation.metrics import DEFAULT_METRICS, check_metrics, evaluate_run, run_from_rankings
from omniret.evaluation.reports import RunResult
from omniret.rerank.protocol import Reranker
from omniret.types import Item

#: ``progress(stage, done, total)``: the CLI draws bars from it
Progress = Callable[[str, int, int], None]

BACKENDS = ("faiss", "qdrant")
QDRANT_INDEXES = ("flat", "hnsw")


@dataclass
class SweepConfig:
    """What to sweep and how the first stage is served.

    ``dims``: Matryoshka dims (None: the model's full dim). ``rerank_tops``: rerank depths, 0 for the
    first stage alone. ``k``: first-stage depth, also the ranking depth metrics see.
    ``query_instruction`` goes with the queries (documents are embedded with the model's default),
    ``rerank_instruction`` with the reranker's query. ``modes``: first stages to sweep (``dense``,
    ``lexical``, ``hybrid``); each hybrid run is one of ``fusions`` (``rrf``, or ``weighted`` once per
    ``alphas`` value, default 0.7).
    """

    dims: Sequence[int] | None = None
    rerank_tops: Sequence[int] = (0,)
    k: int = 100
    backend: str = "faiss"
    index: str = "flat"
    metrics: Sequence[str] = DEFAULT_METRICS
    query_instruction: str | None = None
    rerank_instruction: str | None = None
    batch_size: int = 32
    modes: Sequence[str] = ("dense",)
    fusions: Sequence[str] = ("rrf",)
    alphas: Sequence[float] | None = None
    workdir: Path | None = None
    extra_settings: dict[str, Any] = field(default_factory=dict)


def check_config(config: SweepConfig, *, full_dim: int, reranker: Reranker | None) -> tuple[list[int], list[int], list[str]]:
    """Validate the sweep before any model work; returns (dims, rerank depths, metrics)."""
    dims = sorted({int(d) for d in (config.dims or [full_dim])})
    bad = [d for d in dims if d < 1 or d > full_dim]
    if bad:
        raise DimensionError(f"--dims {bad[0]}: must be between 1 and the model's dimension {full_dim}")
    tops = sorted({int(t) for t in config.rerank_tops}) or [0]
    if tops[0] < 0:
        raise ConfigError(f"--rerank-top {tops[0]}: must be >= 0 (0 is the first stage alone)")
    if tops[-1] > 0 and reranker is None:
        raise ConfigError(f"--rerank-top {tops[-1]} needs a reranker; pass --reranker PATH")
    if config.k < 1:
        raise ConfigError(f"--k {config.k}: must be >= 1")
    if tops[-1] > config.k:
        raise ConfigError(f"--rerank-top {tops[-1]} is deeper than the first stage (--k {config.k})")
    if config.backend not in BACKENDS:
        raise ConfigError(f"--backend {config.backend!r}: use one of {', '.join(BACKENDS)}")
    check_modes(config)
    if config.backend == "qdrant" and config.index not in QDRANT_INDEXES:
        raise ConfigError(f"--index {config.index!r}: Qdrant builds its own HNSW index (its local mode searches "
                          f"exactly); use --index {' or '.join(QDRANT_INDEXES)} with --backend qdrant")
    return dims, tops, check_metrics(config.metrics)


#: one first stage of a sweep: (mode, fusion, alpha); fusion and alpha matter for hybrid only
Stage = tuple[str, str, float]


def check_modes(config: SweepConfig) -> list[Stage]:
    """The first stages a sweep runs: each mode in order, hybrid once per fusion (weighted once per alpha)."""
    from omniret.index.fusion import DEFAULT_ALPHA, check_fusion, check_mode

    if not config.modes:
        raise ConfigError("--mode: give at least one of dense, lexical, hybrid")
    modes = [check_mode(m, field="--mode") for m in dict.fromkeys(config.modes)]
    fusions = list(dict.fromkeys(config.fusions)) or ["rrf"]
    alphas = list(dict.fromkeys(config.alphas or []))
    if alphas and "weighted" not in fusions:
        raise ConfigError(f"--alpha {alphas[0]} is the weight of --fusion weighted (add it: --fusion rrf,weighted)")
    variants: list[tuple[str, float]] = []
    for f in fusions:
        if f == "weighted":
            variants += [check_fusion(f, a, field="--fusion") for a in alphas or [DEFAULT_ALPHA]]
        else:
            variants.append(check_fusion(f, None, field="--fusion"))
    out: list[Stage] = []
    for m in modes:
        out += [(m, f, a) for f, a in variants] if m == "hybrid" else [(m, "rrf", DEFAULT_ALPHA)]
    return out


def open_store(backend: str, path: Path, dim: int, index: str) -> Any:
    """A fresh omniret ``VectorStore`` at ``path``: FAISS with the given index kind, or Qdrant local mode."""
    if backend == "qdrant":
        from omniret.index import QdrantStore

        return QdrantStore(f"eval-{dim}", dim=dim, path=path)
    from omniret.index.faiss import FaissStore, check_index_kind

    return FaissStore(path, dim=dim, index=check_index_kind(index))


def evaluate_retrieval(dataset: str, split: str, queries: Mapping[str, Item], corpus: Mapping[str, Item],
                       qrels: Mapping[str, Mapping[str, int]], embedder: Embedder, reranker: Reranker | None = None,
                       config: SweepConfig | None = None, *, progress: Progress | None = None) -> list[RunResult]:
    """Score every (dim, mode, rerank depth) setting; one ``RunResult`` each: dims ascending, then modes in
    the given order, then depths."""
    from omniret.index.searcher import first_stage, query_text

    config = config or SweepConfig()
    dims, tops, metrics = check_config(config, full_dim=int(embedder.dim), reranker=reranker)
    stages = check_modes(config)
    lexical = any(m != "dense" for m, _, _ in stages)
    qids = [q for q in queries if q in qrels and any(int(r) >= 1 for r in qrels[q].values())]
    if not qids:
        raise ConfigError(f"{dataset}: no query of split {split!r} has a relevant document in the qrels")
    if not corpus:
        raise ConfigError(f"{dataset}: the corpus is empty")
    doc_ids = list(corpus)
    k = min(config.k, len(doc_ids))

    t0 = time.perf_counter()
    doc_vecs = _embed(embedder, [corpus[d] for d in doc_ids], None, config.batch_size, "embed corpus", progress)
    embed_corpus_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q_vecs = _embed(embedder, [queries[q] for q in qids], config.query_instruction, config.batch_size,
                    "embed queries", progress)
    embed_queries_ms = 1000 * (time.perf_counter() - t0) / len(qids)

    from omniret.embed.matryoshka import truncate

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="omniret-eval-", dir=config.workdir) as tmp:
        for dim in dims:
            store = open_store(config.backend, Path(tmp) / f"{config.backend}-{dim}", dim, config.index)
            firsts: dict[Stage, tuple[dict[str, list[str]], float]] = {}
            try:
                t0 = time.perf_counter()
                dv = truncate(doc_vecs, dim)
                for start in range(0, len(doc_ids), 1024):
                    part = doc_ids[start:start + 1024]
                    payloads = [{"text": query_text(corpus[d])} for d in part] if lexical else None
                    store.upsert(part, dv[start:start + 1024], payloads)
                build_s = time.perf_counter() - t0
                qv = truncate(q_vecs, dim)
                for stage in stages:
                    mode, fusion, alpha = stage
                    first: dict[str, list[str]] = {}
                    t0 = time.perf_counter()
                    for i, q in enumerate(qids):
                        hits = first_stage(store, qv[i:i + 1], [query_text(queries[q])], k, mode=mode,
                                           fusion=fusion, alpha=alpha)[0]
                        first[q] = [h.id for h in hits]
                        if progress:
                            progress(f"search {mode} dim {dim}", i + 1, len(qids))
                    firsts[stage] = (first, 1000 * (time.perf_counter() - t0) / len(qids))
            finally:
                store.close()
            for (mode, fusion, alpha), (first, search_ms) in firsts.items():
                results.extend(_score_mode(dataset, split, embedder, reranker, queries, corpus, qrels, config,
                                           first, tops, metrics, dim=dim, mode=mode, fusion=fusion, alpha=alpha,
                                           k=k, num_docs=len(doc_ids), build_s=build_s, search_ms=search_ms,
                                           embed_corpus_s=embed_corpus_s,
                                           embed_queries_ms=0.0 if mode == "lexical" else embed_queries_ms,
                                           progress=progress))
    return results


def _score_mode(dataset: str, split: str, embedder: Embedder, reranker: Reranker | None, queries: Mapping[str, Item],
                corpus: Mapping[str, Item], qrels: Mapping[str, Mapping[str, int]], config: SweepConfig,
                first: dict[str, list[str]], tops: list[int], metrics: list[str], *, dim: int, mode: str,
                fusion: str, alpha: float, k: int, num_docs: int, build_s: float, search_ms: float,
                embed_corpus_s: float, embed_queries_ms: float, progress: Progress | None) -> list[RunResult]:
    """The ``RunResult`` of each rerank depth on one first stage's rankings."""
    results: list[RunResult] = []
    qids = list(first)
    reranked = _rerank_depths(reranker, queries, corpus, first, tops, config.rerank_instruction, progress, dim)
    for top in tops:
        rankings, rerank_ms = reranked[top]
        scores = evaluate_run(qrels, run_from_rankings(rankings), metrics)
        settings = {"dim": dim, "mode": mode, "rerank_top": top, "backend": config.backend,
                    "index": config.index,
                    "k": k, "num_queries": len(qids), "num_docs": num_docs,
                    "matryoshka_dim": dim in embedder.dims or dim == embedder.dim,
                    "query_instruction": config.query_instruction, **config.extra_settings}
        if mode == "hybrid":
            settings["fusion"] = fusion
            if fusion == "weighted":
                settings["alpha"] = alpha
        if top:
            settings["rerank_instruction"] = config.rerank_instruction
        timings = {"embed_corpus_s": round(embed_corpus_s, 4),
                   "embed_query_ms_per_query": round(embed_queries_ms, 3),
                   "index_build_s": round(build_s, 4),
                   "search_ms_per_query": round(search_ms, 3),
                   "rerank_ms_per_query": round(rerank_ms, 3),
                   "query_ms_per_query": round(embed_queries_ms + search_ms + rerank_ms, 3)}
        results.append(RunResult(dataset=dataset, split=split, model=str(embedder.name),
                                 reranker=str(reranker.name) if (reranker is not None and top) else None,
                                 metrics=scores, settings=settings, timings=timings))
    return results


def _embed(embedder: Embedder, items: list[Item], instruction: str | None, batch_size: int, stage: str,
           progress: Progress | None) -> np.ndarray:
    parts = []
    for start in range(0, len(items), batch_size):
        parts.append(embedder.embed(items[start:start + batch_size], instruction=instruction))
        if progress:
            progress(stage, min(start + batch_size, len(items)), len(items))
    return np.concatenate(parts).astype(np.float32, copy=False)


def _rerank_depths(reranker: Reranker | None, queries: Mapping[str, Item], corpus: Mapping[str, Item],
                   first: dict[str, list[str]], tops: list[int], instruction: str | None,
                   progress: Progress | None, dim: int) -> dict[int, tuple[dict[str, list[str]], float]]:
    """For each depth: the rankings (reranked head + first-stage tail) and rerank ms per query."""
    out: dict[int, tuple[dict[str, list[str]], float]] = {}
    scores: dict[str, list[float]] = {q: [] for q in first}
    spent = 0.0
    done_depth = 0
    for top in tops:
        if top > done_depth:
            if reranker is None:  # check_config refuses this first
                raise ConfigError(f"rerank depth {top} needs a reranker")
            for i, (q, ids) in enumerate(first.items()):
                todo = ids[done_depth:top]
                if todo:
                    t0 = time.perf_counter()
                    s = reranker.score(queries[q], [corpus[d] for d in todo], instruction=instruction)
                    spent += time.perf_counter() - t0
                    scores[q].extend(float(x) for x in np.asarray(s).ravel())
                if progress:
                    progress(f"rerank top {top} (dim {dim})", i + 1, len(first))
            done_depth = top
        rankings = {}
        for q, ids in first.items():
            head = ids[:top]
            order = sorted(range(len(head)), key=lambda j, q=q: -scores[q][j])  # stable: ties keep stage-one order
            rankings[q] = [head[j] for j in order] + ids[top:]
        out[top] = (rankings, 1000 * spent / max(len(first), 1) if top else 0.0)
    return out
