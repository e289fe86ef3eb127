"""Recall-target tuning: ``tune(0.95)`` picks efSearch / nprobe / the re-scoring pool so that recall@10 on
held-out queries (never stored) reaches 0.95; the choice is recorded and applied when the store reopens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omniret.errors import ConfigError
from omniret.index.faiss_store import FaissStore
from omniret.index.tuning import check_recall, nprobe_grid, recall_at_k

DIM = 64


def clustered(n: int, seed: int, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((clusters, DIM)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


BASE = clustered(12_000, seed=0)
HELD_OUT = clustered(300, seed=1)  # same distribution, never stored
TRUTH = np.argsort(-(HELD_OUT @ BASE.T), axis=1)[:, :10]


def held_out_recall(store: FaissStore) -> float:
    hits = store.search(HELD_OUT, 10)
    found = np.array([[int(h.id) for h in row] + [-1] * (10 - len(row)) for row in hits])
    return recall_at_k(found, TRUTH)


@pytest.mark.parametrize(("kind", "options", "param"), [
    ("hnsw", {"M": 8, "ef_construction": 40, "ef_search": 16}, "ef_search"),
    ("ivfpq", {"nlist": 64, "m": 16, "nprobe": 1}, "nprobe"),
    ("sq8", {"rescore": 1}, "rescore"),
])
def test_recall_target_is_met_on_held_out_queries(tmp_path: Path, kind: str, options: dict, param: str) -> None:
    store = FaissStore(tmp_path / "s", dim=DIM, index=kind, options=options)  # type: ignore[arg-type]
    store.upsert([str(i) for i in range(len(BASE))], BASE)
    assert not store.exact
    before = held_out_recall(store)
    res = store.tune(0.95, sample=500)
    assert res.met and res.param == param and res.settings == {param: res.value}
    # cheapest first, stopping at the first setting that met the target (with its confidence margin)
    assert [v for v, _ in res.tried] == sorted(v for v, _ in res.tried) and res.tried[-1][0] == res.value
    after = held_out_recall(store)
    assert after >= 0.95, f"{kind}: held-out recall {after:.3f} after tuning to {res.settings} (before {before:.3f})"
    store.close()
    reopened = FaissStore(tmp_path / "s")
    assert reopened.options[param] == res.value  # type: ignore[literal-required]
    assert reopened.recall_tuning()["settings"] == res.settings  # type: ignore[index]
    assert held_out_recall(reopened) == pytest.approx(after)
    reopened.close()


def test_hnsw_tuning_raises_a_too_low_ef_and_the_value_applies_on_open(tmp_path: Path) -> None:
    """A file read back keeps the efSearch it was saved with; the store's option must win on open."""
    import faiss

    store = FaissStore(tmp_path / "s", dim=DIM, index="hnsw", options={"M": 8, "ef_construction": 40,
                                                                          "ef_search": 16})
    store.upsert([str(i) for i in range(3000)], BASE[:3000])
    store.close()
    again = FaissStore(tmp_path / "s", options={"ef_search": 200})
    assert faiss.downcast_index(again._index.index).hnsw.efSearch == 200
    again.close()


def test_exact_store_needs_no_tuning_and_bad_targets_fail(tmp_path: Path) -> None:
    store = FaissStore(tmp_path / "s", dim=DIM)
    for bad in (2, 0, -0.5, True, "0.9"):
        with pytest.raises(ConfigError, match=r"recall=.*: a recall target is a fraction in \(0, 1\]"):
            store.tune(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"holds 0 vector\(s\); recall tuning needs at least 20"):
        store.tune(0.95)
    store.upsert([str(i) for i in range(500)], BASE[:500])
    res = store.tune(0.99)
    assert res.extra == {"exact": True} and res.recall == 1.0 and res.settings == {}
    store.close()
    assert check_recall(None) is None and check_recall(1) == 1.0
    assert nprobe_grid(64) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def test_cli_recall_records_choice_and_bad_value_fails_before_work(tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"d{i}.txt").write_text(f"note {i}: the topic is {['cats', 'ships', 'rain', 'jazz'][i % 4]} {i}")
    root = tmp_path / "cols"
    cli = [sys.executable, "-c", "from omniret.cli import main; main()", "index", str(docs), "--collection", "c",
           "--root", str(root), "--model", str(minilm_path)]
    out = subprocess.run([*cli, "--recall", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "recall=2.0: a recall target is a fraction in (0, 1]" in out.stderr
    assert not root.exists()
    out = subprocess.run([*cli, "--index", "hnsw", "--recall", "0.95", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    tuned = report["recall_tuning"]
    assert tuned["param"] == "ef_search" and tuned["met"] and tuned["recall"] >= 0.95
    manifest = json.loads((root / "c" / "collection.json").read_text())
    assert manifest["recall_tuning"]["settings"] == tuned["settings"]
    assert manifest["store_options"]["ef_search"] == tuned["value"]


@pytest.mark.parametrize("kind", ["flat", "sq8", "hnsw"])
def test_memory_mapped_store_searches_the_same_and_copies_on_first_write(tmp_path: Path, kind: str) -> None:
    opts = {"train_size": 1000, "M": 8, "ef_construction": 40} if kind != "flat" else {}
    store = FaissStore(tmp_path / "s", dim=DIM, index=kind, options=opts)  # type: ignore[arg-type]
    store.upsert([str(i) for i in range(3000)], BASE[:3000])
    want = [[h.id for h in row] for row in store.search(HELD_OUT[:20], 10)]
    store.close()
    mapped = FaissStore(tmp_path / "s", options={"mmap": True})
    assert mapped.info()["mmap"] is True
    assert [[h.id for h in row] for row in mapped.search(HELD_OUT[:20], 10)] == want
    # a write copies the mapped codes into memory first (FAISS cannot grow a mapped index)
    mapped.upsert(["new"], HELD_OUT[:1])
    assert mapped.info()["mmap"] is False
    assert mapped.search(HELD_OUT[:1], 1)[0][0].id == "new"
    mapped.delete(["new", "0"])
    assert mapped.count() == 2999
    mapped.close()
