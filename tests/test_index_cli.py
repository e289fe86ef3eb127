"""``omniret index`` / ``search`` / ``collections`` through typer's CliRunner, on real files and models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniret.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _invoke(*args: str):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    shutil.copytree(REPO / "samples" / "docs", d)
    return d


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_index_search_collections(tmp_path: Path, docs: Path, minilm_path: Path, backend: str) -> None:
    root = tmp_path / "cols"
    r = _invoke("index", docs, "--collection", "samples", "--model", minilm_path, "--root", root,
                "--backend", backend)
    assert r.exit_code == 0, r.output
    n = len(list(docs.iterdir()))
    assert f"indexed {n} items from {n} files" in r.output
    r = _invoke("search", "how does two-stage retrieval work", "--collection", "samples", "--root", root,
                "--no-rerank", "--json", "-k", "3")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert hits[0]["id"] == "rerankers.txt#chunk=0" and len(hits) == 3 and hits[0]["rerank_score"] is None
    r = _invoke("search", "vector database", "--collection", "samples", "--root", root, "--no-rerank",
                "--filter", "source=qdrant.md,faiss.md", "--json")
    assert sorted(h["payload"]["source"] for h in json.loads(r.stdout)) == ["faiss.md", "qdrant.md"]
    r = _invoke("search", "vector database", "--collection", "samples", "--root", root, "--no-rerank")
    assert r.exit_code == 0 and "samples:" in r.output
    # re-running skips unchanged files
    r = _invoke("index", docs, "--collection", "samples", "--root", root, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["unchanged"] == n
    r = _invoke("collections", "list", "--root", root, "--json")
    assert [c["name"] for c in json.loads(r.stdout)] == ["samples"]
    r = _invoke("collections", "info", "samples", "--root", root, "--json")
    info = json.loads(r.stdout)
    assert (info["count"], info["dim"], info["backend"], info["sources"]) == (n, 384, backend, n)
    r = _invoke("collections", "delete", "samples", "--root", root, "--yes")
    assert r.exit_code == 0 and not (root / "samples").exists()


def test_cli_errors_and_strict(tmp_path: Path, docs: Path, minilm_path: Path) -> None:
    root = tmp_path / "cols"
    (docs / "empty.md").write_bytes(b"")
    r = _invoke("index", docs, "--collection", "c", "--model", minilm_path, "--root", root)
    assert r.exit_code == 0 and "failed empty.md: empty file" in r.output.replace("\n", " ")
    (docs / "empty2.md").write_bytes(b"")
    r = _invoke("index", docs, "--collection", "c", "--root", root, "--strict")
    assert r.exit_code == 2
    r = _invoke("search", "x", "--collection", "missing", "--root", root, "--no-rerank")
    assert r.exit_code == 1 and "no collection 'missing'" in r.output
    r = _invoke("search", "--collection", "c", "--root", root)
    assert r.exit_code == 1 and "query text and/or --image" in r.output
    r = _invoke("search", "x", "--collection", "c", "--root", root, "--no-rerank", "--filter", "bad")
    assert r.exit_code == 1 and "write key=value" in r.output
    r = _invoke("index", docs, "--collection", "c2", "--root", root, "--model", minilm_path, "--backend", "faiss",
                "--qdrant-url", "http://localhost:6333")
    assert r.exit_code == 1 and "url= is for a Qdrant server" in r.output
    r = _invoke("collections", "delete", "nope", "--root", root, "--yes")
    assert r.exit_code == 1


def test_search_with_reranker(tmp_path: Path, docs: Path, tiny_vl_embedding: Path, tiny_vl_reranker: Path) -> None:
    root = tmp_path / "cols"
    r = _invoke("index", docs, "--collection", "vl", "--model", tiny_vl_embedding, "--root", root)
    assert r.exit_code == 0, r.output
    r = _invoke("search", "reranking", "--collection", "vl", "--root", root, "--reranker", tiny_vl_reranker,
                "--json", "-k", "4", "--rerank-top", "3")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    scores = [h["rerank_score"] for h in hits[:3]]
    assert None not in scores and scores == sorted(scores, reverse=True) and hits[3]["rerank_score"] is None


@pytest.mark.parametrize("command", ["embed", "index", "search", "rerank"])
def test_omniret_device_reaches_every_model_loading_command(command: str, minilm_path: Path,
                                                            tiny_text_reranker: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """OMNIRET_DEVICE is read once at the CLI edge and handed to the loaders (a bogus one must fail there)."""
    cli = app
    samples = Path(__file__).resolve().parents[1] / "samples" / "docs"
    root = tmp_path / "root"
    if command == "search":  # a collection to search, built without the variable
        r = CliRunner().invoke(cli, ["index", str(samples), "-c", "s", "--model", str(minilm_path), "--root",
                                     str(root), "--json"])
        assert r.exit_code == 0, r.output
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "a"}\n')
    args = {"embed": ["embed", "x", "--model", str(minilm_path), "-o", str(tmp_path / "v.npy")],
            "index": ["index", str(samples), "-c", "s", "--model", str(minilm_path), "--root", str(root)],
            "search": ["search", "query", "-c", "s", "--root", str(root), "--no-rerank"],
            "rerank": ["rerank", "--query", "q", "--docs", str(docs), "--model", str(tiny_text_reranker)]}[command]
    monkeypatch.setenv("OMNIRET_DEVICE", "nope")
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0
    assert "device type at start of device string: nope" in str(r.exception) + r.output
