"""The same behaviour tests on both stores: FAISS files on disk and Qdrant's embedded local mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omniret.errors import ConfigError, DimensionError, StoreError
from omniret.index import VectorStore
from omniret.index.faiss_store import FaissStore
from omniret.index.filters import matches, parse_filter, parse_filter_args
from omniret.index.qdrant_store import QdrantStore

DIM = 16


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_store(backend: str, root: Path, dim: int | None = DIM, **kw):  # noqa: ANN201
    if backend == "qdrant":
        return QdrantStore("c", dim=dim, path=root / "qdrant")
    kind = backend.split("-", 1)[1] if "-" in backend else "flat"
    return FaissStore(root / "faiss", dim=dim, index=kind, **kw)


BACKENDS = ["faiss", "faiss-hnsw", "faiss-ivfpq", "faiss-sq8", "qdrant"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _payloads(n: int) -> list[dict]:
    kinds = ["pdf", "text", "image"]
    langs = ["en", "de", "fr", "es"]
    return [{"kind": kinds[i % 3], "page": i % 7, "lang": langs[i % 4], "score": i / 10,
             "tags": ["even" if i % 2 == 0 else "odd", f"t{i % 5}"]} for i in range(n)]


def test_upsert_search_get_count(backend: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 50)
    ids = [f"doc-{i}" for i in range(50)]
    store = open_store(backend, tmp_path)
    assert isinstance(store, VectorStore)
    store.upsert(ids, vecs, _payloads(50))
    assert store.count() == 50
    hits = store.search(vecs[:3], k=5)
    assert [h[0].id for h in hits] == ids[:3]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)
    assert all(len(h) == 5 for h in hits)
    assert all(h[i].score >= h[i + 1].score - 1e-6 for h in hits for i in range(4))
    got = store.get(["doc-7", "missing"])
    assert got[1] is None
    assert got[0]["payload"]["page"] == 0 and got[0]["payload"]["tags"] == ["odd", "t2"]
    np.testing.assert_allclose(got[0]["vector"], vecs[7], atol=1e-5)
    store.close()


def test_overwrite_and_delete(backend: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 20)
    store = open_store(backend, tmp_path)
    store.upsert([f"d{i}" for i in range(20)], vecs, [{"v": 1}] * 20)
    new = _unit(rng, 1)
    store.upsert(["d3"], new, [{"v": 2}])
    assert store.count() == 20
    assert store.get(["d3"])[0]["payload"] == {"v": 2}
    assert store.search(new, k=1)[0][0].id == "d3"
    assert "d3" not in [h.id for h in store.search(vecs[3:4], k=3)[0] if h.score > 0.999]
    store.delete(["d5", "d6", "nope"])
    assert store.count() == 18
    assert store.get(["d5"]) == [None]
    hits = store.search(vecs, k=20)
    assert all({"d5", "d6"}.isdisjoint(h.id for h in row) for row in hits)
    assert all(len(row) == 18 for row in hits)
    store.upsert(["d5"], vecs[5:6], [{"v": 3}])
    assert store.search(vecs[5:6], k=1)[0][0].id == "d5"
    assert store.count() == 19
    store.close()


@pytest.mark.parametrize("flt", [
    {"kind": "pdf"},
    {"page": {"gte": 2, "lte": 4}},
    {"lang": {"any": ["en", "de"]}},
    {"kind": "text", "page": {"gt": 1}, "lang": {"any": ["en", "fr"]}},
    {"tags": "even"},
    {"score": {"lt": 0.5}},
    {"page": 3},
    # any-of over floats (Qdrant: one-point ranges), ints and strings together
    {"score": {"any": [0.3, 0.7]}, "page": {"any": [3, 0]}, "kind": {"any": ["pdf", "text"]}},
])
def test_filters_honour_k(backend: str, tmp_path: Path, flt: dict) -> None:
    n = 300
    rng = np.random.default_rng(2)
    vecs = _unit(rng, n)
    pls = _payloads(n)
    opts = {"faiss-ivfpq": {"train_size": 256, "nlist": 8, "m": 4}, "faiss-sq8": {"train_size": 100}}.get(backend)
    store = open_store(backend, tmp_path, options=opts) if opts else open_store(backend, tmp_path)
    store.upsert([f"x{i}" for i in range(n)], vecs, pls)
    conds = parse_filter(flt)
    allowed = {f"x{i}" for i in range(n) if matches(pls[i], conds)}
    assert allowed
    q = _unit(rng, 2)
    for row_q, row in zip(q, store.search(q, k=10, filter=flt), strict=True):
        assert len(row) == min(10, len(allowed))
        assert {h.id for h in row} <= allowed
        exact = sorted(allowed, key=lambda i: -float(vecs[int(i[1:])] @ row_q))[:10]
        if backend in ("faiss", "qdrant"):
            assert [h.id for h in row] == exact
    store.close()


def test_info_reports_options_as_json_without_secrets(tmp_path: Path) -> None:
    q = QdrantStore("c", dim=DIM, path=tmp_path / "qdrant", options={"batch_size": 7, "api_key": "secret"})
    f = FaissStore(tmp_path / "faiss", dim=DIM, options={"nprobe": 4, "gpu": False})
    qi, fi = q.info(), f.info()
    assert qi["options"] == {"batch_size": 7}
    assert isinstance(fi["options"], dict) and fi["options"]["nprobe"] == 4 and "gpu" not in fi["options"]
    assert json.loads(json.dumps([qi, fi])) == [qi, fi]
    q.close()
    f.close()


def test_persistence_across_reopen(backend: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vecs = _unit(rng, 30)
    store = open_store(backend, tmp_path)
    store.upsert([f"p{i}" for i in range(30)], vecs, [{"i": i} for i in range(30)])
    store.delete(["p0"])
    store.close()
    again = open_store(backend, tmp_path, dim=None)
    assert again.dim == DIM
    assert again.count() == 29
    assert again.search(vecs[1:2], k=1)[0][0].id == "p1"
    assert again.get(["p0"]) == [None]
    again.close()


def test_wrong_dimension(backend: str, tmp_path: Path) -> None:
    store = open_store(backend, tmp_path)
    with pytest.raises(DimensionError, match=f"expected dimension {DIM}, got 8"):
        store.upsert(["a"], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(DimensionError, match=f"expected dimension {DIM}, got 4"):
        store.search(np.ones((1, 4), dtype=np.float32), k=3)
    store.upsert(["a"], _unit(np.random.default_rng(0), 1))
    store.close()
    with pytest.raises(DimensionError, match=f"expected dimension {DIM}, got 32"):
        open_store(backend, tmp_path, dim=32)


def test_bad_batches_raise_store_error(backend: str, tmp_path: Path) -> None:
    store = open_store(backend, tmp_path)
    v = _unit(np.random.default_rng(0), 2)
    with pytest.raises(StoreError, match="2 ids but 1 vectors"):
        store.upsert(["a", "b"], v[:1])
    with pytest.raises(StoreError, match="appears twice"):
        store.upsert(["a", "a"], v)
    with pytest.raises(StoreError, match="reserved"):
        store.upsert(["a"], v[:1], [{"_omniret_id": "x"}])
    with pytest.raises(ConfigError, match="unknown operator"):
        store.search(v, k=2, filter={"page": {"between": [1, 2]}})
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()


def test_faiss_catches_up_after_lost_index_file(tmp_path: Path) -> None:
    """SQLite is the truth: an index file that is behind (crash before save) is caught up on open."""
    rng = np.random.default_rng(4)
    vecs = _unit(rng, 40)
    store = FaissStore(tmp_path / "s", dim=DIM)
    store.upsert([f"a{i}" for i in range(20)], vecs[:20])
    store.save()
    store.upsert([f"a{i}" for i in range(20, 40)], vecs[20:])
    store.delete(["a0"])
    # simulate kill -9: no close(), so the FAISS file still reflects the first 20 items
    store._db.close()
    store._db = None
    again = FaissStore(tmp_path / "s")
    assert again._index.ntotal == 39
    assert again.search(vecs[30:31], k=1)[0][0].id == "a30"
    assert "a0" not in [h.id for h in again.search(vecs[0:1], k=39)[0]]
    again.close()
    (tmp_path / "s" / "index.faiss").write_bytes(b"garbage")
    third = FaissStore(tmp_path / "s")
    assert third.count() == 39 and third._index.ntotal == 39
    third.close()


def test_faiss_trainable_kinds_switch_from_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = _unit(rng, 600)
    store = FaissStore(tmp_path / "s", dim=DIM, index="ivfpq", options={"nlist": 4, "m": 4, "train_size": 500})
    store.upsert([f"i{i}" for i in range(400)], vecs[:400])
    assert store.exact
    store.upsert([f"i{i}" for i in range(400, 600)], vecs[400:])
    assert not store.exact and store._index.ntotal == 600
    assert store.search(vecs[10:11], k=1)[0][0].id == "i10"
    with pytest.raises(ConfigError, match="m=5 must divide dim=16"):
        FaissStore(tmp_path / "t", dim=DIM, index="ivfpq", options={"m": 5})
    with pytest.raises(ConfigError, match="index='annoy'"):
        FaissStore(tmp_path / "u", dim=DIM, index="annoy")  # type: ignore[arg-type]
    store.close()


def test_parse_filter_args() -> None:
    assert parse_filter_args(["kind=pdf", "page>=2", "page<=5", "lang=en,de", "ok=true"]) == {
        "kind": "pdf", "page": {"gte": 2, "lte": 5}, "lang": {"any": ["en", "de"]}, "ok": True}
    with pytest.raises(ConfigError, match="write key=value"):
        parse_filter_args(["nonsense"])


def test_faiss_rescore_lifts_compressed_recall(tmp_path: Path) -> None:
    """IVF-PQ candidates re-scored from the exact vectors in SQLite: scores are exact inner products."""
    rng = np.random.default_rng(6)
    vecs = _unit(rng, 2000, 32)
    q = _unit(rng, 20, 32)
    truth = np.argsort(-(q @ vecs.T), axis=1)[:, :10]
    recalls = {}
    for factor in (1, 8):
        store = FaissStore(tmp_path / f"r{factor}", dim=32, index="ivfpq",
                           options={"nlist": 16, "m": 16, "nbits": 4, "nprobe": 4, "train_size": 1000,
                                    "rescore": factor})
        store.upsert([str(i) for i in range(2000)], vecs)
        hits = store.search(q, k=10)
        recalls[factor] = np.mean([len({int(h.id) for h in row} & set(t)) / 10 for row, t in zip(hits, truth, strict=True)])
        if factor == 8:
            for row, qq in zip(hits, q, strict=True):
                np.testing.assert_allclose([h.score for h in row], [vecs[int(h.id)] @ qq for h in row], atol=1e-5)
        store.close()
    assert recalls[8] > recalls[1]
