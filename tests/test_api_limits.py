"""Auth and limits over real HTTP: every refusal is a JSON 4xx naming the field or item, and the server
keeps serving afterwards."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings

KEY = "k-limits"


@pytest.fixture(scope="module")
def server(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    from omniret.embed import load_embedder

    settings = Settings(home=tmp_path_factory.mktemp("home"), rerank_model="", api_keys=["other", KEY],
                        max_body_bytes=200_000, max_items_per_request=4, max_image_pixels=64 * 64,
                        max_video_seconds=1.0)
    with BackgroundServer(create_app(settings, embedder=load_embedder(minilm_path))) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def _still_serving(c: httpx.Client) -> None:
    assert c.get("/healthz").status_code == 200
    r = c.post("/v1/embeddings", json={"input": "still here"})
    assert r.status_code == 200, r.text


def _png(w: int, h: int, mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _video(path: Path, seconds: float, fps: int = 10) -> str:
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 5 % 255, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def test_auth(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == {"type": "unauthorized", "field": "Authorization",
                                     "message": "missing API key: send 'Authorization: Bearer <key>'"}
        r = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
        assert c.get("/metrics").status_code == 401
        assert c.get("/v1/collections").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200  # the page asks for the key itself
        r = c.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer other"})
        assert r.status_code == 200


def test_body_size_limit_by_header_and_by_stream(client: httpx.Client) -> None:
    big = {"input": ["word " * 50_000]}
    r = client.post("/v1/embeddings", json=big)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"
    assert "max_body_bytes" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the stream
        yield b'{"input": ["'
        for _ in range(50):
            yield b"x" * 10_000
        yield b'"]}'

    r = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "body_too_large"
    _still_serving(client)


def test_items_per_request_limit(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d", "e"]})
    assert r.status_code == 413
    assert r.json()["error"] == {"type": "too_many_items", "field": "input", "message":
                                 "input: 5 items, over the limit of 4 per request (max_items_per_request)"}
    _still_serving(client)


@pytest.mark.parametrize(("item", "match"), [
    ({"image": "http://169.254.169.254/latest/meta-data"}, "remote URLs are not fetched"),
    ({"image": "file:///etc/passwd"}, "server-side paths are not read"),
    ({"video": "../../etc/passwd"}, "server-side paths are not read"),
    ({"image": "ftp://example.com/x.png"}, "only data: URIs and http"),
    ({"image": "data:image/png;base64,@@@"}, "image: data: URI is not valid base64"),
    ({"image": [_png(8, 8), "data:image/png;base64,@@@"]},
     "image[1]: data: URI is not valid base64"),
    ({"video": ["data:image/png;base64,@@@"]}, "video[0]: data: URI is not valid base64"),
    ({"video": "data:video/mp4;base64,@@@"}, "video: data: URI is not valid base64"),
    ({"text": "x", "metadata": "not an object"}, "metadata must be an object"),
    ({"image": "data:image/png,rawbytes"}, "must be base64-encoded"),
    ({"image": "data:text/plain;base64,aGVsbG8="}, "expected image/"),
    ({"image": "data:image/png;base64,aGVsbG8="}, "not a decodable image"),
    ({"video": "data:video/mp4;base64,aGVsbG8="}, "not a decodable video"),
    ({"image": 12}, "image must be a data: URI string"),
    ({"text": "   "}, "empty text"),
    ({}, "empty item"),
    ({"txt": "typo"}, "unknown key"),
])
def test_bad_items_are_named(client: httpx.Client, item: dict, match: str) -> None:
    r = client.post("/v1/embeddings", json={"input": ["fine", item]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_item" and err["item"]["index"] == 1 and err["item"]["field"] == "input"
    assert match in err["item"]["reason"], err
    _still_serving(client)


def test_image_pixel_limit_and_decompression_bomb(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", json={"input": [{"image": _png(65, 64), "id": "big"}]})
    assert r.status_code == 400
    item = r.json()["error"]["item"]
    assert item["id"] == "big" and "65x64 = 4160 pixels, over the limit of 4096 (max_image_pixels)" in item["reason"]
    # a real bomb: 15000 x 15000 one-bit pixels in a ~30 kB PNG (PIL refuses it outright)
    r = client.post("/v1/embeddings", json={"input": [{"image": _png(15000, 15000, "1")}]})
    assert r.status_code == 400 and "pixels" in r.json()["error"]["item"]["reason"]
    _still_serving(client)


def test_video_length_limit(client: httpx.Client, tmp_path: Path) -> None:
    r = client.post("/v1/embeddings", json={"input": [{"video": _video(tmp_path / "v.mp4", 2.0)}]})
    assert r.status_code == 400
    assert "over the limit of 1 s (max_video_seconds)" in r.json()["error"]["item"]["reason"]
    _still_serving(client)


def test_model_that_cannot_take_the_modality(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", json={"input": [{"image": _png(8, 8)}]})
    assert r.status_code == 400 and "cannot embed image" in r.json()["error"]["item"]["reason"]
    _still_serving(client)


def test_malformed_json_and_unknown_routes(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", content=b'{"input": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    assert r.json()["error"]["message"].startswith("body: not valid JSON")
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.get("/v1/embeddings")
    assert r.status_code == 405 and "error" in r.json()
    assert client.get("/static/../app.py").status_code == 404
    _still_serving(client)


def test_rerank_without_a_reranker_is_a_400(client: httpx.Client) -> None:
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_reranker"
