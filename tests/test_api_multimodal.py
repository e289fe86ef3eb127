"""Multimodal service paths with the tiny Qwen3-VL checkpoints: image/video embeddings, rerank, and a FAISS
collection that ingests an uploaded PDF, video and image, then finds them (with both scores)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from media_files import make_pdf, make_video, picture
from PIL import Image

from omniret import Item
from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.settings import Settings


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def models(tiny_vl_embedding: Path, tiny_vl_reranker: Path):
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker

    return load_embedder(tiny_vl_embedding), load_reranker(tiny_vl_reranker)


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media-root")


@pytest.fixture(scope="module")
def server(models, server_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    emb, rr = models
    settings = Settings(home=tmp_path_factory.mktemp("home"), collections_root=server_root)
    with BackgroundServer(create_app(settings, embedder=emb, reranker=rr)) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c


def test_image_text_and_video_items(client: httpx.Client, models, tmp_path: Path) -> None:
    emb, _ = models
    png = _png_bytes(picture("purple", "cat"))
    video = make_video(tmp_path / "clip.mp4")
    r = client.post("/v1/embeddings", json={"input": [
        {"image": _data_uri(png, "image/png")},
        {"text": "a purple card", "image": _data_uri(png, "image/png")},
        {"video": _data_uri(video.read_bytes(), "video/mp4")},
        "plain text"], "instruction": "Find the picture"})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    want = emb.embed([Item(image=png), Item(text="a purple card", image=png), Item(video=str(video)),
                      Item(text="plain text")], instruction="Find the picture")
    np.testing.assert_allclose(got, want, atol=1e-4)
    if len(emb.dims) > 1:  # Matryoshka through the OpenAI field
        d = min(emb.dims)
        r = client.post("/v1/embeddings", json={"input": ["plain text"], "dimensions": d,
                                                "instruction": "Find the picture"})
        np.testing.assert_allclose(np.array(r.json()["data"][0]["embedding"], dtype=np.float32),
                                   emb.embed(["plain text"], instruction="Find the picture", dim=d)[0], atol=1e-4)


def test_rerank_cohere_shape(client: httpx.Client, models) -> None:
    _, rr = models
    png = _png_bytes(picture("orange", "fox"))
    docs = ["a fox in the snow", {"image": _data_uri(png, "image/png")}, "tax forms"]
    r = client.post("/v1/rerank", json={"query": "fox", "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    want = rr.score(Item(text="fox"), [Item(text=docs[0]), Item(image=png), Item(text=docs[2])])
    order = [int(i) for i in np.argsort(-want, kind="stable")[:2]]
    assert [x["index"] for x in body["results"]] == order
    for res in body["results"]:
        assert 0.0 <= res["relevance_score"] <= 1.0
        assert res["relevance_score"] == pytest.approx(float(want[res["index"]]), abs=1e-4)
        assert res["document"] == (docs[res["index"]] if isinstance(docs[res["index"]], dict)
                                   else {"text": docs[res["index"]]})
    assert body["model"] and body["usage"]["total_tokens"] >= 1
    r = client.post("/v1/rerank", json={"query": "fox", "documents": ["x", {"image": "/etc/hosts"}]})
    assert r.status_code == 400 and r.json()["error"]["item"]["field"] == "documents"
    assert r.json()["error"]["item"]["index"] == 1


def test_upload_pdf_video_image_then_search(client: httpx.Client, tmp_path: Path) -> None:
    assert client.post("/v1/collections", json={"name": "media"}).status_code == 201
    pdf = make_pdf(tmp_path / "report.pdf")
    video = make_video(tmp_path / "clip.mp4")
    png = _png_bytes(picture("maroon", "logo"))
    files = [("files", ("report.pdf", pdf.read_bytes(), "application/pdf")),
             ("files", ("clip.mp4", video.read_bytes(), "video/mp4")),
             ("files", ("logo.png", png, "image/png"))]
    r = client.post("/v1/collections/media/files", files=files)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["indexed_files"] == 3 and report["failed"] == [] and report["added"] == 4  # 2 pages + 1 + 1

    r = client.post("/v1/collections/media/search", json={"text": "invoices", "k": 10, "rerank": True,
                                                           "candidates": 10})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert r.json()["reranked"] is True and len(hits) == 4
    kinds = sorted(h["payload"]["kind"] for h in hits)
    assert kinds == ["image", "pdf", "pdf", "video"]
    assert all(h["rerank_score"] is not None and 0 <= h["rerank_score"] <= 1 for h in hits)
    pages = sorted(h["payload"]["page"] for h in hits if h["payload"]["kind"] == "pdf")
    assert pages == [1, 2]
    clip = next(h for h in hits if h["payload"]["kind"] == "video")
    assert clip["payload"]["video_start"] == 0 and clip["payload"]["video_end"] == pytest.approx(2.0, abs=0.2)
    for h in hits:  # every hit lives in the collection's storage, so each has a preview
        assert h["thumbnail"] == f"/v1/collections/media/items/{quote(h['id'], safe='')}/thumbnail"
        t = client.get(h["thumbnail"])
        assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg", (h, t.text)
        assert max(Image.open(io.BytesIO(t.content)).size) <= 320

    # the same image as a query: its own item comes first (identical input, cosine 1)
    r = client.post("/v1/collections/media/search", json={"image": _data_uri(png, "image/png"), "k": 1,
                                                           "rerank": False})
    assert r.status_code == 200, r.text
    top = r.json()["hits"][0]
    assert top["payload"]["kind"] == "image" and top["score"] == pytest.approx(1.0, abs=1e-3)
    assert top["rerank_score"] is None


def test_json_items_with_media_are_kept_and_previewed(client: httpx.Client) -> None:
    assert client.post("/v1/collections", json={"name": "json-media"}).status_code == 201
    png = _png_bytes(picture("teal", "chart"))
    r = client.post("/v1/collections/json-media/items", json={"items": [
        {"id": "chart", "image": _data_uri(png, "image/png"), "metadata": {"team": "sales"}},
        {"id": "memo", "text": "quarterly memo"}]})
    assert r.status_code == 200 and r.json()["added"] == 2, r.text
    r = client.post("/v1/collections/json-media/search", json={"text": "chart", "k": 2, "rerank": True,
                                                                "filter": {"team": "sales"}})
    hit = r.json()["hits"][0]
    assert hit["id"] == "chart" and hit["rerank_score"] is not None and "data:" not in str(hit["payload"])
    # the stored image is named relative to the collection, never by its server path
    assert hit["payload"]["image"].startswith("files/") and "path" not in hit["payload"]
    t = client.get(hit["thumbnail"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    r = client.post("/v1/collections/json-media/items", json={"items": [{"id": "x", "image": "/etc/hosts"}]})
    assert r.status_code == 400 and r.json()["error"]["item"]["field"] == "items"


def _stored(server_root: Path, name: str) -> list[Path]:
    return sorted(p for p in (server_root / name).rglob("*") if p.is_file() and "files" in p.parts)


def test_refused_json_adds_keep_no_media(client: httpx.Client, server_root: Path) -> None:
    assert client.post("/v1/collections", json={"name": "refused"}).status_code == 201
    png = _data_uri(_png_bytes(picture("olive", "kept?")), "image/png")
    # raise: one bad item refuses the request, and the good item's image is not kept
    r = client.post("/v1/collections/refused/items", json={"items": [{"id": "a", "image": png},
                                                                      {"id": "b", "text": ""}]})
    assert r.status_code == 400 and r.json()["error"]["item"]["index"] == 1
    assert _stored(server_root, "refused") == []
    # skip: the failed item's media are removed, the stored item's stay
    other = _data_uri(_png_bytes(picture("navy", "stays")), "image/png")
    r = client.post("/v1/collections/refused/items", json={"on_error": "skip", "items": [
        {"id": "ok", "image": other}, {"id": "bad", "image": png, "metadata": {"path": "/etc/passwd"}}]})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    assert [f["id"] for f in r.json()["failures"]] == ["bad"]
    assert len(_stored(server_root, "refused")) == 1


def test_thumbnails_obey_the_image_limits(models, client: httpx.Client, server_root: Path,
                                          tmp_path: Path) -> None:
    emb, rr = models
    assert client.post("/v1/collections", json={"name": "big"}).status_code == 201
    big = _data_uri(_png_bytes(picture("gray", "big", size=(400, 300))), "image/png")
    assert client.post("/v1/collections/big/items", json={"items": [{"id": "big", "image": big}]}).status_code == 200
    assert client.get("/v1/collections/big/items/big/thumbnail").status_code == 200
    video = make_video(tmp_path / "clip.mp4")  # 64x64 frames
    r = client.post("/v1/collections/big/files", files=[("files", ("clip.mp4", video.read_bytes(), "video/mp4"))])
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    clip = client.post("/v1/collections/big/search", json={"text": "clip", "k": 2, "rerank": False,
                                                           "filter": {"kind": "video"}}).json()["hits"][0]
    assert client.get(clip["thumbnail"]).status_code == 200
    # the same storage served with a lower limit: stored media are measured, not decoded
    settings = Settings(home=tmp_path, collections_root=server_root, max_image_pixels=60 * 60)
    with BackgroundServer(create_app(settings, embedder=emb, reranker=rr)) as srv:
        r = httpx.get(srv.url + "/v1/collections/big/items/big/thumbnail", timeout=60)
        v = httpx.get(srv.url + clip["thumbnail"], timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] == ("the stored image is 400x300 = 120000 pixels, over the limit of "
                                            "3600 (max_image_pixels)")
    assert v.status_code == 422 and "video's frames are 64x64 = 4096 pixels" in v.json()["error"]["message"]
