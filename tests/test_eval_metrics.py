"""Ranking metrics against values computed by hand (trec_eval semantics)."""

from __future__ import annotations

import math

import pytest

from omniret.errors import ConfigError
from omniret.evaluation.metrics import evaluate_run, parse_metric, ranked, run_from_rankings


def _log2(x: float) -> float:
    return math.log2(x)


def test_graded_ndcg_uses_linear_gain_and_log2_discount() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"c": 0.9, "b": 0.8, "a": 0.7, "x": 0.1}}  # ranking c, b, a, x
    dcg = 0 / _log2(2) + 1 / _log2(3) + 2 / _log2(4)
    idcg = 2 / _log2(2) + 1 / _log2(3)
    got = evaluate_run(qrels, run, ["ndcg@3", "ndcg@1", "recall@2", "precision@2", "hit@1", "hit@2", "map", "mrr"])
    assert got["ndcg@3"] == pytest.approx(dcg / idcg)
    assert got["ndcg@1"] == 0.0
    assert got["recall@2"] == pytest.approx(1 / 2)       # b of {a, b} in the top 2
    assert got["precision@2"] == pytest.approx(1 / 2)
    assert got["hit@1"] == 0.0 and got["hit@2"] == 1.0
    assert got["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # relevant at ranks 2 and 3
    assert got["mrr"] == pytest.approx(1 / 2)


def test_ties_break_by_doc_id_descending_as_trec_eval() -> None:
    assert ranked({"a": 0.5, "b": 0.5, "d": 0.9, "c": 0.1}) == ["d", "b", "a", "c"]
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 0.5, "b": 0.5, "d": 0.9}}  # a ties with b and loses: rank 3
    got = evaluate_run(qrels, run, ["mrr@10", "mrr@2", "hit@2", "ndcg@10"])
    assert got["mrr@10"] == pytest.approx(1 / 3)
    assert got["mrr@2"] == 0.0  # cut at 2 in trec_eval's order: d, b
    assert got["hit@2"] == 0.0
    assert got["ndcg@10"] == pytest.approx(1 / _log2(4))


def test_missing_qrels_and_missing_run_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has no relevant doc: not counted
    run = {"q1": {"a": 1.0}, "q9": {"a": 1.0}}  # q9 unjudged: skipped; q2 returned nothing: scores 0
    got = evaluate_run(qrels, run, ["ndcg@10", "recall@10", "mrr@10"])
    assert got == {"ndcg@10": pytest.approx(0.5), "recall@10": pytest.approx(0.5), "mrr@10": pytest.approx(0.5)}
    per_q = evaluate_run(qrels, run, ["ndcg@10"], per_query=True)
    assert set(per_q) == {"q1", "q2"}
    assert per_q["q2"]["ndcg@10"] == 0.0


def test_zero_relevance_is_a_judged_non_relevant_doc() -> None:
    qrels = {"q": {"a": 0, "b": 1}}
    run = {"q": {"a": 0.9, "b": 0.5}}
    got = evaluate_run(qrels, run, ["precision@1", "mrr@10", "recall@1", "map"])
    assert got["precision@1"] == 0.0 and got["recall@1"] == 0.0
    assert got["mrr@10"] == pytest.approx(0.5) and got["map"] == pytest.approx(0.5)


def test_run_from_rankings_keeps_the_system_order() -> None:
    run = run_from_rankings({"q": ["z", "a", "m"]})
    assert ranked(run["q"]) == ["z", "a", "m"]
    got = evaluate_run({"q": {"m": 1}}, run, ["mrr@10"])
    assert got["mrr@10"] == pytest.approx(1 / 3)


def test_metric_names_are_validated() -> None:
    assert parse_metric("NDCG@10") == ("ndcg", 10)
    assert parse_metric("map") == ("map", None)
    with pytest.raises(ConfigError, match=r"unknown metric 'ndcg'"):
        parse_metric("ndcg")
    with pytest.raises(ConfigError, match=r"unknown metric 'f1@5'"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["f1@5"])
    with pytest.raises(ConfigError, match=r"no query with a relevant document"):
        evaluate_run({"q": {"a": 0}}, {"q": {"a": 1.0}}, ["map"])
