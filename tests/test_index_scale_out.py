"""Scale-out indexing: a device pool (``--devices cpu,cpu``) gives the collection a single process gives;
a killed worker or coordinator fails clearly and a re-run completes with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from index_runs import (
    assert_rerun_completes,
    assert_same_collection,
    assert_same_ledger,
    collection_vectors,
    indexed_sources,
    make_corpus,
    wait_for_sources,
    write_numbered_docs,
)

from omniret.embed.pool import EmbedderPool, parse_devices
from omniret.errors import ConfigError, WorkerError
from omniret.index import open_collection


@pytest.mark.parametrize("model", ["minilm", "tiny_vl"])
def test_device_pool_equals_single_process(tmp_path: Path, model: str, request: pytest.FixtureRequest) -> None:
    path = str(request.getfixturevalue("minilm_path" if model == "minilm" else "tiny_vl_embedding"))
    folder = make_corpus(tmp_path / "corpus")
    opts = {"segment_seconds": 2.0, "batch_items": 4, "chunk_tokens": 64, "chunk_overlap": 8}
    single = open_collection("single", root=tmp_path / "cols", embedder=path)
    rep1 = single.add_files(folder, progress=False, **opts)
    pooled = open_collection("pooled", root=tmp_path / "cols", embedder=single.embedder)
    rep2 = pooled.add_files(folder, progress=False, devices="cpu,cpu", **opts)
    # each report says what ran: the pool on its two devices, or this process alone
    assert rep1.executor.to_dict() == {"kind": "threads"}
    assert rep2.executor.to_dict() == {"kind": "pool", "devices": ["cpu", "cpu"]}
    assert rep2.failed == rep1.failed == []
    assert (rep2.indexed_files, rep2.indexed_items) == (rep1.indexed_files, rep1.indexed_items)
    a, b = collection_vectors(single), collection_vectors(pooled)
    assert_same_collection(a, b)
    assert_same_ledger(single, pooled)
    expected = {"long.md#chunk=1", "media/science.pdf#page=2"}
    if model == "tiny_vl":
        expected |= {"media/red.png", "media/clip.mp4#t=0-2", "media/clip.mp4#t=2-3"}
    assert expected <= set(a)
    assert [g["payload"] for g in pooled.get(sorted(a))] == [g["payload"] for g in single.get(sorted(a))]
    single.close()
    pooled.close()


def test_killed_worker_fails_its_batch_and_rerun_completes(tmp_path: Path, minilm_path: Path) -> None:
    n = 400
    docs = write_numbered_docs(tmp_path / "docs", n)
    pool = EmbedderPool(minilm_path, "cpu,cpu")
    coll = open_collection("c", root=tmp_path / "cols", embedder=pool)
    ledger = tmp_path / "cols" / "c" / "ledger.sqlite"
    victim = pool.pids[1]

    def kill_when_started() -> None:
        wait_for_sources(ledger, 16, timeout_s=120, poll_s=0.05)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"embedding worker 1 \(cpu, pid \d+\) died while embedding a batch of "
                                          r"\d+ items: it exited with code -9"):
        coll.add_files(docs, progress=False, batch_items=4)
    killer.join()
    assert time.monotonic() - t0 < 120
    pool.close()
    coll.close()
    done = indexed_sources(ledger)
    assert 16 <= done < n
    # re-run in one process: the rest is indexed, every id once, and the vectors are the single-process ones
    assert_rerun_completes(tmp_path / "cols", docs, n, done, batch_items=4)
    coll = open_collection("c", root=tmp_path / "cols")
    ref = open_collection("ref", root=tmp_path / "cols", embedder=coll.embedder)
    ref.add_files(docs, progress=False, batch_items=4)
    assert_same_collection(collection_vectors(coll), collection_vectors(ref))
    coll.close()
    ref.close()


def test_killed_coordinator_rerun_completes_and_workers_exit(tmp_path: Path, minilm_path: Path) -> None:
    """``omniret index --devices cpu,cpu`` killed with SIGKILL: its workers exit, the re-run finishes the job."""
    import psutil

    n = 300
    docs = write_numbered_docs(tmp_path / "docs", n)
    root = tmp_path / "cols"
    cmd = [sys.executable, "-c", "from omniret.cli import main; main()", "index", str(docs), "--collection", "c",
           "--model", str(minilm_path), "--root", str(root), "--json", "--batch-items", "4", "--devices", "cpu,cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = root / "c" / "ledger.sqlite"
    wait_for_sources(ledger, 12, timeout_s=240, running=lambda: proc.poll() is None)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(children) >= 2
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"workers outlived their coordinator: {alive}"
    done = indexed_sources(ledger)
    assert 0 < done < n
    assert_rerun_completes(root, docs, n, done, batch_items=8, torn=4)  # killed inside a 4-file commit


def test_worker_that_cannot_load_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    with pytest.raises(WorkerError, match=r"embedding worker 0 \(cpu, pid \d+\) could not load model .*no-such-model"):
        EmbedderPool(missing, ["cpu"], start_timeout=300)


def test_bad_devices_fail_before_any_work(tmp_path: Path) -> None:
    for bad, msg in [("tpu0", r"device 'tpu0' is not a device: use auto, cpu"),
                     ("cuda:7", r"device 'cuda:7': this machine has \d+ visible CUDA device"),
                     ("cpu,,cpu", r"give auto, or a comma-separated list")]:
        with pytest.raises(ConfigError, match=msg):
            parse_devices(bad)
    assert parse_devices("auto") in (["cpu"], [f"cuda:{i}" for i in range(8)][: len(parse_devices("auto") or [])])
    assert parse_devices(" cpu , cpu") == ["cpu", "cpu"]
    root = tmp_path / "cols"
    out = subprocess.run([sys.executable, "-c", "from omniret.cli import main; main()", "index", str(tmp_path),
                          "--collection", "c", "--root", str(root), "--model", "minilm", "--devices", "tpu0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "device 'tpu0' is not a device" in out.stderr
    assert not root.exists(), "a collection was created before the devices were checked"
