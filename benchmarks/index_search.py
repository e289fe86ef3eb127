"""Vector-store QPS and recall@10 against exact search, and the end-to-end CLI indexing rate.

Every store is measured through omniret's ``VectorStore`` (so a hit includes its SQLite/Qdrant payload
lookup), one query per call as a service sends them. Vectors are clustered and L2-normalised (random
uniform vectors make every index look good or bad for the wrong reasons). The baseline of each row is
the exact FAISS flat store on the same data, same run; recall@10 is against exact numpy search.

    python benchmarks/index_search.py                     # default: ~5 min on 2 busy cores
    python benchmarks/index_search.py --n 100000 --dims 256 1024 --qdrant-n 100000   # the full grid
    python benchmarks/index_search.py --only funnel       # funnel search rows only (~3 min)

Funnel rows: one FAISS store of ``--funnel-n`` x ``--funnel-full-dim`` vectors with a short-prefix index;
``search(funnel=False)`` (flat exact at full dim, the baseline) and ``search(funnel=True)`` (k x
``--funnel-candidates`` candidates from the prefix, re-scored at full dim) on the same store, same queries.
Two data sets: "matryoshka-like" (clustered, per-component scale (1+j)^-0.5, so the prefix carries most of
the signal, as a Matryoshka-trained model's does) and "isotropic" (the clustered data above: the prefix is
no better than any other slice, the funnel's worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clustered(n: int, dim: int, seed: int, clusters: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ base.T
    return np.argsort(-sims, axis=1)[:, :k]


def bench_store(store, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int = 10) -> dict:  # noqa: ANN001
    ids = [str(i) for i in range(len(base))]
    t0 = time.perf_counter()
    for s in range(0, len(base), 5000):
        store.upsert(ids[s:s + 5000], base[s:s + 5000], [{"i": i} for i in range(s, min(s + 5000, len(base)))])
    build = time.perf_counter() - t0
    import faiss

    store.search(queries[:5], k)  # warm-up (GPU clone, caches)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query per call: OpenMP fan-out only costs on a shared box
    t0 = time.perf_counter()
    found = [store.search(q[None, :], k)[0] for q in queries]
    secs = time.perf_counter() - t0
    faiss.omp_set_num_threads(threads)
    recall = np.mean([len({int(h.id) for h in f} & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)])
    return {"build_s": round(build, 1), "qps": round(len(queries) / secs, 1), "recall@10": round(float(recall), 4)}


def run_vectors(n: int, dim: int, qdrant_n: int, kinds: list[str], n_queries: int, tmp: Path) -> list[dict]:
    from omniret.index.faiss import FaissStore
    from omniret.index.qdrant_store import QdrantStore

    base = clustered(n, dim, seed=dim)
    queries = clustered(n_queries, dim, seed=dim + 1)
    truth = exact_topk(base, queries, 10)
    rows = []
    for kind in kinds:
        opts = {"save_every": 10**9}
        store = FaissStore(tmp / f"faiss-{kind}-{dim}", dim=dim, index=kind, options=opts)  # type: ignore[arg-type]
        r = bench_store(store, base, queries, truth)
        rows.append({"store": f"faiss-{kind}", "n": n, "dim": dim, **r, "exact": store.exact})
        store.close()
        print(json.dumps(rows[-1]), flush=True)
    if qdrant_n > 0:
        qb = base[:qdrant_n]
        qtruth = exact_topk(qb, queries, 10)
        # in-memory local mode: on disk, local mode commits each point alone (see qdrant_disk_write_rate)
        store = QdrantStore("bench", dim=dim, path=":memory:", options={"batch_size": 1000})
        r = bench_store(store, qb, queries, qtruth)
        rows.append({"store": "qdrant-local(mem)", "n": qdrant_n, "dim": dim, **r, "exact": True})
        store.close()
        print(json.dumps(rows[-1]), flush=True)
    return rows


def qdrant_disk_write_rate(dim: int, n: int, tmp: Path) -> dict:
    """Upsert rate of Qdrant local mode on disk (qdrant-client persists every point in its own commit)."""
    from omniret.index.faiss import FaissStore
    from omniret.index.qdrant_store import QdrantStore

    base = clustered(n, dim, seed=7)
    ids = [str(i) for i in range(n)]
    out = {"dim": dim, "n": n}
    for name, store in (("qdrant_local_disk", QdrantStore("w", dim=dim, path=tmp / "qw", options={"batch_size": 500})),
                        ("faiss_flat_disk", FaissStore(tmp / "fw", dim=dim))):
        t0 = time.perf_counter()
        for s in range(0, n, 500):
            store.upsert(ids[s:s + 500], base[s:s + 500])
        out[f"{name}_items_per_s"] = round(n / (time.perf_counter() - t0), 1)
        store.close()
    print(json.dumps(out), flush=True)
    return out


def matryoshka_like(n: int, dim: int, seed: int, clusters: int = 200, decay: float = 0.5) -> np.ndarray:
    """Clustered vectors whose variance falls along the components (Matryoshka-style), L2-normalised."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(10_000 + dim).standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x *= (1 + np.arange(dim, dtype=np.float32)) ** -decay
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_search(store, queries: np.ndarray, truth: np.ndarray, k: int = 10, **kw) -> dict:  # noqa: ANN001
    import faiss

    store.search(queries[:5], k, **kw)  # warm-up
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    found = [store.search(q[None, :], k, **kw)[0] for q in queries]
    secs = time.perf_counter() - t0
    faiss.omp_set_num_threads(threads)
    recall = np.mean([len({int(h.id) for h in f} & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)])
    return {"qps": round(len(queries) / secs, 1), "recall@10": round(float(recall), 4)}


def run_funnel(n: int, dim: int, funnel_dims: list[int], mult: int, n_queries: int, tmp: Path,
               datasets: tuple[str, ...] = ("matryoshka-like", "isotropic"), decay: float = 0.5) -> list[dict]:
    """Flat exact at full dim vs funnel search (prefix candidates, full-dim re-score) on the same store."""
    import shutil

    from omniret.index.faiss import FaissStore

    rows = []
    for data in datasets:
        if data == "matryoshka-like":
            base, queries = (matryoshka_like(m, dim, seed=s, decay=decay) for m, s in ((n, dim), (n_queries, dim + 1)))
        else:
            base, queries = clustered(n, dim, seed=dim), clustered(n_queries, dim, seed=dim + 1)
        truth = exact_topk(base, queries, 10)
        for i, fd in enumerate(funnel_dims if data == "matryoshka-like" else funnel_dims[-1:]):
            folder = tmp / f"funnel-{data}-{fd}"
            store = FaissStore(folder, dim=dim, funnel_dim=fd,
                               options={"save_every": 10**9, "funnel_candidates": mult})
            ids = [str(j) for j in range(n)]
            t0 = time.perf_counter()
            for s in range(0, n, 5000):
                store.upsert(ids[s:s + 5000], base[s:s + 5000], [{"i": j} for j in range(s, min(s + 5000, n))])
            build = round(time.perf_counter() - t0, 1)
            if i == 0:
                r = timed_search(store, queries, truth, funnel=False)
                rows.append({"store": "faiss-flat (exact, full dim)", "data": data, "n": n, "dim": dim,
                             "build_s": build, **r})
                print(json.dumps(rows[-1]), flush=True)
            r = timed_search(store, queries, truth, funnel=True)
            rows.append({"store": f"faiss-flat + funnel {fd} (x{mult})", "data": data, "n": n, "dim": dim,
                         "decay": decay if data == "matryoshka-like" else None,
                         "build_s": build, **r})
            print(json.dumps(rows[-1]), flush=True)
            store.close()
            shutil.rmtree(folder)
    return rows


def run_cli_indexing(n_files: int, tmp: Path) -> dict:
    """``omniret index`` on generated text files with MiniLM; baseline: the model alone on the same texts."""
    words = ["retrieval", "vector", "index", "query", "document", "rerank", "embedding", "image", "video", "page", "search", "result", "model", "cluster", "shard", "replica", "latency", "recall", "precision", "token", "chunk", "overlap", "batch"]
    rng = np.random.default_rng(0)
    docs = tmp / "docs"
    docs.mkdir()
    texts = []
    for i in range(n_files):
        t = f"Document {i}. " + " ".join(rng.choice(words, 80))
        texts.append(t)
        (docs / f"d{i:05d}.txt").write_text(t)
    env = {**os.environ, "OMNIRET_HOME": str(tmp / "home"), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "from omniret.cli import main; main()", "index", str(docs),
                          "--collection", "bench", "--model", "minilm", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    rep = json.loads(out.stdout)
    from omniret.embed import load_embedder

    emb = load_embedder("minilm")
    t0 = time.perf_counter()
    emb.embed(texts)
    model_rate = n_files / (time.perf_counter() - t0)
    row = {"files": n_files, "items": rep["indexed_items"], "cli_items_per_s": rep["items_per_second"],
           "cli_wall_s_with_startup": round(wall, 1), "model_only_items_per_s": round(model_rate, 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="vectors at the smallest dim")
    ap.add_argument("--n-large", type=int, default=20_000, help="vectors at dims >= 1024 (time budget)")
    ap.add_argument("--dims", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq", "sq8"])
    ap.add_argument("--qdrant-n", type=int, default=20_000, help="vectors in Qdrant local mode (0: skip)")
    ap.add_argument("--qdrant-disk-n", type=int, default=2000, help="points for the on-disk write rate")
    ap.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads for building")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--files", type=int, default=500, help="text files for the CLI indexing rate (0: skip)")
    ap.add_argument("--only", choices=["stores", "funnel", "cli"], nargs="+", default=None,
                    help="run only these parts (default: all)")
    ap.add_argument("--funnel-n", type=int, default=100_000)
    ap.add_argument("--funnel-full-dim", type=int, default=1024)
    ap.add_argument("--funnel-dims", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--funnel-candidates", type=int, default=10, help="funnel pool as a multiple of k")
    ap.add_argument("--funnel-data", nargs="+", choices=["matryoshka-like", "isotropic"],
                    default=["matryoshka-like", "isotropic"])
    ap.add_argument("--funnel-decay", type=float, default=0.5,
                    help="matryoshka-like data: component j scaled by (1+j)^-decay (0: isotropic)")
    args = ap.parse_args()
    parts = set(args.only or ["stores", "funnel", "cli"])
    import faiss

    # OpenMP threads spin at barriers: on a shared, loaded box one thread builds faster than two
    faiss.omp_set_num_threads(args.threads)
    t_all = time.perf_counter()
    rows, funnel_rows, disk, cli = [], [], None, None
    with tempfile.TemporaryDirectory(prefix="omniret-bench-") as d:
        tmp = Path(d)
        if "stores" in parts:
            for dim in args.dims:
                n = args.n if dim < 1024 else args.n_large
                rows += run_vectors(n, dim, min(args.qdrant_n, n), args.kinds, args.queries, tmp)
            disk = qdrant_disk_write_rate(args.dims[0], args.qdrant_disk_n, tmp) if args.qdrant_disk_n else None
        if "funnel" in parts:
            funnel_rows = run_funnel(args.funnel_n, args.funnel_full_dim, args.funnel_dims, args.funnel_candidates,
                                     args.queries, tmp, tuple(args.funnel_data), args.funnel_decay)
        if "cli" in parts and args.files:
            cli = run_cli_indexing(args.files, tmp)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    if rows:
        print("\n| store | n | dim | build s | QPS (1 query/call) | recall@10 |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['store']} | {r['n']} | {r['dim']} | {r['build_s']} | {r['qps']} | {r['recall@10']} |")
    if funnel_rows:
        print("\n| search | data | n | dim | QPS (1 query/call) | recall@10 |\n| --- | --- | --- | --- | --- | --- |")
    for r in funnel_rows:
        print(f"| {r['store']} | {r['data']} | {r['n']} | {r['dim']} | {r['qps']} | {r['recall@10']} |")
    if disk:
        print(f"\nupserts on disk ({disk['n']} x {disk['dim']}): Qdrant local {disk['qdrant_local_disk_items_per_s']}"
              f" items/s, FAISS store {disk['faiss_flat_disk_items_per_s']} items/s")
    if cli:
        print(f"\nCLI indexing: {cli['items']} items, {cli['cli_items_per_s']} items/s (model alone: "
              f"{cli['model_only_items_per_s']} items/s); wall with startup {cli['cli_wall_s_with_startup']} s")


if __name__ == "__main__":
    main()
