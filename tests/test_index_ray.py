"""``--ray``: a Ray Data job on a local cluster gives the collection a single process gives; the killed
driver's re-run completes with nothing lost or duplicated; a bad address or a missing Ray fails first."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
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

from omniret.errors import ConfigError
from omniret.index import open_collection

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'omniret[ray]')")


def _cleanup(procs: list) -> None:  # noqa: ANN001
    """Ray's local processes sometimes outlive a driver by a while: end the ones this test started."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _started_since(before: set[int]) -> list:  # noqa: ANN001
    """This process's children that were not there before, except multiprocessing's resource tracker.

    The tracker is shared by the whole test session; killing it makes the next spawn warn (an error here).
    """
    import psutil

    started = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline()):
                started.append(p)
    return started


@pytest.fixture
def local_ray():  # noqa: ANN201
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    children = _started_since(before)
    yield ray
    children += [p for p in _started_since(before) if p not in children]
    ray.shutdown()
    _cleanup(children)


def test_ray_job_equals_single_process(tmp_path: Path, minilm_path: Path, tiny_vl_embedding: Path,
                                       local_ray) -> None:  # noqa: ANN001
    folder = make_corpus(tmp_path / "corpus")
    (folder / "empty.txt").write_bytes(b"")
    opts = {"segment_seconds": 2.0, "batch_items": 4, "chunk_tokens": 64, "chunk_overlap": 8}
    for model in (minilm_path, tiny_vl_embedding):
        name = Path(model).name.replace(".", "-")
        single = open_collection(f"single-{name}", root=tmp_path / "cols", embedder=str(model))
        rep1 = single.add_files(folder, progress=False, **opts)
        viaray = open_collection(f"ray-{name}", root=tmp_path / "cols", embedder=single.embedder)
        rep2 = viaray.add_files(folder, progress=False, ray=True, ray_actors=1, **opts)
        assert rep1.executor.to_dict() == {"kind": "threads"}
        assert rep2.executor.to_dict() == {"kind": "ray", "actors": 1}
        assert rep2.failed == rep1.failed == [("empty.txt", "empty file")]
        assert sorted(rep2.skipped) == sorted(rep1.skipped)
        assert (rep2.indexed_files, rep2.indexed_items) == (rep1.indexed_files, rep1.indexed_items)
        a, b = collection_vectors(single), collection_vectors(viaray)
        assert_same_collection(a, b)
        assert_same_ledger(single, viaray)  # the same keys, roots, paths, hashes and ids
        assert [g["payload"] for g in viaray.get(sorted(a))] == [g["payload"] for g in single.get(sorted(a))]
        # the same ledger: a re-run reads nothing it indexed
        again = viaray.add_files(folder, progress=False, ray=True, ray_actors=1, **opts)
        assert again.unchanged == rep1.indexed_files and again.indexed_files == 0
        single.close()
        viaray.close()
    assert {"media/red.png", "media/clip.mp4#t=2-3", "media/science.pdf#page=2"} <= set(b)


def test_killed_ray_driver_rerun_completes(tmp_path: Path, minilm_path: Path) -> None:
    import psutil

    n = 240
    docs = write_numbered_docs(tmp_path / "docs", n)
    root = tmp_path / "cols"
    cmd = [sys.executable, "-c", "from omniret.cli import main; main()", "index", str(docs), "--collection", "c",
           "--model", str(minilm_path), "--root", str(root), "--json", "--batch-items", "4", "--ray-actors", "1",
           "--ray"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = root / "c" / "ledger.sqlite"
    children: list = []

    def running() -> bool:
        # the Ray processes the driver started, remembered while it lives, so none outlives the test
        nonlocal children
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(proc.pid).children(recursive=True) or children
        return proc.poll() is None

    wait_for_sources(ledger, 8, timeout_s=400, running=running, poll_s=0.2)
    assert proc.poll() is None, "the driver ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _cleanup(children)
    done = indexed_sources(ledger)
    assert 0 < done < n
    assert_rerun_completes(root, docs, n, done, batch_items=8, torn=4)  # killed inside a 4-file commit


def test_unreachable_address_and_missing_ray_fail_before_any_work(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from omniret.index.ray_ingest import check_address, import_ray

    with pytest.raises(ConfigError, match=r"--ray 'ray://127\.0\.0\.1:1': cannot reach the Ray cluster at "
                                          r"127\.0\.0\.1:1"):
        check_address("ray://127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"give auto, ray://HOST:PORT"):
        check_address("nowhere")
    root = tmp_path / "cols"
    out = subprocess.run([sys.executable, "-c", "from omniret.cli import main; main()", "index", str(tmp_path),
                          "--collection", "c", "--root", str(root), "--model", "minilm", "--ray", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in out.stderr
    assert not root.exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"--ray needs Ray Data: pip install 'omniret\[ray\]'"):
        import_ray()


def test_prune_after_a_ray_run_removes_the_deleted_files(tmp_path: Path, minilm_path: Path, local_ray) -> None:  # noqa: ANN001
    """``omniret index DIR --ray``, two files deleted, ``omniret index DIR --prune``: their items are gone.

    Before one commit path the Ray writer stored every ledger row under root ``.``, so the prune (which
    selects the rows of the folder it was given) never found them and deleted files stayed searchable."""
    from typer.testing import CliRunner

    from omniret.cli import app

    docs = write_numbered_docs(tmp_path / "docs", 8)
    base = ["index", str(docs), "--collection", "c", "--model", str(minilm_path), "--root", str(tmp_path / "cols"),
            "--batch-size", "4"]
    runner = CliRunner()
    first = runner.invoke(app, [*base, "--json", "--ray-actors", "1", "--ray", "local"])
    assert first.exit_code == 0, first.output
    for i in (2, 5):
        (docs / f"doc{i:03d}.txt").unlink()
    pruned = runner.invoke(app, [*base, "--prune"])
    assert pruned.exit_code == 0, pruned.output
    said = " ".join(pruned.stdout.split())  # the console may wrap the summary line
    assert "6 unchanged, 0 skipped, 0 failed, 2 pruned; 6 items in total" in said
    coll = open_collection("c", root=tmp_path / "cols")
    assert sorted(coll.store.ids()) == [f"doc{i:03d}.txt#chunk=0" for i in (0, 1, 3, 4, 6, 7)]
    coll.close()
    # each run says what ran: the first on Ray with its one embedding actor, the second in this process
    assert json.loads(first.stdout)["executor"] == {"kind": "ray", "actors": 1}
    assert "executor: threads (this process)" in said
