"""Search modes over real HTTP (uvicorn on loopback, MiniLM, a real FAISS collection): mode, fusion and
alpha in the body, every score per hit, and 400s that name the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings

NOTES = [
    {"id": "n1", "text": "Common error messages in web servers and what they usually mean."},
    {"id": "n4", "text": "Gardening diary: the tomatoes were planted late this year, tray label QZX-8841."},
    {"id": "n6", "text": "Web servers crash under load; here is how to read their error logs."},
]


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


def test_modes_return_every_score(client: httpx.Client) -> None:
    query = "why did my web server crash with error QZX-8841"
    dense = client.post("/v1/collections/notes/search", json={"text": query, "k": 3}).json()["hits"]
    assert dense[-1]["id"] == "n4" and all(h["dense_score"] == h["score"] for h in dense)
    assert all(h["lexical_score"] is None and h["fused_score"] is None for h in dense)
    r = client.post("/v1/collections/notes/search", json={"text": query, "k": 3, "mode": "lexical"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] == "n4"
    r = client.post("/v1/collections/notes/search", json={"text": query, "k": 3, "mode": "hybrid"})
    hits = r.json()["hits"]
    assert {h["id"] for h in hits} == {"n1", "n4", "n6"}
    assert all(h["fused_score"] == h["score"] for h in hits)
    assert any(h["dense_score"] is not None and h["lexical_score"] is not None for h in hits)
    r = client.post("/v1/collections/notes/search", json={"text": query, "k": 3, "mode": "hybrid",
                                                          "fusion": "weighted", "alpha": 0.0})
    assert r.status_code == 200 and r.json()["hits"][0]["id"] == "n4"  # alpha 0: lexical order


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

