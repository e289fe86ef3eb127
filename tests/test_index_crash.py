"""Crash safety: a writer killed with SIGKILL loses no acknowledged item; re-running finishes, no duplicates."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from index_runs import indexed_sources, wait_for_sources, write_numbered_docs

from omniret.index.faiss_store import FaissStore

DIM = 32
N = 4000

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from omniret.index.faiss_store import FaissStore

    path, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = FaissStore(path, dim=dim, index=sys.argv[4], options={"save_every": 700})
    done = set(store.ids())
    for s in range(0, n, 50):
        ids = [f"v{i}" for i in range(s, min(s + 50, n)) if f"v{i}" not in done]
        if not ids:
            continue
        store.upsert(ids, vecs[[int(i[1:]) for i in ids]], [{"i": int(i[1:])} for i in ids])
        print(" ".join(ids), flush=True)
    store.close()
    print("DONE", flush=True)
""")


def _run_and_kill(path: Path, index: str, after_lines: int) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(N), str(DIM), index],
                            stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.extend(line.split())
        if len(acked) >= after_lines * 50:
            os.kill(proc.pid, signal.SIGKILL)
            break
    # whatever the child printed before dying was acknowledged too
    rest = proc.stdout.read()
    acked.extend(w for w in rest.split() if w != "DONE")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    return acked


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_sigkill_loses_no_acknowledged_item(tmp_path: Path, index: str) -> None:
    path = tmp_path / "store"
    acked = _run_and_kill(path, index, after_lines=30)
    assert len(acked) >= 1500
    store = FaissStore(path)
    assert store.count() >= len(acked)
    got = store.get(acked)
    assert all(g is not None for g in got), "an acknowledged item was lost"
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((N, DIM)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    last = int(acked[-1][1:])
    # the FAISS index was caught up from SQLite: the last acknowledged vector is found by search
    assert store.search(vecs[last:last + 1], k=1)[0][0].id == acked[-1]
    store.close()
    # re-running finishes the job with no duplicates
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(N), str(DIM), index],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("DONE"), out.stderr
    store = FaissStore(path)
    ids = store.ids()
    assert len(ids) == len(set(ids)) == N == store.count()
    assert store._index.ntotal - len(store._dead) == N
    hits = store.search(vecs[:5], k=1)
    assert [h[0].id for h in hits] == [f"v{i}" for i in range(5)]
    store.close()


def test_sigkill_during_ingestion_resumes(tmp_path: Path, minilm_path: Path) -> None:
    """``omniret index`` killed mid-run: the rerun, through the product's own ledger, indexes the rest, and
    every id appears once. Two CLI processes each load torch and MiniLM (~15 s on a quiet machine)."""
    docs = write_numbered_docs(tmp_path / "docs", 120)
    root = tmp_path / "cols"
    cmd = [sys.executable, "-c", "from omniret.cli import main; main()", "index", str(docs), "--collection", "c", "--model",
           str(minilm_path), "--root", str(root), "--json", "--batch-size", "8"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ledger = root / "c" / "ledger.sqlite"
    # model loading is slow on a busy machine
    wait_for_sources(ledger, 24, timeout_s=300, running=lambda: proc.poll() is None, poll_s=0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = indexed_sources(ledger)
    assert 0 < done_before < 120
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    from omniret.index import open_collection

    coll = open_collection("c", root=root)
    ids = coll.store.ids()
    assert len(ids) == len(set(ids)) == 120 == coll.count()
    coll.close()


def _finds_itself(store: FaissStore, vecs: np.ndarray, ids: list[str]) -> bool:
    return [hits[0].id for hits in store.search(vecs, 1)] == ids


def test_a_second_store_on_a_live_folder_never_leaves_a_stale_cache_trusted(tmp_path: Path) -> None:
    """A second store on the folder (``collections info``/``verify`` beside a writer) must not stamp the
    FAISS file with a generation newer than what its index holds: a later open would trust it and miss
    items. A store opened only to read writes no file at all."""
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((30, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    a, b, c = ([f"{p}{i}" for i in range(10)] for p in "abc")
    opts = {"save_every": 10**9}
    writer = FaissStore(tmp_path, dim=DIM, options=opts)
    writer.upsert(a, vecs[:10])
    writer.save()
    side = tmp_path / "index.json"
    written = (side.read_text(), (tmp_path / "index.faiss").stat().st_mtime_ns)

    reader = FaissStore(tmp_path, options=opts)  # only reads
    assert _finds_itself(reader, vecs[:10], a)
    reader.close()
    assert (side.read_text(), (tmp_path / "index.faiss").stat().st_mtime_ns) == written

    other = FaissStore(tmp_path, options=opts)
    writer.upsert(b, vecs[10:20])  # `other` never sees these in its FAISS index
    other.upsert(c, vecs[20:])
    writer.close()
    other.close()  # last to write the file: it holds a and c, not b
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        now = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    assert json.loads(side.read_text())["generation"] < now  # stamped as behind, so the next open catches up

    again = FaissStore(tmp_path, options=opts)
    try:
        assert again._index.ntotal == 30
        assert _finds_itself(again, vecs, a + b + c)
    finally:
        again.close()


def _unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _generation(path: Path) -> int:
    with sqlite3.connect(path / "store.sqlite") as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


@pytest.mark.parametrize("behind", [True, False])
def test_periodic_save_writes_a_copy_behind_the_writer(tmp_path: Path, behind: bool) -> None:
    """Every ``save_every`` changes the FAISS files are written: by default from a copy of the index in a
    background thread (the upsert returns without waiting for the disk), with ``save_behind=False`` in the
    upsert itself. Either way the file holds exactly the index as of the upsert that crossed the mark, and
    the sidecar says which generation that was."""
    import faiss

    vecs = _unit_vectors(160, 2)
    ids = [f"v{i}" for i in range(160)]
    store = FaissStore(tmp_path, dim=DIM, options={"save_every": 100, "save_behind": behind})
    store.upsert(ids[:150], vecs[:150])
    crossed = _generation(tmp_path)
    started = store._saving
    assert (started is not None) == behind, "the write went the other way than save_behind asked"
    if started is not None:
        started.result(timeout=60)
    store.upsert(ids[150:], vecs[150:])  # below the next mark: the file stays as it was
    side = json.loads((tmp_path / "index.json").read_text())
    assert (side["generation"], side["ntotal"]) == (crossed, 150)
    on_disk = faiss.read_index(str(tmp_path / "index.faiss"))
    assert on_disk.ntotal == 150
    store.close()  # writes the last 10
    again = FaissStore(tmp_path)
    try:
        assert json.loads((tmp_path / "index.json").read_text())["generation"] == _generation(tmp_path)
        assert again._index.ntotal == 160 and _finds_itself(again, vecs, ids)
    finally:
        again.close()


def test_a_failed_background_save_is_logged_and_written_again_on_close(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """A background write that fails (here a directory stands where its temp file goes) loses nothing: the
    index stays unsaved, the failure is logged with the store's folder, and ``close`` writes the files."""
    vecs = _unit_vectors(120, 3)
    ids = [f"v{i}" for i in range(120)]
    store = FaissStore(tmp_path, dim=DIM, options={"save_every": 100})
    blocker = tmp_path / "index.faiss.tmp"
    blocker.mkdir()
    with caplog.at_level("WARNING", logger="omniret.index.faiss.store"):
        store.upsert(ids, vecs)
        assert store._saving is not None
        with pytest.raises(RuntimeError, match="index.faiss.tmp"):  # faiss's own IO error
            store._saving.result(timeout=60)
        store.upsert(ids[:1], vecs[:1])  # the next write settles the failed one
    assert any("writing its index files in the background failed" in r.getMessage() and str(tmp_path) in
               r.getMessage() for r in caplog.records)
    assert not (tmp_path / "index.json").exists() or \
        json.loads((tmp_path / "index.json").read_text())["ntotal"] == 0
    blocker.rmdir()
    store.close()
    assert json.loads((tmp_path / "index.json").read_text())["generation"] == _generation(tmp_path)
    again = FaissStore(tmp_path)
    try:
        assert again._index.ntotal == 120 and _finds_itself(again, vecs, ids)
    finally:
        again.close()
