"""Snapshots, restores and copies of collections: real FAISS files, Qdrant local mode, real archives on disk,
the CLI in real subprocesses for the kill -9 runs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omniret.errors import CollectionExists, CollectionMismatch
from omniret.index import open_collection
from omniret.index.archive import ArchiveError
from omniret.index.transfer import (
    copy_collection,
    restore_collection,
    snapshot_collection,
    verify_collections,
)

WORDS = ["river", "mountain", "forest", "desert", "ocean", "island", "valley", "canyon", "glacier", "meadow",
         "volcano", "prairie", "harbour", "lagoon", "plateau", "marsh", "tundra", "savanna", "reef", "delta"]


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tag(i: int) -> str:
    """A made-up word only item ``i`` has (``xbcd``: no digits, so no analyser splits it)."""
    return "x" + "".join("bcdfghjklm"[int(c)] for c in f"{i:03d}")


def texts(n: int) -> list[dict[str, Any]]:
    """Two common words each (ties for lexical queries) and a word of the item's own."""
    return [{"text": f"{WORDS[i % 20]} {WORDS[(i // 20) % 20]} {tag(i)}", "n": i} for i in range(n)]


@pytest.fixture(scope="module")
def minilm(minilm_path: Path):  # noqa: ANN201
    from omniret.embed import load_embedder

    return load_embedder(str(minilm_path))


def ranked(hits: list[Any]) -> tuple[list[float], set[str]]:
    """A top-k list up to ties: its scores, and the ids scoring above the last (tied ones may swap)."""
    scores = [round(h.fused_score if h.fused_score is not None else h.score, 5) for h in hits]
    return scores, {h.id for h, sc in zip(hits, scores, strict=True) if sc > scores[-1]}


def hidden_left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ snapshot while a writer writes
@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_snapshot_during_writes_restores_one_acknowledged_state(backend: str, tmp_path: Path, minilm: Any) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "cols"
    coll = open_collection("live", root=root, backend=backend, embedder=minilm)
    batch = 5 if backend == "qdrant" else 50
    first = [f"a{i:04d}" for i in range(4 * batch)]
    coll.add_vectors(first, unit(rng, len(first), 384), [{"text": i} for i in first])
    states: list[frozenset[str]] = [frozenset(first)]
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        live, k = set(first), 0
        while not stop.is_set():
            ids = [f"b{k:04d}-{j}" for j in range(batch)]
            coll.add_vectors(ids, unit(rng, batch, 384), [{"text": i} for i in ids])
            live |= set(ids)
            with lock:  # every acknowledged write is a state the archive may hold
                states.append(frozenset(live))
            if k % 3 == 2:  # delete a whole earlier batch
                gone = [f"b{k - 2:04d}-{j}" for j in range(batch)]
                coll.delete(gone)
                live -= set(gone)
                with lock:
                    states.append(frozenset(live))
            k += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(states) < 3:
        time.sleep(0.01)
    with lock:
        start = len(states) - 1
    # Qdrant local mode admits one client per folder: the snapshot goes through the writer's store
    snapshot_collection("live", tmp_path / "live.tar", root=root, store=coll.store if backend == "qdrant" else None,
                        batch_size=batch)
    with lock:
        end = len(states)
    while len(states) < end + 2:
        time.sleep(0.01)
    stop.set()
    t.join()
    assert end - start >= 1
    restore_collection(tmp_path / "live.tar", name="back", root=root, backend="faiss")
    back = open_collection("back", root=root, embedder=minilm)
    restored = frozenset(back.store.ids())  # type: ignore[attr-defined]
    assert restored in states[start:end + 1], "the archive is not any state acknowledged while it was taken"
    some = sorted(restored)[:20]
    for mine, theirs in zip(coll.get(some), back.get(some), strict=True):
        assert mine is not None and theirs is not None
        np.testing.assert_array_equal(mine["vector"], theirs["vector"])
        assert mine["payload"] == theirs["payload"]
    back.close()
    coll.close()


# ------------------------------------------------------------------ FAISS -> Qdrant -> FAISS
def test_copy_faiss_to_qdrant_and_back_same_hits_and_funnel(tmp_path: Path, tiny_vl_matryoshka: Path) -> None:
    from omniret.embed import load_embedder

    emb = load_embedder(str(tiny_vl_matryoshka))
    root = tmp_path / "cols"
    rng = np.random.default_rng(1)
    n = 120
    coll = open_collection("f", root=root, embedder=emb, funnel_dim=16)
    vecs = unit(rng, n, 64)
    coll.add_vectors([f"d{i:03d}" for i in range(n)], vecs, texts(n))
    coll.close()
    r = copy_collection("f", "q", root=root, backend="qdrant")
    assert r.points == n and r.verify is not None and r.verify.ok, r.to_dict()
    r = copy_collection("q", "f2", root=root, backend="faiss")
    assert r.points == n and r.verify is not None and r.verify.ok, r.to_dict()
    queries = unit(rng, 8, 64)
    words = [f"{WORDS[i]} {WORDS[i + 3]}" for i in range(8)]
    tops: dict[str, tuple[list, ...]] = {}
    for name in ("f", "q", "f2"):
        c = open_collection(name, root=root, embedder=emb)
        assert c.store.info()["funnel_dim"] == 16
        dense = [[h.id for h in hs] for hs in c.store.search(queries, 10, funnel=False)]  # type: ignore[call-arg]
        funnel = [[h.id for h in hs] for hs in c.store.search(queries, 10, funnel=True)]  # type: ignore[call-arg]
        lexical = [ranked(hs) for hs in c.store.lexical_search(words, 10)]  # type: ignore[attr-defined]
        # a query word only one item has: a one-item lexical list, so the fused list has no lexical ties
        hybrid = [[h.id for h in c.search(tag(i), 10, mode="hybrid")] for i in (13, 26, 39)]
        unique = [[h.id for h in hs] for hs in c.store.lexical_search(  # type: ignore[attr-defined]
            [f"{tag(i)} {WORDS[i % 20]}" for i in range(0, n, 13)], 10)]
        tops[name] = (dense, funnel, unique, lexical, hybrid)
        got = c.get(["d007"])[0]
        assert got is not None and got["payload"] == texts(n)[7]
        c.close()
    # dense and funnel: the same ranked lists on every hop; lexical queries naming one item: that item first
    assert tops["f"][:2] == tops["q"][:2] == tops["f2"][:2]
    assert tops["f"][4] == tops["q"][4] == tops["f2"][4] and all(h[0] == f"d{i:03d}" or f"d{i:03d}" in h
                                                                 for h, i in zip(tops["f"][4], (13, 26, 39), strict=True))
    assert [u[0] for u in tops["f"][2]] == [u[0] for u in tops["q"][2]] == [f"d{i:03d}" for i in range(0, n, 13)]
    # BM25 is FTS5's bm25() on FAISS and a sparse dot product with Qdrant's IDF on Qdrant, which order tied
    # and near-tied items differently; back on FAISS every list is the original's (ties as in faiss's
    # contrib/evaluation: the same scores, the same ids above the last score)
    assert tops["f"][3] == tops["f2"][3]


def test_copy_flat_to_hnsw_retunes_to_recall_target(tmp_path: Path, minilm: Any) -> None:
    root = tmp_path / "cols"
    coll = open_collection("flat", root=root, embedder=minilm)
    coll.add_vectors([f"x{i:05d}" for i in range(3000)], unit(np.random.default_rng(2), 3000, 384), texts(3000))
    coll.close()
    r = copy_collection("flat", "hnsw", root=root, index="hnsw", recall=0.95)
    assert r.tuning is not None and r.tuning["met"] and r.tuning["recall"] >= 0.95
    assert r.verify is not None and r.verify.ok and (r.verify.dense_agreement or 0) >= 0.9
    m = json.loads((root / "hnsw" / "collection.json").read_text())
    assert m["index"] == "hnsw" and m["store_options"]["ef_search"] == r.tuning["value"]
    assert m["recall_tuning"]["target"] == 0.95


# ------------------------------------------------------------------ refusals
@pytest.fixture
def archived(tmp_path: Path, minilm: Any) -> tuple[Path, Path]:
    root = tmp_path / "cols"
    coll = open_collection("src", root=root, embedder=minilm)
    coll.add_vectors([f"s{i:04d}" for i in range(600)], unit(np.random.default_rng(3), 600, 384), texts(600))
    coll.close()
    out = tmp_path / "src.tar"
    snapshot_collection("src", out, root=root, batch_size=100)
    return root, out


def test_damaged_archives_and_existing_names_are_refused_and_leave_nothing(archived: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    root, good = archived
    data = good.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ArchiveError, match=r"cut.tar: truncated or damaged archive|cut.tar: truncated archive"):
        restore_collection(cut, name="a", root=root)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    bad = tmp_path / "flip.tar"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match=r"flip.tar: member 'points/\d+\.(npy|jsonl)' is damaged"):
        restore_collection(bad, name="b", root=root)
    # a newer format: the header rewritten, every other member as it was
    newer = tmp_path / "newer.tar"
    with tarfile.open(good) as src, tarfile.open(newer, "w") as dst:
        for m in src:
            body = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "snapshot.json":
                body = json.dumps({**json.loads(body), "version": 99}).encode()
                m.size = len(body)
            dst.addfile(m, io.BytesIO(body))
    with pytest.raises(ArchiveError, match=r"newer.tar: snapshot format version 99 is newer than this omniret reads"):
        restore_collection(newer, name="c", root=root)
    with pytest.raises(CollectionExists, match=r"collection 'src' exists already; use --as NEWNAME, or --replace"):
        restore_collection(good, root=root)
    (root / "other").mkdir()
    (root / "other" / "collection.json").write_text(json.dumps({"name": "other", "model": "some/other-model",
                                                                "dim": 768, "backend": "faiss"}))
    with pytest.raises(CollectionMismatch, match=r"collection 'other' exists with model 'some/other-model' dim 768, "
                                                 r"but the snapshot holds model .* dim 384"):
        restore_collection(good, name="other", root=root)
    assert sorted(p.name for p in root.iterdir()) == ["other", "src"]  # nothing half-restored, nothing hidden
    r = restore_collection(good, name="src", root=root, replace=True)
    assert r.points == 600 and r.verify is not None and r.verify.ok
    assert hidden_left(root) == []


# ------------------------------------------------------------------ kill -9, then run again
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "omniret", "collections", *args]


def _kill_when(proc: subprocess.Popen, ready: Any, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_kill9_during_copy_and_snapshot_then_rerun(tmp_path: Path, minilm: Any) -> None:
    root = tmp_path / "cols"
    n = 4000
    coll = open_collection("big", root=root, embedder=minilm)
    ids = [f"k{i:05d}" for i in range(n)]
    coll.add_vectors(ids, unit(np.random.default_rng(4), n, 384), texts(n))
    coll.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    marker = root / ".dst.partial" / "transfer.json"

    def part_done() -> bool:
        try:
            return json.loads(marker.read_text())["done"] >= 600
        except (OSError, ValueError):
            return False

    proc = subprocess.Popen(_cli("copy", "big", "dst", "--root", str(root), "--batch-size", "200", "--no-verify"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(proc, part_done), "the copy finished before it could be killed"
    assert not (root / "dst").exists()
    done = subprocess.run(_cli("copy", "big", "dst", "--root", str(root), "--batch-size", "200", "--json"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed_after"] >= 600 and report["resumed_after"] + report["points"] == n
    assert report["verify"]["ok"]
    dst = open_collection("dst", root=root, embedder=minilm)
    got = dst.store.ids()  # type: ignore[attr-defined]
    assert len(got) == len(set(got)) == n and set(got) == set(ids)
    dst.close()

    out = tmp_path / "big.tar"
    proc = subprocess.Popen(_cli("snapshot", "big", "-o", str(out), "--root", str(root)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out.with_name(f"big.tar.tmp-{proc.pid}")
    assert _kill_when(proc, lambda: partial.is_file() and partial.stat().st_size > 1_000_000)
    assert not out.exists()
    with pytest.raises(ArchiveError, match=r"truncated"):
        restore_collection(partial, name="never", root=root)
    again = subprocess.run(_cli("snapshot", "big", "-o", str(out), "--root", str(root)), env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not partial.exists(), "the dead snapshot's temp file was left behind"
    r = restore_collection(out, name="fromtar", root=root)
    assert r.points == n and r.verify is not None and r.verify.ok
    assert hidden_left(root) == []


# ------------------------------------------------------------------ the ledger comes along
def test_restore_and_copy_then_index_the_same_folders_embeds_nothing(tmp_path: Path, minilm: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"doc{i}.txt").write_text(f"note {i} about the {WORDS[i]} and the {WORDS[i + 6]}")
    root = tmp_path / "cols"
    coll = open_collection("orig", root=root, embedder=minilm)
    first = coll.add_files(docs, progress=False)
    assert first.indexed_files == 6
    coll.close()
    snapshot_collection("orig", tmp_path / "o.tar", root=root)
    restore_collection(tmp_path / "o.tar", name="restored", root=root)
    copy_collection("orig", "moved", root=root, backend="qdrant")
    assert verify_collections("orig", "moved", root=root).ok
    for name in ("restored", "moved"):
        c = open_collection(name, root=root, embedder=minilm)
        rep = c.add_files(docs, progress=False)
        assert (rep.indexed_files, rep.indexed_items, rep.unchanged) == (0, 0, 6), name
        assert c.count() == first.indexed_items
        c.close()


# ------------------------------------------------------------------ a Qdrant server's own snapshot
@pytest.mark.parametrize("backend, message", [
    ("qdrant", "is in local mode: it has no server snapshot API"),
    ("faiss", "is not on Qdrant: --server-snapshot is for a Qdrant server"),
])
def test_server_snapshot_is_refused_off_a_qdrant_server(backend: str, message: str, tmp_path: Path,
                                                        minilm: Any) -> None:
    """``--server-snapshot`` needs a Qdrant server (which CI cannot run); anywhere else it says so in one line
    and writes nothing."""
    from typer.testing import CliRunner

    from omniret.cli import app

    root = tmp_path / "cols"
    with open_collection("c", root=root, backend=backend, embedder=minilm) as coll:
        coll.add_vectors(["a"], unit(np.random.default_rng(0), 1, 384), [{"text": "a"}])
    out = tmp_path / "c.snapshot"
    res = CliRunner().invoke(app, ["collections", "snapshot", "c", "--server-snapshot", "-o", str(out),
                                   "--root", str(root)])
    assert res.exit_code != 0
    assert message in " ".join(res.output.split())
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
