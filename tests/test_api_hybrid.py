"""Search modes over real HTTP (uvicorn on loopback, MiniLM, a real FAISS collection): mode, fusion and
alpha in the body, every score per hit, and 400s that name the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings

#: built so that the three first stages disagree on the query below: dense (MiniLM) ranks the paraphrase
#: "dense" third, BM25 ranks the label-only "lex" second, and reciprocal rank fusion puts "mid" (second in
#: dense, third in lexical) before "lex" and leaves "dense" out of the top 3. The unrelated notes keep the
#: query terms rare, as in a real corpus (BM25's idf turns negative for a term in most documents).
NOTES = [
    {"id": "dense", "text": "Why a website's backend goes down under heavy traffic, and how to diagnose the outage."},
    {"id": "both", "text": "A web server crash: the error log shows the cause."},
    {"id": "lex", "text": "Gardening diary: tray label QZX-8841, tomatoes planted late."},
    {"id": "mid", "text": "Server error codes explained."},
    {"id": "f1", "text": "How to bake sourdough bread at home."},
    {"id": "f2", "text": "The history of the Roman empire in ten minutes."},
    {"id": "f3", "text": "Knitting a scarf for beginners."},
    {"id": "f4", "text": "Training for a marathon in sixteen weeks."},
    {"id": "f5", "text": "A guide to watercolour painting."},
    {"id": "f6", "text": "Birdwatching on the coast in winter."},
]
QUERY = "web server crash QZX-8841"


@pytest.fixture(scope="module")
def client(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from omniret.embed import load_embedder

    root = tmp_path_factory.mktemp("collections")
    settings = Settings(home=tmp_path_factory.mktemp("home"), collections_root=root, rerank_model="")
    with BackgroundServer(create_app(settings, embedder=load_embedder(minilm_path))) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "notes"}).status_code in (200, 201)
        r = c.post("/v1/collections/notes/items", json={"items": NOTES})
        assert r.status_code == 200, r.text
        yield c


def _search(client: httpx.Client, **body: object) -> list[dict[str, Any]]:
    r = client.post("/v1/collections/notes/search", json={"text": QUERY, **body})
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def test_each_mode_ranks_by_its_own_first_stage(client: httpx.Client) -> None:
    dense = _search(client, k=3)
    assert [h["id"] for h in dense] == ["both", "mid", "dense"]
    assert all(h["dense_score"] == h["score"] and h["lexical_score"] is None and h["fused_score"] is None
               for h in dense)
    lexical = _search(client, k=3, mode="lexical")
    assert [h["id"] for h in lexical] == ["both", "lex", "mid"]
    assert all(h["lexical_score"] == h["score"] and h["dense_score"] is None for h in lexical)


def test_hybrid_is_the_reciprocal_rank_fusion_of_both_lists(client: httpx.Client) -> None:
    """The fused top 3 is neither side's: a hybrid mode that returned the dense or the lexical order fails."""
    dense = [h["id"] for h in _search(client, k=10)]
    lexical = [h["id"] for h in _search(client, k=10, mode="lexical")]
    rrf = {i: sum(1 / (60 + side.index(i) + 1) for side in (dense, lexical) if i in side) for i in dense}
    expected = sorted(rrf, key=lambda i: -rrf[i])[:3]
    assert expected == ["both", "mid", "lex"]
    assert expected not in (dense[:3], lexical[:3])
    hybrid = _search(client, k=3, mode="hybrid")
    assert [h["id"] for h in hybrid] == expected
    for h in hybrid:
        assert h["fused_score"] == h["score"] == pytest.approx(rrf[h["id"]], rel=1e-6)
    # each side's own score rides along, also for "lex", which is outside the dense top 3 but a dense candidate
    assert all(h["dense_score"] is not None and h["lexical_score"] is not None for h in hybrid)


def test_weighted_fusion_follows_alpha(client: httpx.Client) -> None:
    dense = [h["id"] for h in _search(client, k=3)]
    lexical = [h["id"] for h in _search(client, k=3, mode="lexical")]
    weighted = {alpha: [h["id"] for h in _search(client, k=3, mode="hybrid", fusion="weighted", alpha=alpha)]
                for alpha in (0.0, 1.0)}
    assert weighted == {0.0: lexical, 1.0: dense}


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"mode": "fuzzy"}, "mode", "mode='fuzzy': choose one of dense, lexical, hybrid"),
    ({"mode": "hybrid", "fusion": "max"}, "fusion", "fusion='max': choose one of rrf, weighted"),
    ({"mode": "hybrid", "fusion": "weighted", "alpha": 1.5}, "alpha", "alpha=1.5: must be a number in [0, 1]"),
    ({"mode": "lexical", "text": None, "image": "data:image/png;base64,AAAA"}, "text", "needs query text"),
])
def test_bad_mode_fusion_alpha_are_400s_naming_the_field(client: httpx.Client, body: dict, field: str,
                                                         message: str) -> None:
    r = client.post("/v1/collections/notes/search", json={"text": "x", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["field"] == field and message in err["message"]

