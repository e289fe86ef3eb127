"""Snapshot, restore and copy throughput of a FAISS collection, beside re-indexing it (the cost avoided).

Builds a collection of ``--n`` random unit vectors (``--dim``, default 384: all-MiniLM-L6-v2's width) with
a short text each, then times, in one run:

- ``snapshot``: collection -> archive; ``restore``: archive -> a new FAISS collection (verified);
- ``copy``: FAISS flat -> FAISS flat, and to Qdrant local mode on a ``--qdrant-n`` slice (local mode on disk
  commits every point separately, so it is timed on a slice and said so);
- the baseline: re-indexing, i.e. embedding every item again with all-MiniLM-L6-v2, measured on
  ``--embed-sample`` texts and extrapolated to ``--n`` (said so in the output);
- the wait a writer sees while a snapshot runs: a thread upserting batches of 100, its per-batch latency
  with no snapshot, and during a snapshot with the store's periodic FAISS-file write done in the upsert
  (``save_behind=False``, the baseline: how the store wrote before) and behind it from a copy
  (``save_behind=True``, the default), alternated none, sync, behind, none, sync, behind.

Run: ``OMP_NUM_THREADS=1 python benchmarks/collection_transfer.py --n 100000`` (``--writers-only``: only
the last part, on a collection of ``--n`` items). The machine load (``os.getloadavg``) is printed beside
the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from omniret.index import open_collection
from omniret.index.transfer import copy_collection, restore_collection, snapshot_collection


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(coll: object, n: int, dim: int, prefix: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for s in range(0, n, 5000):
        m = min(5000, n - s)
        coll.add_vectors([f"{prefix}{i:07d}" for i in range(s, s + m)], _unit(rng, m, dim),  # type: ignore[attr-defined]
                         [{"text": f"stored item {i} about topic {i % 97}"} for i in range(s, s + m)])


def _writer_latencies(coll: object, dim: int, seconds: float, stop: threading.Event | None, tag: str) -> list[float]:
    rng = np.random.default_rng(7)
    out: list[float] = []
    t_end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < t_end and not (stop is not None and stop.is_set()):
        ids = [f"w{tag}-{k}-{j}" for j in range(100)]
        t = time.perf_counter()
        coll.add_vectors(ids, _unit(rng, 100, dim), [{"text": i} for i in ids])  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t)
        k += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--qdrant-n", type=int, default=2000)
    ap.add_argument("--embed-sample", type=int, default=512)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--writers-only", action="store_true",
                    help="only the writers-during-a-snapshot part (fill, then the alternated sides)")
    args = ap.parse_args()
    from omniret.embed import load_embedder
    from omniret.registry import lookup

    spec = lookup("minilm")
    assert spec is not None and spec.path
    emb = load_embedder(spec.path)
    work = Path(args.work or tempfile.mkdtemp(prefix="omniret-transfer-"))
    root = work / "cols"
    print(f"load before: {os.getloadavg()}  cpus: {os.cpu_count()}  n={args.n} dim={args.dim}")
    coll = open_collection("src", root=root, embedder=emb, dim=args.dim if args.dim == emb.dim else None)
    t = time.perf_counter()
    _fill(coll, args.n, args.dim, "s", 0)
    fill_s = time.perf_counter() - t
    coll.close()
    print(f"add_vectors (precomputed) {args.n} items: {fill_s:.1f} s ({args.n / fill_s:,.0f} items/s)")

    if not args.writers_only:
        _transfers(args, emb, work, root)
    _writers_during_snapshot(args, emb, work, root)
    print(f"load after: {os.getloadavg()}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def _transfers(args: argparse.Namespace, emb: object, work: Path, root: Path) -> None:
    """Snapshot, restore, copy (FAISS and a Qdrant slice), and the re-embedding baseline."""
    arch = work / "src.tar"
    r = snapshot_collection("src", arch, root=root)
    mb = r.bytes / 1e6
    print(f"snapshot: {r.seconds:.1f} s, {r.points / r.seconds:,.0f} items/s, {mb / r.seconds:,.0f} MB/s "
          f"({mb:,.0f} MB archive)")
    r = restore_collection(arch, name="restored", root=root, verify=True)
    print(f"restore (faiss, with check pass and verify): {r.seconds:.1f} s, {r.points / r.seconds:,.0f} items/s, "
          f"{mb / r.seconds:,.0f} MB/s, verify ok={r.verify.ok if r.verify else None}")
    r = copy_collection("src", "copied", root=root, verify=False)
    print(f"copy faiss flat -> faiss flat: {r.seconds:.1f} s, {r.points / r.seconds:,.0f} items/s, "
          f"{mb / r.seconds:,.0f} MB/s")
    small = open_collection("slice", root=root, embedder=emb)
    _fill(small, args.qdrant_n, args.dim, "q", 1)
    small.close()
    r = copy_collection("slice", "slice-qdrant", root=root, backend="qdrant", verify=False)
    print(f"copy faiss -> qdrant local mode ({args.qdrant_n} items slice): {r.seconds:.1f} s, "
          f"{r.points / r.seconds:,.0f} items/s")

    texts = [f"stored item {i} about topic {i % 97} and a few more words to make a sentence" for i in
             range(args.embed_sample)]
    emb.embed(texts[:32])
    t = time.perf_counter()
    emb.embed(texts)
    per = (time.perf_counter() - t) / len(texts)
    print(f"baseline re-indexing: embedding {args.embed_sample} texts with all-MiniLM-L6-v2 at {1 / per:,.0f} "
          f"items/s -> {args.n} items extrapolated: {per * args.n:.0f} s (embedding only; reading files and "
          "storing come on top; a Qwen3-VL 2B model on images is orders slower)")



SIDES = {"none": "no snapshot", "sync": "snapshot running, FAISS files written in the upsert (save_behind=False)",
         "behind": "snapshot running, FAISS files written behind it (save_behind=True, default)"}


def _writers_during_snapshot(args: argparse.Namespace, emb: object, work: Path, root: Path) -> None:
    """A writer thread's per-batch latency with no snapshot, and during a snapshot with either way of
    writing the FAISS files every ``save_every`` (50,000) changes; sides alternated, twice."""
    waits: dict[str, list[float]] = {side: [] for side in SIDES}
    for rnd, side in enumerate(list(SIDES) * 2):
        live = open_collection("src", root=root, embedder=emb, save_behind=side != "sync")
        tag = f"{side}{rnd}"
        if side == "none":
            waits[side] += _writer_latencies(live, args.dim, 5.0, None, tag)
            live.close()
            continue
        stop = threading.Event()
        got: list[float] = []
        th = threading.Thread(target=lambda live=live, got=got, stop=stop, tag=tag: got.extend(
            _writer_latencies(live, args.dim, 600, stop, tag)))
        th.start()
        t = time.perf_counter()
        snapshot_collection("src", work / "during.tar", root=root)
        snap_s = time.perf_counter() - t
        stop.set()
        th.join()
        live.close()
        waits[side] += got
        print(f"snapshot during writes ({side}): {snap_s:.1f} s, {len(got)} writer batches meanwhile, "
              f"load {os.getloadavg()[0]:.1f}")
    for side, xs in waits.items():
        q = statistics.quantiles(xs, n=100) if len(xs) > 1 else xs * 99
        print(f"writer upsert of 100 items, {SIDES[side]}: p50 {statistics.median(xs) * 1000:.1f} ms, "
              f"p99 {q[98] * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms over {len(xs)} batches")


if __name__ == "__main__":
    main()
