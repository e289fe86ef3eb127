"""Funnel search (short Matryoshka prefix for candidates, full dim for scores) on FAISS and Qdrant local mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omniret import Item
from omniret.cli import app
from omniret.errors import CollectionError, ConfigError, DimensionError
from omniret.index import open_collection
from omniret.index.faiss_store import FaissStore
from omniret.index.filters import matches, parse_filter
from omniret.index.qdrant_store import QdrantStore

DIM, FUNNEL = 64, 16


def matryoshka_like(n: int, seed: int, dim: int = DIM, decay: float = 0.5) -> np.ndarray:
    """Clustered unit vectors whose variance falls along the components, as Matryoshka embeddings' does."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).standard_normal((20, dim)).astype(np.float32)
    x = centers[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x *= (1 + np.arange(dim, dtype=np.float32)) ** -decay
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_store(backend: str, root: Path, funnel_dim: int | None = FUNNEL, dim: int | None = DIM, *,  # noqa: ANN201
               memory: bool = False, **options):
    """``memory``: Qdrant's in-memory local mode (on disk, local mode commits each point alone: slow)."""
    if backend == "qdrant":
        return QdrantStore("c", dim=dim, path=":memory:" if memory else root / "qdrant", funnel_dim=funnel_dim,
                           options={"batch_size": 1000, **options})
    kind = backend.split("-", 1)[1] if "-" in backend else "flat"
    return FaissStore(root / "faiss", dim=dim, index=kind, funnel_dim=funnel_dim, options=options)


@pytest.fixture(params=["faiss", "faiss-hnsw", "qdrant"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _payloads(n: int) -> list[dict]:
    return [{"kind": ("pdf", "text", "image")[i % 3], "page": i % 7} for i in range(n)]


def _ids(rows: list) -> list[list[str]]:
    return [[h.id for h in row] for row in rows]


def prefix_blind(n: int, n_queries: int, seed: int, cluster: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors whose 16-dim prefix only says which cluster of ``cluster`` items a vector is in, and
    whose tail says which item: a prefix search finds the cluster but ranks within it at random, so only
    re-scoring at full dim gets the true neighbours. Queries are noisy copies of items."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * np.eye(FUNNEL, dtype=np.float32)[: n // cluster]
    which = np.repeat(np.arange(n // cluster), cluster)
    head = centers[which] + 0.01 * rng.standard_normal((n, FUNNEL)).astype(np.float32)
    tail = rng.standard_normal((n, DIM - FUNNEL)).astype(np.float32)
    vecs = np.hstack([head, tail])
    picks = rng.choice(n, n_queries, replace=False)
    q = vecs[picks] + np.hstack([0.01 * rng.standard_normal((n_queries, FUNNEL)),
                                 0.3 * rng.standard_normal((n_queries, DIM - FUNNEL))]).astype(np.float32)
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
            q / np.linalg.norm(q, axis=1, keepdims=True))


def test_funnel_rescoring_recovers_what_the_prefix_misses(backend: str, tmp_path: Path) -> None:
    """A pool of k×3 = 30 of 200 items: the 16-dim prefix alone gets about half the true top 10; the funnel,
    re-scoring its pool at full dim, gets all of them, in order, with exact full-dim scores."""
    n, k = 200, 10
    vecs, q = prefix_blind(n, 5, 0)
    exact = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :k]
    short = vecs[:, :FUNNEL] / np.linalg.norm(vecs[:, :FUNNEL], axis=1, keepdims=True)
    qs = q[:, :FUNNEL] / np.linalg.norm(q[:, :FUNNEL], axis=1, keepdims=True)
    prefix_only = np.argsort(-(qs @ short.T), axis=1)[:, :k]
    prefix_recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(prefix_only, exact, strict=True)])
    assert prefix_recall < 0.8, "the data must be one where the prefix alone misses neighbours"
    store = open_store(backend, tmp_path, memory=True, funnel_candidates=3)
    store.upsert([f"v{i}" for i in range(n)], vecs, _payloads(n))
    funnel = store.search(q, k=k)
    assert _ids(funnel) == [[f"v{i}" for i in row] for row in exact]
    for row, qq in zip(funnel, q, strict=True):
        np.testing.assert_allclose([h.score for h in row], [vecs[int(h.id[1:])] @ qq for h in row], atol=1e-5)
    if backend != "faiss-hnsw":  # HNSW's own answer is approximate; flat and Qdrant local are exact
        assert _ids(store.search(q, k=k, funnel=False)) == _ids(funnel)
    assert funnel[0][0].payload == _payloads(n)[int(funnel[0][0].id[1:])]
    store.close()


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_modest_pool_recall(backend: str, tmp_path: Path) -> None:
    """k×5 candidates from a 16-dim prefix of 64-dim Matryoshka-like vectors: recall@10 close to exact."""
    n = 2000
    vecs, q = matryoshka_like(n, 2), matryoshka_like(20, 3)
    truth = np.argsort(-(q @ vecs.T), axis=1)[:, :10]
    store = open_store(backend, tmp_path, memory=True, funnel_candidates=5)
    store.upsert([str(i) for i in range(n)], vecs)
    hits = store.search(q, k=10)
    recall = np.mean([len({int(h.id) for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth, strict=True)])
    assert recall >= 0.95
    store.close()


@pytest.mark.parametrize("flt", [{"kind": "pdf"}, {"page": {"gte": 2, "lte": 3}}, {"page": 6, "kind": "text"}])
def test_filters_honoured(backend: str, tmp_path: Path, flt: dict) -> None:
    n = 300
    vecs, q = matryoshka_like(n, 4), matryoshka_like(3, 5)
    pls = _payloads(n)
    allowed = {f"x{i}" for i in range(n) if matches(pls[i], parse_filter(flt))}
    # a small pool (k×2) must still give k filtered hits: the filter applies before the pool is cut
    store = open_store(backend, tmp_path, memory=True, funnel_candidates=2)
    store.upsert([f"x{i}" for i in range(n)], vecs, pls)
    for row in store.search(q, k=10, filter=flt):
        assert len(row) == min(10, len(allowed)) and {h.id for h in row} <= allowed
    store.close()
    big = open_store(backend, tmp_path / "big", memory=True, funnel_candidates=100)
    big.upsert([f"x{i}" for i in range(n)], vecs, pls)
    for row, qq in zip(big.search(q, k=10, filter=flt), q, strict=True):
        assert [h.id for h in row] == sorted(allowed, key=lambda i: -float(vecs[int(i[1:])] @ qq))[:10]
    assert big.search(q, k=5, filter={"kind": "nothing"}) == [[], [], []]
    big.close()


def test_persistence_across_reopen(backend: str, tmp_path: Path) -> None:
    vecs = matryoshka_like(60, 6)
    store = open_store(backend, tmp_path, funnel_candidates=10)
    store.upsert([f"p{i}" for i in range(60)], vecs)
    store.delete(["p0", "p1"])
    store.upsert(["p2"], vecs[3:4])  # p2 now holds p3's vector
    store.close()
    again = open_store(backend, tmp_path, funnel_dim=None, dim=None)
    assert (again.dim, again.funnel_dim, again.count()) == (DIM, FUNNEL, 58)
    assert again.info()["funnel_dim"] == FUNNEL
    top = again.search(vecs[5:6], k=3, funnel=True)[0]
    assert top[0].id == "p5" and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.id for h in again.search(vecs[3:4], k=2)[0]} == {"p2", "p3"}
    assert "p0" not in [h.id for h in again.search(vecs[0:1], k=58)[0]]
    np.testing.assert_allclose(again.get(["p2"])[0]["vector"], vecs[3], atol=1e-5)
    again.close()
    with pytest.raises(DimensionError, match=f"created with funnel_dim={FUNNEL}, not 32"):
        open_store(backend, tmp_path, funnel_dim=32, dim=None)


def test_faiss_funnel_caught_up_after_crash(tmp_path: Path) -> None:
    """Like the main index, the funnel file is a cache of SQLite: behind after a crash, caught up on open."""
    vecs = matryoshka_like(40, 7)
    store = FaissStore(tmp_path / "s", dim=DIM, funnel_dim=FUNNEL)
    store.upsert([f"a{i}" for i in range(20)], vecs[:20])
    store.save()
    store.upsert([f"a{i}" for i in range(20, 40)], vecs[20:])
    store.delete(["a0"])
    store._db.close()  # kill -9: no close(), so funnel.faiss still holds the first 20
    store._db = None
    again = FaissStore(tmp_path / "s")
    assert again._funnel.ntotal == 39
    assert again.search(vecs[30:31], k=1)[0][0].id == "a30"
    assert "a0" not in [h.id for h in again.search(vecs[0:1], k=39, funnel=True)[0]]
    again.close()
    (tmp_path / "s" / "funnel.faiss").write_bytes(b"garbage")
    third = FaissStore(tmp_path / "s")
    assert third._funnel.ntotal == 39 and third.search(vecs[9:10], k=1)[0][0].id == "a9"
    third.close()


def test_bad_funnel_settings(backend: str, tmp_path: Path) -> None:
    with pytest.raises(DimensionError, match="funnel_dim=64 must be an int between 1 and 63"):
        open_store(backend, tmp_path / "a", funnel_dim=64)
    with pytest.raises(DimensionError, match="funnel_dim=0 must be an int between 1 and 63"):
        open_store(backend, tmp_path / "b", funnel_dim=0)
    plain = open_store(backend, tmp_path / "c", funnel_dim=None)
    plain.upsert(["a"], matryoshka_like(1, 8))
    with pytest.raises(ConfigError, match="funnel=True but .* has no funnel"):
        plain.search(matryoshka_like(1, 9), k=1, funnel=True)
    assert plain.search(matryoshka_like(1, 9), k=1, funnel=False)[0][0].id == "a"
    plain.close()
    bad = open_store(backend, tmp_path / "d", funnel_candidates=0)
    bad.upsert(["a"], matryoshka_like(1, 8))
    with pytest.raises(ConfigError, match="funnel_candidates=0 must be an int >= 1"):
        bad.search(matryoshka_like(1, 9), k=1)
    bad.close()


TEXTS = ["a red bicycle leaning on a wall", "stock markets fell sharply today", "how to bake sourdough bread",
         "the migration of arctic terns", "quantum computers use qubits", "a recipe for tomato soup"]


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_collection_funnel(tmp_path: Path, tiny_text_embedding: Path, backend: str) -> None:
    """The tiny Qwen3 text embedder declares dims (32, 64): a 32-dim funnel under a 64-dim collection."""
    from omniret.embed import load_embedder

    emb = load_embedder(str(tiny_text_embedding))
    assert emb.dims == (32, 64)
    with pytest.raises(DimensionError, match=r"funnel_dim=16 must be one of model .* dims below dim=64: \[32\]"):
        open_collection("bad", root=tmp_path, backend=backend, embedder=emb, funnel_dim=16)
    coll = open_collection("f", root=tmp_path, backend=backend, embedder=emb, funnel_dim=32)
    coll.add([Item(text=t, id=f"t{i}", metadata={"n": i}) for i, t in enumerate(TEXTS)])
    assert json.loads((tmp_path / "f" / "collection.json").read_text())["funnel_dim"] == 32
    funnel = coll.search("bread", k=6, rerank=False)
    assert [h.id for h in funnel] == [h.id for h in coll.search("bread", k=6, rerank=False, funnel=False)]
    assert [h.id for h in coll.search("bread", k=6, funnel=True, filter={"n": {"lt": 3}})] == \
        [h.id for h in funnel if int(h.id[1:]) < 3]
    coll.close()
    with pytest.raises(CollectionError, match="created with funnel_dim 32, not 16"):
        open_collection("f", root=tmp_path, embedder=emb, funnel_dim=16)
    again = open_collection("f", root=tmp_path, embedder=emb)
    assert again.store.funnel_dim == 32 and again.info()["store"]["funnel_dim"] == 32
    assert [h.id for h in again.search("bread", k=6, rerank=False)] == [h.id for h in funnel]
    again.close()


def test_cli_funnel(tmp_path: Path, tiny_text_embedding: Path, minilm_path: Path) -> None:
    runner = CliRunner()
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, t in enumerate(TEXTS):
        (docs / f"d{i}.txt").write_text(t)
    root = tmp_path / "cols"
    r = runner.invoke(app, ["index", str(docs), "--collection", "c", "--model", str(tiny_text_embedding),
                            "--root", str(root), "--funnel-dim", "32", "--funnel-candidates", "3"])
    assert r.exit_code == 0, r.output
    info = runner.invoke(app, ["collections", "info", "c", "--root", str(root), "--json"])
    assert json.loads(info.stdout)["funnel_dim"] == 32
    assert json.loads(info.stdout)["store"]["options"]["funnel_candidates"] == 3
    runs = {}
    for flag in ("--funnel", "--no-funnel"):
        r = runner.invoke(app, ["search", "soup", "--collection", "c", "--root", str(root), "--no-rerank",
                                "--json", "-k", "3", flag])
        assert r.exit_code == 0, r.output
        runs[flag] = [h["id"] for h in json.loads(r.stdout)]
    assert runs["--funnel"] == runs["--no-funnel"] and len(runs["--funnel"]) == 3
    # MiniLM is not a Matryoshka model: it declares only its full 384 dims
    r = runner.invoke(app, ["index", str(docs), "--collection", "m", "--model", str(minilm_path),
                            "--root", str(root), "--funnel-dim", "128"])
    assert r.exit_code != 0 and "funnel_dim=128 must be one of model" in r.output
