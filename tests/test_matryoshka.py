"""Every Matryoshka success path, on a tiny Qwen3-VL checkpoint that declares dims 16 and 32 beside 64.

Each path must give the prefix of the full vector, re-normalised: the API's ``dimensions``, ``omniret embed
--dim``, ``omniret index --dim`` and a collection opened at a smaller dim.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.cli import app
from omniret.settings import Settings

TEXTS = ["a red square", "quarterly revenue grew", "how do rerankers work?"]
runner = CliRunner()


def prefix(full: np.ndarray, dim: int) -> np.ndarray:
    """The reference: the first ``dim`` components of each row, L2-normalised again."""
    cut = full[:, :dim]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def emb(tiny_vl_matryoshka: Path):  # noqa: ANN201
    from omniret.embed import load_embedder

    e = load_embedder(tiny_vl_matryoshka, device="cpu")
    assert e.dims == (16, 32, 64)
    return e


@pytest.fixture(scope="module")
def full(emb) -> np.ndarray:  # noqa: ANN001
    return emb.embed(TEXTS)


def test_the_prefixes_differ_from_the_full_vector(full: np.ndarray) -> None:
    # a prefix that equalled a slice of the full vector (no re-normalisation) would pass nothing below
    assert not np.allclose(np.linalg.norm(full[:, :16], axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("dim", [16, 32])
def test_api_dimensions(emb, full: np.ndarray, tmp_path: Path, dim: int) -> None:  # noqa: ANN001
    settings = Settings(home=tmp_path / "home", rerank_model="")
    with BackgroundServer(create_app(settings, embedder=emb)) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as client:
        r = client.post("/v1/embeddings", json={"input": TEXTS, "dimensions": dim, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], dtype=np.float32)
    assert got.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(got, prefix(full, dim), atol=1e-5)


def test_cli_embed_dim(tiny_vl_matryoshka: Path, full: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    r = runner.invoke(app, ["embed", *TEXTS, "--model", str(tiny_vl_matryoshka), "--device", "cpu", "--dim", "16",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(out), prefix(full, 16), atol=1e-5)


def test_cli_index_dim(tiny_vl_matryoshka: Path, emb, full: np.ndarray, tmp_path: Path) -> None:  # noqa: ANN001
    from omniret.index import open_collection

    manifest = tmp_path / "items.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    root = tmp_path / "cols"
    r = runner.invoke(app, ["index", str(manifest), "--collection", "small", "--model", str(tiny_vl_matryoshka),
                            "--dim", "32", "--root", str(root)])
    assert r.exit_code == 0, r.output
    col = open_collection("small", root=root, create=False, embedder=emb)
    try:
        assert col.dim == 32 and col.manifest["dim"] == 32
        stored = np.array([row["vector"] for row in col.get([f"t{i}" for i in range(len(TEXTS))])])
    finally:
        col.close()
    np.testing.assert_allclose(stored, prefix(full, 32), atol=1e-5)


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_collection_at_a_smaller_dim(emb, full: np.ndarray, tmp_path: Path, backend: str) -> None:  # noqa: ANN001
    from omniret.index import open_collection

    col = open_collection("c", root=tmp_path, embedder=emb, dim=16, backend=backend)
    try:
        col.add([{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)])
        stored = np.array([row["vector"] for row in col.get([f"t{i}" for i in range(len(TEXTS))])])
        np.testing.assert_allclose(stored, prefix(full, 16), atol=1e-5)
        # the query is cut the same way: each text finds itself first, with cosine 1
        hits = col.search(TEXTS[1], k=3, rerank=False)
        assert hits[0].id == "t1" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    finally:
        col.close()

