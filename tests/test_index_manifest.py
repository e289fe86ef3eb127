"""The typed manifest, the one collection-name rule, and the stores' capability protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omniret.errors import CollectionError, ConfigError
from omniret.index import open_collection
from omniret.index.catalog import collection_store, open_store
from omniret.index.lexical import AnalyzerConfig
from omniret.index.manifest import MANIFEST, Manifest, read_manifest
from omniret.index.names import check_collection_name
from omniret.index.protocol import LexicalBackfill, LexicalStore, PointExport, TunableStore, VectorStore
from omniret.types import Item

#: manifests as each earlier version wrote them: before funnel search, before the lexical index, with a
#: recall tuning, and a Qdrant server collection
WRITTEN = [
    {"name": "a", "model": "m", "dim": 8, "instruction": None, "backend": "faiss", "index": "flat",
     "modalities": ["text"], "url": None, "created": "2026-01-01T00:00:00Z", "store_options": {}},
    {"name": "b", "model": "m", "dim": 8, "instruction": "Find notes.", "funnel_dim": 4, "backend": "faiss",
     "index": "hnsw", "modalities": ["image", "text"], "url": None, "created": "2026-02-01T00:00:00Z",
     "store_options": {"M": 8}},
    {"name": "c", "model": "m", "dim": 8, "instruction": None, "funnel_dim": None,
     "lexical": AnalyzerConfig(language=None).to_dict(), "backend": "faiss", "index": "hnsw",
     "modalities": ["text"], "url": None, "created": "2026-03-01T00:00:00Z", "store_options": {"ef_search": 48},
     "recall_tuning": {"target": 0.9, "param": "ef_search", "value": 48, "count": 300}},
    {"name": "d", "model": "m", "dim": 8, "instruction": None, "funnel_dim": None,
     "lexical": AnalyzerConfig().to_dict(), "backend": "qdrant", "index": "qdrant", "modalities": ["text"],
     "url": "http://qdrant:6333", "created": "2026-04-01T00:00:00Z", "store_options": {"shard_number": 2}},
]


@pytest.mark.parametrize("data", WRITTEN, ids=[d["name"] for d in WRITTEN])
def test_every_written_manifest_reads_and_writes_back(data: dict) -> None:
    m = Manifest.from_json(data, where="test")
    assert (m.model, m.dim, m.backend, m.index) == ("m", 8, data["backend"], data["index"])
    assert m.funnel_dim == data.get("funnel_dim")
    assert m.lexical == (AnalyzerConfig.from_dict(data["lexical"]) if "lexical" in data else None)
    assert dict(m.store_options) == data["store_options"] and m.extra == {}
    # what it writes back is what it read (plus funnel_dim: null on the oldest), and reads the same again
    assert m.to_json() == {"funnel_dim": None, **data}
    assert Manifest.from_json(m.to_json(), where="test") == m


@pytest.mark.parametrize(("data", "match"), [
    ({"model": "m", "dim": "8"}, r"collection 'x': collection.json key 'dim' must be a positive integer, got '8'"),
    ({"dim": 8}, r"key 'model' must be the model's name, got None"),
    ({"model": "m", "dim": 8, "backend": "milvus"}, r"key 'backend' must be 'faiss' or 'qdrant', got 'milvus'"),
    ({"model": "m", "dim": 8, "lexical": {"stemmer": "x"}}, r"collection 'x': lexical: unknown analyser setting"),
    ({"model": "m", "dim": 8, "store_options": [1]}, r"key 'store_options' must be an object or null"),
])
def test_a_bad_manifest_names_the_collection_and_the_key(tmp_path: Path, data: dict, match: str) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CollectionError, match=match):
        read_manifest(tmp_path / "x")
    (tmp_path / "x" / MANIFEST).write_text("{not json")
    with pytest.raises(CollectionError, match=r"collection 'x': unreadable collection.json"):
        read_manifest(tmp_path / "x")


def test_unknown_keys_survive_an_open_that_rewrites_the_manifest(tmp_path: Path, minilm_path: Path) -> None:
    from omniret.embed import load_embedder

    coll = open_collection("notes", root=tmp_path, embedder=load_embedder(str(minilm_path)))
    coll.add([Item(text="tomatoes need full sun", id="t")])
    coll.close()
    f = tmp_path / "notes" / MANIFEST
    data = json.loads(f.read_text())
    data.pop("lexical")  # made before the lexical index: opening records the analyser and rewrites the file
    data["snapshot_of"] = {"name": "garden", "at": "2026-05-01"}  # written by a newer version
    f.write_text(json.dumps(data))
    coll = open_collection("notes", root=tmp_path, progress=False)
    try:
        assert coll.spec.extra == {"snapshot_of": {"name": "garden", "at": "2026-05-01"}}
        assert coll.spec.lexical == AnalyzerConfig()
        with pytest.raises(TypeError):
            coll.manifest["dim"] = 3  # type: ignore[index]
    finally:
        coll.close()
    written = json.loads(f.read_text())
    assert written["snapshot_of"] == data["snapshot_of"] and written["lexical"] == AnalyzerConfig().to_dict()


@pytest.mark.parametrize("name", ["../evil", "-x", ".hidden", "a b", "", "x" * 129, 7])
def test_one_name_rule_for_library_and_admin_calls(tmp_path: Path, name: object) -> None:
    rule = r"collection name .*: use letters, digits, '\.', '_' or '-' \(at most 128, starting with a letter or digit\)"
    with pytest.raises(ConfigError, match=rule):
        check_collection_name(name)
    with pytest.raises(ConfigError, match=rule):
        open_collection(name, root=tmp_path, embedder="unused")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rule):
        collection_store(name, tmp_path)  # type: ignore[arg-type]
    assert check_collection_name("notes_v2.1-a") == "notes_v2.1-a" and check_collection_name("x" * 128)


def test_stores_declare_what_they_can_do(tmp_path: Path) -> None:
    faiss_m = Manifest.from_json(WRITTEN[2], where="test")
    qdrant_m = Manifest.from_json({**WRITTEN[3], "url": None}, where="test")
    faiss_store = open_store(tmp_path / "c", faiss_m, create=True)
    qdrant_store = open_store(tmp_path / "d", qdrant_m, create=True)
    try:
        # the FAISS store carries the recorded index kind and options, and can be tuned and backfilled
        assert faiss_store.info()["index"] == "hnsw" and faiss_store.info()["options"]["ef_search"] == 48
        assert isinstance(faiss_store, (VectorStore, LexicalBackfill, TunableStore))
        assert isinstance(faiss_store, LexicalBackfill) and isinstance(faiss_store, TunableStore)
        # Qdrant keeps a lexical index but cannot backfill one, and tunes through its own options
        assert isinstance(qdrant_store, VectorStore) and isinstance(qdrant_store, LexicalStore)
        assert not isinstance(qdrant_store, LexicalBackfill) and not isinstance(qdrant_store, TunableStore)
        # both stream their points out (snapshots, copies)
        assert isinstance(faiss_store, PointExport) and isinstance(qdrant_store, PointExport)
        vecs = np.eye(8, dtype=np.float32)
        for store in (faiss_store, qdrant_store):
            store.upsert([f"v{i}" for i in range(8)], vecs, [{"text": f"word{i}"} for i in range(8)])
            assert store.search(vecs[3:4], 1)[0][0].id == "v3"
    finally:
        faiss_store.close()
        qdrant_store.close()
