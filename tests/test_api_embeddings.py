"""/v1/embeddings over real HTTP (uvicorn on a loopback port) with all-MiniLM-L6-v2.

The official ``openai`` client must work unchanged (its default base64 encoding and float), results must
equal the embedder's own, and concurrent requests must each get their own rows back.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings

KEY = "test-key-1"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm(minilm_path: Path):
    from omniret.embed import load_embedder

    return load_embedder(minilm_path)


@pytest.fixture(scope="module")
def server(minilm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, rerank_model="", api_keys=[KEY], batch_wait_ms=5.0)
    with BackgroundServer(create_app(settings, embedder=minilm)) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def test_openai_client_default_base64_and_float(server: BackgroundServer, minilm) -> None:
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY)
    texts = ["a cat sits on the mat", "quarterly revenue grew", "how do rerankers work?"]
    want = minilm.embed(texts)
    out = oai.embeddings.create(model="minilm", input=texts)  # the client asks for base64 and decodes it
    got = np.array([d.embedding for d in sorted(out.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert out.model == MINILM and out.usage.prompt_tokens > 0
    out = oai.embeddings.create(model=MINILM, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(np.array(out.data[0].embedding, dtype=np.float32), want[0], atol=1e-6)


def test_response_shape_and_base64_bytes(client: httpx.Client, minilm) -> None:
    r = client.post("/v1/embeddings", json={"input": ["one", "two"], "model": "minilm", "encoding_format": "base64",
                                            "user": "ignored"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == MINILM
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    tokens = sum(len(minilm.model.tokenizer(t)["input_ids"]) for t in ("one", "two"))  # [CLS] one [SEP]: 3 each
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens} and tokens == 6
    vec = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, minilm.embed(["two"])[0], atol=1e-6)


def test_item_objects_and_instruction_extension(client: httpx.Client, minilm) -> None:
    r = client.post("/v1/embeddings", json={"input": [{"text": "a red bicycle"}, "a red bicycle"],
                                            "instruction": "Find the matching sentence"})
    assert r.status_code == 200, r.text
    a, b = (np.array(d["embedding"]) for d in r.json()["data"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_models_list(client: httpx.Client, minilm) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == MINILM and body["data"][0]["dim"] == 384


@pytest.mark.parametrize(("payload", "status", "field", "match"), [
    ({"input": ["x"], "dimensions": 12}, 400, "dimensions", "dimensions=12 is not supported"),
    ({"input": ["x"], "model": "text-embedding-3-small"}, 400, "model", "not served here"),
    ({"input": [1, 2, 3]}, 400, "input", "token-id arrays are not supported"),
    ({"input": [[1, 2], [3]]}, 400, "input", "token-id arrays are not supported"),
    ({"input": []}, 400, "input", "must not be empty"),
    ({"input": ["x"], "encoding_format": "int8"}, 422, "encoding_format", "encoding_format"),
    ({"input": ["x"], "dimensions": "many"}, 422, "dimensions", "dimensions"),
    ({"model": "minilm"}, 422, "input", "Field required"),
])
def test_bad_requests_name_the_field(client: httpx.Client, payload: dict, status: int, field: str,
                                     match: str) -> None:
    r = client.post("/v1/embeddings", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and match in err["message"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_concurrent_requests_get_their_own_rows(client: httpx.Client, server: BackgroundServer, minilm) -> None:
    n = 16
    inputs = [[f"request {i} sentence {j} about topic {i * 7 + j}" for j in range(1 + i % 4)] for i in range(n)]
    want = [minilm.embed(x) for x in inputs]
    before = _metric(client, "omniret_batch_size_requests_count")
    got: list[np.ndarray | None] = [None] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            barrier.wait()
            r = c.post("/v1/embeddings", json={"input": inputs[i], "encoding_format": "float"})
            assert r.status_code == 200, r.text
            got[i] = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(n):
        assert got[i] is not None, f"request {i} failed"
        np.testing.assert_allclose(got[i], want[i], atol=1e-5)
    batches = _metric(client, "omniret_batch_size_requests_count") - before
    assert batches < n, f"{n} concurrent requests ran in {batches} model batches: nothing was merged"


def test_bad_item_fails_only_its_own_request(server: BackgroundServer, minilm) -> None:
    n = 12
    results: list[int] = [0] * n
    vectors: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        bad = i % 3 == 0
        inp = ["fine text", "   "] if bad else [f"good request {i}"]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            barrier.wait()
            r = c.post("/v1/embeddings", json={"input": inp})
            results[i] = r.status_code
            if r.status_code == 200:
                vectors[i] = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
            else:
                assert r.json()["error"]["item"]["index"] == 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [400 if i % 3 == 0 else 200 for i in range(n)]
    for i, v in vectors.items():
        np.testing.assert_allclose(v, minilm.embed([f"good request {i}"])[0], atol=1e-5)


def test_micro_batching_off_gives_the_same_vectors(minilm, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, rerank_model="", micro_batching=False)
    with BackgroundServer(create_app(settings, embedder=minilm)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/embeddings", json={"input": ["alpha", "beta"]})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, minilm.embed(["alpha", "beta"]), atol=1e-6)
        assert c.get("/readyz").json()["status"] == "ready"


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    client.post("/v1/embeddings", json={"input": "metrics please"})
    text = client.get("/metrics").text
    for name in ("omniret_request_latency_seconds_bucket", "omniret_batch_size_items_bucket",
                 "omniret_queue_depth", "omniret_items_indexed", "omniret_items_embedded_total"):
        assert name in text
    assert 'route="/v1/embeddings"' in text


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
