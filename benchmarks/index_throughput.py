"""Indexing as fast as the model: ``omniret index`` items/s beside plain ``SentenceTransformer.encode``.

Same run, same texts, alternated A, B, A, B (``--rounds``): A is sentence-transformers' ``encode`` of the
chunk texts ingestion makes (the model alone: no files, no chunking, no store), B is ingestion of the
files into a fresh FAISS collection (hashing, reading, chunking, embedding, SQLite/FAISS writes, ledger)
through ``Collection.add_files``, in this process. Then the scale-out modes against the single process
on the same files, with the stored vectors compared: ``--devices cpu,cpu`` (an ``EmbedderPool``) and
``--ray`` (a local Ray cluster; ``--skip-ray`` to leave it out). ``os.getloadavg()`` is printed with
every figure: on a shared machine the load says how much the numbers mean.

    python benchmarks/index_throughput.py                      # 1,200 one-chunk files with MiniLM
    python benchmarks/index_throughput.py --profile prof.txt   # plus a cProfile of one ingestion run
    python benchmarks/index_throughput.py --model Qwen/Qwen3-VL-Embedding-2B --devices auto --skip-ray  # GPUs

On a multi-GPU machine ``--devices auto`` compares every GPU against ``--single-device cuda:0``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["retrieval", "index", "vector", "model", "query", "document", "search", "embed", "rank", "image", "video", "page", "table", "chart", "figure", "cluster", "shard", "replica", "device", "worker", "batch", "token", "chunk", "ledger", "store", "payload", "filter"]


def make_files(folder: Path, n: int, words: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(rng.choice(WORDS, words))
        (folder / f"doc{i:05d}.txt").write_text(f"Document {i}. {body}.", encoding="utf-8")


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def vectors(coll) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {g["id"]: g["vector"] for g in coll.get(coll.store.ids())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--files", type=int, default=1200)
    ap.add_argument("--words", type=int, default=60, help="words per file (one chunk at the default 200 tokens)")
    ap.add_argument("--rounds", type=int, default=3, help="A,B pairs (0: only the scale-out comparisons)")
    ap.add_argument("--batch-items", type=int, default=64)
    ap.add_argument("--devices", default="cpu,cpu")
    ap.add_argument("--single-device", default=None, help="device of the single-process runs (default: the model's)")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-devices", action="store_true")
    ap.add_argument("--profile", default=None, help="write a cProfile (cumulative) of one ingestion run here")
    args = ap.parse_args()

    from omniret.embed import load_embedder
    from omniret.index import open_collection

    work = Path(tempfile.mkdtemp(prefix="omniret-throughput-"))
    docs = work / "docs"
    make_files(docs, args.files, args.words)
    emb = load_embedder(args.model, device=args.single_device)
    st = getattr(emb, "model", None)
    # the texts ingestion embeds: one chunk per file (checked below)
    probe = open_collection("probe", root=work / "cols", embedder=emb)
    rep = probe.add_files(docs, progress=False, batch_items=args.batch_items)
    texts = [g["payload"]["text"] for g in probe.get(probe.store.ids())]
    ref = vectors(probe)
    probe.close()
    assert rep.indexed_items == args.files, f"{rep.indexed_items} items from {args.files} files: not one chunk each"
    print(f"{args.files} files, {len(texts)} one-chunk items, model {emb.name}; loadavg {os.getloadavg()}")

    def encode() -> float:
        t0 = time.perf_counter()
        if st is not None and hasattr(st, "encode"):
            st.encode(texts, batch_size=getattr(emb, "batch_size", 32), normalize_embeddings=True,
                      convert_to_numpy=True, show_progress_bar=False)
        else:
            emb.embed(texts)
        return len(texts) / (time.perf_counter() - t0)

    def ingest(name: str, **kw: object) -> tuple[float, dict[str, np.ndarray]]:
        coll = open_collection(name, root=work / "cols", embedder=emb)
        t0 = time.perf_counter()
        r = coll.add_files(docs, progress=False, batch_items=args.batch_items, **kw)  # type: ignore[arg-type]
        rate = r.indexed_items / (time.perf_counter() - t0)
        v = vectors(coll)
        coll.close()
        shutil.rmtree(work / "cols" / name)
        return rate, v

    a_rates, b_rates = [], []
    if args.rounds:
        encode()  # warm-up
    for i in range(args.rounds):
        la = load()
        a = encode()
        lb = load()
        b, _ = ingest(f"b{i}")
        a_rates.append(a)
        b_rates.append(b)
        print(f"round {i + 1}: encode {a:.1f} items/s (load {la}) | omniret index {b:.1f} items/s (load {lb}) | "
              f"ratio {b / a:.3f}", flush=True)
    if args.rounds:
        ratio = np.median(np.array(b_rates) / np.array(a_rates))
        print(f"median: encode {np.median(a_rates):.1f} items/s, omniret index {np.median(b_rates):.1f} items/s, "
              f"ratio {ratio:.3f}; loadavg {os.getloadavg()}")

    if args.profile:
        coll = open_collection("prof", root=work / "cols", embedder=emb)
        prof = cProfile.Profile()
        prof.enable()
        coll.add_files(docs, progress=False, batch_items=args.batch_items)
        prof.disable()
        coll.close()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
        Path(args.profile).write_text(out.getvalue())
        print(f"profile written to {args.profile}")

    def compare(label: str, **kw: object) -> None:
        single_rate, single_v = ingest("single")
        l0 = load()
        rate, v = ingest("scaled", **kw)
        worst = max(float(np.abs(v[k] - ref[k]).max()) for k in ref) if sorted(v) == sorted(ref) else float("nan")
        print(f"{label}: {rate:.1f} items/s vs single process {single_rate:.1f} items/s (x{rate / single_rate:.2f}); "
              f"same ids: {sorted(v) == sorted(ref)}, max |dv| {worst:.2e}; loadavg {l0} -> {load()}", flush=True)

    if not args.skip_devices:
        compare(f"--devices {args.devices}", devices=args.devices)
    if not args.skip_ray:
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            compare("--ray (local cluster)", ray=True)
        finally:
            ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
