"""Ranking metrics with trec_eval semantics (through ``pytrec_eval``): nDCG@k, Recall@k, MRR@k, MAP,
Hit@k, Precision@k.

Conventions, those of trec_eval (and so of BEIR and MTEB, which call the same code):

- ``qrels`` map query id -> {doc id: graded relevance}; a doc counts as relevant when its grade is >= 1,
  a grade of 0 is a judged non-relevant doc. nDCG uses the grade itself as the gain (linear gain,
  ``log2(rank + 1)`` discount), as trec_eval's ``ndcg_cut``.
- ``run`` maps query id -> {doc id: score}. trec_eval orders a query's docs by score, highest first, and
  breaks ties by doc id in *descending* string order; ``ranked`` below reproduces that order, and the
  cut-off metrics trec_eval has no cut for (MRR@k) are computed on the run cut to its first k docs in
  that order.
- Which queries count: those in ``qrels`` with at least one relevant doc. A run query missing from the
  qrels is skipped (it has no judgements); a judged query the run has no docs for scores 0 on every
  metric (it is in the mean, unlike trec_eval without ``-c``, so a system cannot gain by returning
  nothing). Scores are means over the counted queries.

Metric names are lower-case ``name@k`` (``ndcg@10``, ``recall@100``, ``mrr@10``, ``hit@1``,
``precision@5``, ``map@100``) or ``map`` / ``mrr`` without a cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, overload

from omniret.errors import ConfigError

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

#: our metric name -> pytrec_eval measure (``{k}`` filled with the cut-off)
_MEASURES = {
    "ndcg": "ndcg_cut.{k}",
    "recall": "recall.{k}",
    "precision": "P.{k}",
    "hit": "success.{k}",
    "map": "map_cut.{k}",
    "mrr": "recip_rank",
}
_NAME = re.compile(r"^(ndcg|recall|precision|hit|map|mrr)(?:@([1-9][0-9]*))?$")

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map", "hit@1", "precision@1")


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ``"map"`` -> ``("map", None)``. Raises ``ConfigError``."""
    m = _NAME.match(name.strip().lower())
    if m is None or (m.group(2) is None and m.group(1) not in {"map", "mrr"}):
        raise ConfigError(f"unknown metric {name!r}; use ndcg@k, recall@k, precision@k, hit@k, mrr@k, "
                          "map or map@k (k >= 1)")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval's order: score descending, ties by doc id descending."""
    return sorted(scores, key=lambda d: (-float(scores[d]), _Desc(d)))


class _Desc(str):
    """A string that sorts in reverse, for trec_eval's descending doc-id tie-break."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


@overload
def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str] = ..., *,
                 per_query: Literal[False] = False) -> dict[str, float]: ...


@overload
def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str] = ..., *,
                 per_query: Literal[True]) -> dict[str, dict[str, float]]: ...


def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS, *,
                 per_query: bool = False) -> dict[str, float] | dict[str, dict[str, float]]:
    """Mean of each metric over the judged queries (see module docstring), or per query when asked.

    ``per_query=True`` returns ``{query id: {metric: value}}`` for the counted queries.
    """
    import pytrec_eval

    parsed = [(name, *parse_metric(name)) for name in metrics]
    judged = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()
              if any(int(r) >= 1 for r in docs.values())}
    if not judged:
        raise ConfigError("qrels hold no query with a relevant document (relevance >= 1); nothing to score")
    full_run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if str(q) in judged}

    values: dict[str, dict[str, float]] = {q: {} for q in judged}
    # one evaluator per distinct run cut: MRR@k needs the run cut at k, the rest use the full run
    by_cut: dict[int | None, list[tuple[str, str, int | None]]] = {}
    for name, kind, k in parsed:
        by_cut.setdefault(k if kind == "mrr" else None, []).append((name, kind, k))
    for cut, group in by_cut.items():
        cut_run = full_run if cut is None else {q: _top(docs, cut) for q, docs in full_run.items()}
        measures = {_measure(kind, k) for _, kind, k in group}
        scored = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(cut_run) if cut_run else {}
        for name, kind, k in group:
            key = _result_key(kind, k)
            for q in judged:
                values[q][name] = float(scored.get(q, {}).get(key, 0.0))

    if per_query:
        return values
    n = len(values)
    return {name: sum(v[name] for v in values.values()) / n for name, _, _ in parsed}


def _top(docs: Mapping[str, float], k: int) -> dict[str, float]:
    return {d: docs[d] for d in ranked(docs)[:k]}


def _measure(kind: str, k: int | None) -> str:
    if kind == "map" and k is None:
        return "map"
    return _MEASURES[kind].format(k=k)


def _result_key(kind: str, k: int | None) -> str:
    return _measure(kind, k).replace(".", "_")


def run_from_rankings(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """A run whose scores encode the given order exactly (n, n-1, ..., 1), so no tie-break applies.

    Runners score what the system returned, in the order it returned it (a reranked head followed by
    the first-stage tail), rather than mixing score scales.
    """
    out: dict[str, dict[str, float]] = {}
    for q, docs in rankings.items():
        n = len(docs)
        out[str(q)] = {str(d): float(n - i) for i, d in enumerate(docs)}
    return out


def check_metrics(names: Iterable[str]) -> list[str]:
    """Normalise and validate metric names before any model work."""
    out = []
    for n in names:
        parse_metric(n)
        out.append(n.strip().lower())
    return out
