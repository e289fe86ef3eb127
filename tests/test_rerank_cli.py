"""``omniret rerank`` on mixed candidates with the tiny Qwen3-VL reranker."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from omniret.cli import app


@pytest.fixture
def docs(tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    lines = [{"text": "a dog on grass", "id": "dog"}, {"image": "p.png", "id": "pic"},
             {"text": "caption", "image": "p.png", "id": "both"}, "a plain string line"]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_rerank_json_matches_the_python_api(tiny_vl_reranker, docs):
    from omniret.cli.embed import read_items_jsonl
    from omniret.rerank import load_reranker

    res = CliRunner().invoke(app, ["rerank", "--query", "a cat", "--docs", str(docs), "--reranker", str(tiny_vl_reranker),
                                   "--top-n", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    scores = load_reranker(tiny_vl_reranker).score("a cat", read_items_jsonl(docs))
    want = np.argsort(-scores, kind="stable")[:3]
    assert [r["index"] for r in out["results"]] == list(want)
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    np.testing.assert_allclose([r["score"] for r in out["results"]], scores[want], atol=1e-6)
    assert out["failures"] == []


def test_rerank_table_and_errors(tiny_vl_reranker, docs):
    runner = CliRunner()
    # -m was this command's reranker before -m meant the embedding model everywhere: it still works, warned
    res = runner.invoke(app, ["rerank", "--query", "a cat", "--docs", str(docs), "-m", str(tiny_vl_reranker)])
    assert res.exit_code == 0, res.output
    assert "--model/-m is deprecated; use --reranker" in res.output
    assert "[image: p.png] caption" in res.stdout and "a dog on grass" in res.stdout
    with docs.open("a") as f:
        f.write(json.dumps({"image": "missing.png", "id": "gone"}) + "\n")
    res = runner.invoke(app, ["rerank", "--query", "a cat", "--docs", str(docs), "--reranker", str(tiny_vl_reranker)])
    assert res.exit_code == 1
    said = " ".join(res.output.split())  # rich wraps long lines
    assert "error: item 4 id='gone': image" in said and "missing.png: no such file" in said
    res = runner.invoke(app, ["rerank", "--query", "a cat", "--docs", str(docs), "--reranker", str(tiny_vl_reranker),
                              "--skip-errors", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["results"]) == 4 and out["failures"][0]["id"] == "gone"
    res = runner.invoke(app, ["rerank", "--docs", str(docs), "--reranker", str(tiny_vl_reranker)])
    assert res.exit_code == 1 and "no query" in res.output


def test_table_prints_full_values_off_a_terminal(tiny_vl_reranker, tmp_path):
    """In a log (not a terminal) no cell is cut to fit 80 columns: the long id and the document stay whole."""
    long_id = "an-identifier-long-enough-that-an-80-column-table-would-cut-it"
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": long_id, "text": "a cat " * 8}) + "\n" + json.dumps({"text": "a dog"}) + "\n")
    res = CliRunner().invoke(app, ["rerank", "--query", "a cat", "--docs", str(docs), "--reranker",
                                   str(tiny_vl_reranker)])
    assert res.exit_code == 0, res.output
    assert long_id in res.stdout and ("a cat " * 8).strip() in res.stdout and "…" not in res.stdout
