"""Two-stage search with the tiny Qwen3-VL embedder and reranker: hits come back in reranker order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omniret import Item
from omniret.errors import ConfigError
from omniret.index import Searcher, open_collection
from omniret.index.searcher import item_from_payload

TEXTS = ["a red bicycle leaning on a wall", "stock markets fell sharply today", "how to bake sourdough bread",
         "the migration of arctic terns", "quantum computers use qubits", "a recipe for tomato soup",
         "rules of association football", "volcanic eruptions in iceland"]


@pytest.fixture(scope="module")
def models(tiny_vl_embedding: Path, tiny_vl_reranker: Path):  # noqa: ANN201
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker

    return load_embedder(str(tiny_vl_embedding)), load_reranker(str(tiny_vl_reranker))


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_two_stage_order(tmp_path: Path, models, backend: str) -> None:  # noqa: ANN001
    embedder, reranker = models
    coll = open_collection("two", root=tmp_path, backend=backend, embedder=embedder, reranker=reranker)
    coll.add([Item(text=t, id=f"t{i}", metadata={"n": i}) for i, t in enumerate(TEXTS)])
    query = "something to eat"
    plain = coll.search(query, k=8, rerank=False)
    assert all(h.rerank_score is None for h in plain)
    hits = coll.search(query, k=8, candidates=8, rerank_top=5)
    assert len(hits) == 8
    head, tail = hits[:5], hits[5:]
    # the reranked head is the vector top 5, ordered by the reranker's own scores
    assert {h.id for h in head} == {h.id for h in plain[:5]}
    expected = reranker.score(Item(text=query), [Item(text=TEXTS[int(h.id[1:])]) for h in plain[:5]])
    order = [plain[i].id for i in np.argsort(-expected, kind="stable")]
    assert [h.id for h in head] == order
    np.testing.assert_allclose([h.rerank_score for h in head], np.sort(expected)[::-1], atol=1e-5)
    # the rest keep their vector order and score, unreranked
    assert [h.id for h in tail] == [h.id for h in plain[5:]]
    assert all(h.rerank_score is None for h in tail)
    assert all(0.0 <= h.rerank_score <= 1.0 for h in head)
    assert head[0].payload["n"] == int(head[0].id[1:])
    # k cuts after reranking; a filter applies to the candidates
    assert [h.id for h in coll.search(query, k=2, candidates=8, rerank_top=5)] == order[:2]
    filtered = coll.search(query, k=8, filter={"n": {"any": [0, 3]}})
    assert sorted(h.id for h in filtered) == ["t0", "t3"] and all(h.rerank_score is not None for h in filtered)
    coll.close()


def test_searcher_directly_and_errors(tmp_path: Path, models) -> None:  # noqa: ANN001
    embedder, reranker = models
    coll = open_collection("s", root=tmp_path, embedder=embedder)
    coll.add([Item(text=t, id=f"t{i}") for i, t in enumerate(TEXTS)])
    with pytest.raises(ConfigError, match="rerank=True but this searcher has no reranker"):
        coll.search("x", rerank=True)
    s = Searcher(embedder, coll.store, reranker)
    hits = s.search(Item(text="bread"), k=3, candidates=8)
    assert len(hits) == 3 and all(h.rerank_score is not None for h in hits)
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)
    coll.close()


def test_item_from_payload() -> None:
    mm = frozenset({"text", "image", "video"})
    assert item_from_payload({"kind": "text", "text": "hi"}, {"text"}).text == "hi"
    v = item_from_payload({"kind": "video", "video": "/x.mp4", "video_start": 2.0, "video_end": 4.0}, mm)
    assert (v.video, v.video_start, v.video_end, v.text) == ("/x.mp4", 2.0, 4.0, None)
    assert item_from_payload({"kind": "image", "image": "/a.png"}, {"text"}) is None
    assert item_from_payload({"kind": "pdf", "path": "/nope.pdf", "page": 1, "text": "layer"}, {"text"}).text == "layer"
    # segment bounds that are not numbers are dropped, not passed on to the item
    odd = item_from_payload({"kind": "video", "video": "/x.mp4", "video_start": "2", "video_end": True}, mm)
    assert (odd.video_start, odd.video_end) == (None, None)
