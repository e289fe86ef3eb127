"""Collections over real HTTP with all-MiniLM-L6-v2 and real FAISS collections on disk.

Also: a collection indexed by the CLI (``omniret index``) is served as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "docs"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collections")


@pytest.fixture(scope="module")
def server(minilm_path: Path, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    from omniret.cli import app as cli
    from omniret.embed import load_embedder

    # a collection built by the CLI before the server starts
    res = CliRunner().invoke(cli, ["index", str(SAMPLES), "--collection", "samples", "--model", str(minilm_path),
                                   "--root", str(root), "--json"])
    assert res.exit_code == 0, res.output
    settings = Settings(home=tmp_path_factory.mktemp("home"), collections_root=root, rerank_model="")
    with BackgroundServer(create_app(settings, embedder=load_embedder(minilm_path))) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_cli_indexed_collection_is_served(client: httpx.Client) -> None:
    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert "samples" in names
    info = client.get("/v1/collections/samples").json()
    assert info["count"] > 0 and info["dim"] == 384 and "path" not in info
    r = client.post("/v1/collections/samples/search", json={"text": "approximate nearest neighbour index on disk",
                                                             "k": 3})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["payload"]["source"] == "faiss.md"
    assert all("path" not in h["payload"] for h in hits) and str(SAMPLES) not in r.text  # no server paths
    assert hits[0]["rerank_score"] is None and hits[0]["thumbnail"] is None and r.json()["reranked"] is False
    # a text chunk has nothing to preview, and nothing outside the collection's storage is rendered
    r = client.get(f"/v1/collections/samples/items/{quote(hits[0]['id'], safe='')}/thumbnail")
    assert r.status_code == 404 and r.json()["error"]["field"] == "id"


def test_collection_lifecycle(client: httpx.Client) -> None:
    r = client.post("/v1/collections", json={"name": "notes", "model": "minilm"})
    assert r.status_code == 201, r.text
    assert r.json()["count"] == 0 and r.json()["name"] == "notes"
    r = client.post("/v1/collections", json={"name": "notes"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"

    items = [{"id": "cat", "text": "The cat sleeps on the warm windowsill.", "metadata": {"lang": "en"}},
             {"id": "bond", "text": "Government bond yields rose sharply on Tuesday.", "metadata": {"lang": "en"}},
             {"id": "katze", "text": "Die Katze schläft auf der Fensterbank.", "metadata": {"lang": "de"}}]
    r = client.post("/v1/collections/notes/items", json={"items": items})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 3
    r = client.post("/v1/collections/notes/search", json={"text": "a kitten napping in the sun", "k": 2})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] == "cat"
    r = client.post("/v1/collections/notes/search", json={"text": "a kitten napping", "k": 3,
                                                           "filter": {"lang": "de"}})
    assert [h["id"] for h in r.json()["hits"]] == ["katze"]

    r = client.post("/v1/collections/notes/files", files=[("files", ("garden.txt", b"Tomatoes need full sun and "
                                                                                   b"regular watering.", "text/plain"))])
    assert r.status_code == 200, r.text
    assert r.json()["indexed_items"] == 1 and r.json()["added"] == 1
    r = client.post("/v1/collections/notes/search", json={"text": "growing vegetables", "k": 1})
    assert r.json()["hits"][0]["payload"]["source"].endswith("garden.txt")

    r = client.request("DELETE", "/v1/collections/notes/items", json={"ids": ["bond"]})
    assert r.status_code == 200 and r.json()["count"] == 3
    assert 'omniret_items_indexed_total{collection="notes"} 4.0' in client.get("/metrics").text
    assert client.delete("/v1/collections/notes").json() == {"name": "notes", "deleted": True}
    r = client.get("/v1/collections/notes")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(("method", "path", "body", "status", "field", "match"), [
    ("POST", "/v1/collections", {"name": "../evil"}, 422, "name", "pattern"),
    ("POST", "/v1/collections", {"name": "x", "model": "gpt-4"}, 400, "model", "not served here"),
    ("POST", "/v1/collections", {"name": "x", "dim": 128}, 400, "dimensions", "dimensions=128"),
    ("POST", "/v1/collections", {"name": "x", "url": "http://10.0.0.1:6333", "backend": "qdrant"}, 400, "url",
     "allow_remote_urls"),
    ("GET", "/v1/collections/nothing", None, 404, "name", "no collection named 'nothing'"),
    ("POST", "/v1/collections/nothing/search", {"text": "q"}, 404, "name", "no collection"),
    # the library's one name rule and message, at the service's 400
    ("POST", "/v1/collections/-x/search", {"text": "q"}, 400, "name",
     "collection name '-x': use letters, digits, '.', '_' or '-' (at most 128, starting with a letter or digit)"),
    ("POST", "/v1/collections/samples/search", {}, 400, "text", "give text and/or image"),
    ("POST", "/v1/collections/samples/search", {"text": "q", "rerank": True}, 400, "rerank", "without a reranker"),
    ("POST", "/v1/collections/samples/search", {"text": "q", "k": 0}, 422, "k", "greater than"),
    ("POST", "/v1/collections/samples/search", {"text": "q", "filter": {"page": {"near": 3}}}, 400, "filter",
     "filter"),
    ("POST", "/v1/collections/samples/items", {"items": [{"id": "x", "text": "real", "metadata": {"text": "spoof"}}]},
     400, None, "metadata key(s) ['text'] are reserved"),
    ("GET", "/v1/collections/samples/items/..%2F..%2Fetc%2Fpasswd/thumbnail", None, 404, "id", "no item"),
])
def test_collection_errors(client: httpx.Client, method: str, path: str, body: dict | None, status: int,
                           field: str | None, match: str) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert match in err["message"], err
    if field is not None:
        assert err.get("field") == field, err
    assert client.get("/healthz").status_code == 200


def test_qdrant_backend_collection(client: httpx.Client) -> None:
    r = client.post("/v1/collections", json={"name": "qd", "backend": "qdrant"})
    assert r.status_code == 201, r.text
    assert r.json()["backend"] == "qdrant"
    items = [{"id": "1", "text": "espresso brewing pressure"}, {"id": "2", "text": "tax return deadline"}]
    assert client.post("/v1/collections/qd/items", json={"items": items}).json()["added"] == 2
    hits = client.post("/v1/collections/qd/search", json={"text": "making coffee", "k": 1}).json()["hits"]
    assert hits[0]["id"] == "1"
    assert client.delete("/v1/collections/qd").status_code == 200
