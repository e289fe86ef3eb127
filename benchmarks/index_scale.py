"""An index that holds millions: FAISS flat, HNSW, IVF-PQ and SQ8 at 1M x 1024, beside exact search.

For each kind, in a fresh process: build time (train + add), index memory (the process's anonymous
resident memory after the build, minus before; the base vectors are a memory-mapped ``.npy`` and do
not count), QPS (one query per call, one OpenMP thread, as a service sends them) and recall@10
against exact search over the same vectors, computed in the same run. Then recall-target tuning
(``omniret.index.tuning``, the code behind ``--recall``) against the fixed default parameters: the
setting chosen on held-out queries, then recall and QPS on the test queries. Last, the flat and SQ8
files opened memory-mapped (``mmap`` store option, ``IO_FLAG_MMAP_IFC``): resident memory and QPS.

    python benchmarks/index_scale.py                                   # 1M x 1024 (hours on 2 busy cores)
    python benchmarks/index_scale.py --n 200000 --dim 256              # quick look
    python benchmarks/index_scale.py --time-box 1800 --hnsw-m 16 --hnsw-efc 40

``--time-box`` (seconds) bounds each build: an index still building when it runs out is measured at the
size it reached, and the table says so (its exact baseline is recomputed over that prefix).
Parameters mirror ``FaissStore``'s construction (IVF ``nlist`` ~ 4 sqrt(n) capped by ``--nlist``, PQ
``m=64`` x 8 bits, SQ 8-bit, HNSW ``M`` / ``efConstruction``); the exact re-scoring ``FaissStore`` adds
for compressed kinds is measured too (``+rescore``), from the float32 vectors it keeps anyway.
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


def rss_anon_mb() -> float:
    """Anonymous resident memory (heap, not file-backed pages such as the mapped base vectors)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_data(path: Path, n: int, dim: int, seed: int, clusters: int = 1000, chunk: int = 50_000) -> None:
    """Clustered, L2-normalised float32 vectors written chunk by chunk (never all in memory)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centers[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, n: int, chunk: int = 100_000) -> np.ndarray:
    """Exact top-k by inner product over ``base[:n]``, streamed."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for s in range(0, n, chunk):
        sims = queries @ np.asarray(base[s:min(n, s + chunk)]).T
        allv = np.concatenate([best_s, sims], axis=1)
        alli = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + sims.shape[1]), sims.shape)], axis=1)
        top = np.argpartition(-allv, k, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(allv, top, axis=1), np.take_along_axis(alli, top, axis=1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))


def build(kind: str, base: np.ndarray, n: int, args: argparse.Namespace, time_box: float) -> tuple[object, int, float]:
    """The index, how many vectors it holds (less than n when the time box ran out), build seconds."""
    import faiss

    d = base.shape[1]
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, args.hnsw_m, ip)
        index.hnsw.efConstruction = args.hnsw_efc
        index.hnsw.efSearch = 128  # FaissStore's default
    elif kind == "sq8":
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip)
    elif kind == "ivfpq":
        nlist = min(args.nlist, int(max(16, 4 * np.sqrt(n))))
        m = next(c for c in (64, 32, 16, 8) if d % c == 0)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, ip)
        index.nprobe = 32  # FaissStore's default
    else:
        raise ValueError(kind)
    t0 = time.perf_counter()
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = np.asarray(base[np.sort(rng.choice(n, min(n, args.train), replace=False))])
        index.train(sample)
    added = 0
    step = 20_000
    while added < n:
        m = min(step, n - added)
        index.add(np.asarray(base[added:added + m]))
        added += m
        if time.perf_counter() - t0 > time_box:
            break
    return index, added, time.perf_counter() - t0


def timed_search(index: object, queries: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, float]:
    """One query per call; returns ids and queries per second."""
    out = np.empty((len(queries), k), np.int64)
    index.search(queries[:2], k, params=params)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for i in range(len(queries)):
        out[i] = index.search(queries[i:i + 1], k, params=params)[1][0]  # type: ignore[attr-defined]
    return out, len(queries) / (time.perf_counter() - t0)


def rescored(index: object, base: np.ndarray, queries: np.ndarray, k: int, factor: int, params: object = None
             ) -> tuple[np.ndarray, float]:
    """FaissStore's path for compressed kinds: k x factor candidates, re-scored from float32 vectors."""
    out = np.empty((len(queries), k), np.int64)
    t0 = time.perf_counter()
    for i in range(len(queries)):
        cand = index.search(queries[i:i + 1], k * factor, params=params)[1][0]  # type: ignore[attr-defined]
        cand = cand[cand >= 0]
        vecs = np.asarray(base[np.sort(cand)])
        order = np.argsort(-(vecs @ queries[i]))[:k]
        out[i] = np.sort(cand)[order]
    return out, len(queries) / (time.perf_counter() - t0)


def run_kind(args: argparse.Namespace) -> dict:
    """One kind, in this (fresh) process."""
    import faiss

    from omniret.index.tuning import EF_GRID, nprobe_grid, walk_grid

    faiss.omp_set_num_threads(args.threads)
    base = np.load(args.data, mmap_mode="r")
    queries = np.load(args.queries)
    tune_q = np.load(args.tune_queries)
    n = min(args.n, len(base))
    before = rss_anon_mb()
    index, built, secs = build(args.kind, base, n, args, args.time_box)
    mem = rss_anon_mb() - before
    truth = np.load(args.truth) if built == n else exact_topk(base, queries, 10, built)
    faiss.omp_set_num_threads(1)
    nq = args.flat_queries if args.kind in ("flat", "sq8") else len(queries)  # exhaustive scans: fewer queries
    row: dict = {"kind": args.kind, "n": built, "complete": built == n, "build_s": round(secs, 1),
                 "mem_mb": round(mem, 1)}
    found, qps = timed_search(index, queries[:nq], 10)
    row.update(qps=round(qps, 1), recall10=round(recall(found, truth[:nq]), 4))
    if args.kind in ("sq8", "ivfpq"):
        f2, q2 = rescored(index, base, queries[:nq], 10, 4 if args.kind == "ivfpq" else 2)
        row.update(rescore_qps=round(q2, 1), rescore_recall10=round(recall(f2, truth[:nq]), 4))
    # recall-target tuning (held-out tuning queries) vs the fixed default setting
    if args.kind in ("hnsw", "ivfpq"):
        faiss.omp_set_num_threads(args.threads)
        tune_truth = exact_topk(base, tune_q, 10, built)
        faiss.omp_set_num_threads(1)
        if args.kind == "hnsw":
            def probe(v: int) -> np.ndarray:
                return index.search(tune_q, 10, params=faiss.SearchParametersHNSW(efSearch=v))[1]  # type: ignore[attr-defined]
            grid, fixed_params, name, fixed = EF_GRID, faiss.SearchParametersHNSW(efSearch=128), "efSearch", 128
        else:
            def probe(v: int) -> np.ndarray:
                return index.search(tune_q, 10, params=faiss.SearchParametersIVF(nprobe=v))[1]  # type: ignore[attr-defined]
            grid, fixed_params, name, fixed = (nprobe_grid(index.nlist), faiss.SearchParametersIVF(nprobe=32),  # type: ignore[attr-defined]
                                               "nprobe", 32)
        t0 = time.perf_counter()
        v, r, met, tried = walk_grid(probe, grid, tune_truth, np.full(len(tune_q), -1), args.target)
        tune_s = time.perf_counter() - t0
        tuned_params = (faiss.SearchParametersHNSW(efSearch=v) if args.kind == "hnsw"
                        else faiss.SearchParametersIVF(nprobe=v))
        ff, fq = timed_search(index, queries, 10, fixed_params)
        tf, tq = timed_search(index, queries, 10, tuned_params)
        row["tuning"] = {"param": name, "fixed": fixed, "fixed_recall10": round(recall(ff, truth), 4),
                         "fixed_qps": round(fq, 1), "target": args.target, "chosen": v, "met": met,
                         "tune_recall10": round(r, 4), "tuned_recall10": round(recall(tf, truth), 4),
                         "tuned_qps": round(tq, 1), "tune_s": round(tune_s, 1), "tried": tried}
        if args.kind == "ivfpq" and not met:
            best = None
            for factor in (2, 4, 8, 16):
                rf, rq = rescored(index, base, queries, 10, factor, tuned_params)
                best = (factor, recall(rf, truth), rq)
                if best[1] >= args.target:
                    break
            assert best is not None
            row["tuning"].update(rescore=best[0], tuned_rescore_recall10=round(best[1], 4),
                                 tuned_rescore_qps=round(best[2], 1))
    # memory-mapped serving: write the file, map it, measure
    if args.kind in ("flat", "sq8") and built == n:
        path = Path(args.workdir) / f"{args.kind}.faiss"
        faiss.write_index(index, str(path))
        del index
        import gc

        gc.collect()
        m0 = rss_anon_mb()
        mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        found, qps = timed_search(mapped, queries[:nq], 10)
        row["mmap"] = {"mem_mb": round(rss_anon_mb() - m0, 1), "qps": round(qps, 1),
                       "recall10": round(recall(found, truth[:nq]), 4)}
        path.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--flat-queries", type=int, default=100, help="flat scans are slow: fewer queries")
    ap.add_argument("--kinds", default="flat,sq8,ivfpq,hnsw")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-efc", type=int, default=40)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads for builds")
    ap.add_argument("--time-box", type=float, default=3600.0, help="seconds per build")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    ap.add_argument("--tune-queries", help=argparse.SUPPRESS)
    ap.add_argument("--queries-path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kind:  # child: one kind
        args.queries = args.queries_path
        print(json.dumps(run_kind(args)), flush=True)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="omniret-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data, qpath, tpath, truth_path = (work / "base.npy", work / "queries.npy", work / "tune.npy", work / "truth.npy")
    t0 = time.perf_counter()
    if not data.exists() or np.load(data, mmap_mode="r").shape != (args.n, args.dim):
        make_data(data, args.n, args.dim, seed=0)
    base = np.load(data, mmap_mode="r")
    # queries: perturbed base vectors from the same clusters, never stored themselves
    for path, count, seed in ((qpath, args.queries, 1), (tpath, 300, 2)):
        r = np.random.default_rng(seed)
        noise = 0.3 / np.sqrt(args.dim) * r.standard_normal((count, args.dim)).astype(np.float32)
        q = np.asarray(base[np.sort(r.choice(args.n, count, replace=False))]) + noise
        np.save(path, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    import faiss

    faiss.omp_set_num_threads(args.threads)
    te = time.perf_counter()
    if truth_path.exists() and np.load(truth_path).shape == (args.queries, 10):  # same seeds: same queries
        exact_s = float("nan")
    else:
        truth = exact_topk(base, np.load(qpath), 10, args.n)
        exact_s = time.perf_counter() - te
        np.save(truth_path, truth)
    print(f"data {args.n} x {args.dim} ready in {time.perf_counter() - t0:.0f} s; exact top-10 of {args.queries} "
          f"queries (numpy, streamed): {exact_s:.1f} s = {args.queries / exact_s:.2f} QPS batched; "
          f"loadavg {os.getloadavg()}", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        cmd = [sys.executable, __file__, "--kind", kind, "--data", str(data), "--truth", str(truth_path),
               "--tune-queries", str(tpath), "--workdir", str(work), "--n", str(args.n), "--dim", str(args.dim),
               "--hnsw-m", str(args.hnsw_m), "--hnsw-efc", str(args.hnsw_efc), "--nlist", str(args.nlist),
               "--train", str(args.train), "--threads", str(args.threads), "--time-box", str(args.time_box),
               "--target", str(args.target), "--flat-queries", str(args.flat_queries),
               "--queries-path", str(qpath)]
        load0 = os.getloadavg()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{kind}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["loadavg"] = [round(x, 1) for x in (*load0, *os.getloadavg())]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| index | vectors | build s | index memory MB | QPS (1 query/call) | recall@10 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        size = f"{r['n']:,}" + ("" if r["complete"] else " (time box)")
        print(f"| {r['kind']} | {size} | {r['build_s']} | {r['mem_mb']} | {r['qps']} | {r['recall10']} |")
        if "rescore_qps" in r:
            print(f"| {r['kind']} + exact re-score | | | | {r['rescore_qps']} | {r['rescore_recall10']} |")
        if "mmap" in r:
            m = r["mmap"]
            print(f"| {r['kind']} memory-mapped | | | {m['mem_mb']} | {m['qps']} | {m['recall10']} |")
    for r in rows:
        if "tuning" in r:
            t = r["tuning"]
            print(f"\n{r['kind']}: fixed {t['param']}={t['fixed']}: recall@10 {t['fixed_recall10']}, {t['fixed_qps']} QPS; "
                  f"--recall {t['target']} chose {t['param']}={t['chosen']} (met={t['met']}, {t['tune_s']} s): "
                  f"recall@10 {t['tuned_recall10']}, {t['tuned_qps']} QPS"
                  + (f"; + re-score x{t['rescore']}: recall@10 {t['tuned_rescore_recall10']}, "
                     f"{t['tuned_rescore_qps']} QPS" if "rescore" in t else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
