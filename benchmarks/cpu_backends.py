"""CPU backends of sentence-transformers models: torch vs onnx vs onnx-int8 vs openvino (vs fastembed).

One run measures every side on the same texts, sides alternated round by round (A,B,C,D,A,B,C,D), with the
machine's load average printed beside each figure (the box may be shared):

- embed: items/s of ``Embedder.embed`` over the stdlib docstrings corpus (the first ``--docs`` of its 235);
- index: items/s of ``Collection.add_files`` (what ``omniret index`` runs) over the same documents as files;
- rest: items/s of the service (``/v1/embeddings``, one text per request) under 32 concurrent clients;
- rerank: pairs/s of a CrossEncoder (MiniLM with a fresh seeded head: no pretrained CrossEncoder ships on PyPI)
  scoring 4 queries against ``--pairs`` documents; its quality is agreement with torch's scores;
- quality: nDCG@10 of the embedder on the stdlib docstrings queries (held out: nothing here was tuned on it).

fastembed runs the onnx side's exported file through ``TextEmbedding.add_custom_model`` (the same weights);
it is measured on embed only, where it can be compared like for like.

    OMP_NUM_THREADS=1 python benchmarks/cpu_backends.py --threads 1 --rounds 2 --rest-seconds 5 --docs 64 --pairs 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "eval" / "data" / "stdlib-docs"
SIDES = [("torch", None), ("onnx", None), ("onnx", "int8"), ("openvino", None)]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ndcg10(emb: Any, corpus: list[dict[str, Any]], queries: list[dict[str, Any]], qrels: dict[str, dict[str, int]],
           doc_vecs: np.ndarray | None = None) -> float:
    from omniret.evaluation.metrics import evaluate_run

    d = doc_vecs if doc_vecs is not None else emb_texts(emb, [c["text"] for c in corpus])
    q = emb_texts(emb, [x["text"] for x in queries])
    sims = q @ d.T
    run = {x["_id"]: {corpus[j]["_id"]: float(sims[i, j]) for j in np.argsort(-sims[i])[:100]}
           for i, x in enumerate(queries)}
    return evaluate_run(qrels, run, ["ndcg@10"])["ndcg@10"]


def emb_texts(emb: Any, texts: list[str]) -> np.ndarray:
    if hasattr(emb, "embed_partial"):  # an omniret Embedder
        return emb.embed(texts)
    return np.array(list(emb.embed(texts, batch_size=16)), dtype=np.float32)  # fastembed


def cross_encoder(minilm: str, out: Path) -> Path:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder(minilm, num_labels=1, device="cpu")
    with torch.no_grad():
        ce.model.classifier.weight.normal_(0.0, 1.0)
    ce.save_pretrained(str(out))
    return out


def index_rate(emb: Any, folder: Path, root: Path) -> float:
    from omniret.index import open_collection

    name = f"c{time.monotonic_ns()}"
    coll = open_collection(name, root=root, embedder=emb)
    try:
        report = coll.add_files([folder], progress=False)
    finally:
        coll.close()
    shutil.rmtree(root / name, ignore_errors=True)
    return float(report.items_per_second)


def rest_rate(emb: Any, seconds: float) -> float:
    sys.path.insert(0, str(HERE))
    from api_load import run_setting  # the service load generator of benchmarks/api_load.py

    return run_setting(emb, micro_batching=True, clients=32, items=1, seconds=seconds, wait_ms=5.0)["items_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every side")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rest-seconds", type=float, default=8.0)
    ap.add_argument("--docs", type=int, default=235, help="documents per throughput measure (quality: all 235)")
    ap.add_argument("--pairs", type=int, default=32, help="documents per rerank query (4 queries)")
    ap.add_argument("--skip", default="", help="comma list of measures to skip: embed,index,rest,rerank")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from omniret.embed import load_embedder
    from omniret.registry import lookup
    from omniret.rerank import load_reranker

    spec = lookup("minilm")
    assert spec is not None and spec.path
    corpus, queries = read_jsonl(DATA / "corpus.jsonl"), read_jsonl(DATA / "queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, r = line.split("\t")
        qrels.setdefault(q, {})[d] = int(r)
    work = Path(tempfile.mkdtemp(prefix="cpu-backends-"))
    exports, docs = work / "exports", work / "docs"
    docs.mkdir()
    for c in corpus[:args.docs]:
        (docs / f"{c['_id']}.txt").write_text(c["text"], encoding="utf-8")
    ce_path = cross_encoder(spec.path, work / "ce")
    texts = [c["text"] for c in corpus]
    sample = texts[:args.docs]

    sides: dict[str, Any] = {}
    rerankers: dict[str, Any] = {}
    for backend, q in SIDES:
        label = backend + (f"-{q}" if q else "")
        t0 = time.perf_counter()
        sides[label] = load_embedder(spec.path, backend=backend, quantize=q, threads=args.threads, export_dir=exports)
        rerankers[label] = load_reranker(ce_path, backend=backend, quantize=q, threads=args.threads,
                                         export_dir=exports / "cross-encoder")
        print(f"loaded {label} (export included) in {time.perf_counter() - t0:.1f} s", flush=True)
    try:  # fastembed on the onnx side's exported file: the same weights, its own runtime loop
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        onnx_file = next(exports.glob("onnx-[0-9a-f]*/onnx/model.onnx"))
        fe_dir = work / "fastembed"
        shutil.copytree(spec.path, fe_dir)
        (fe_dir / "onnx").mkdir()
        shutil.copy(onnx_file, fe_dir / "onnx" / "model.onnx")
        TextEmbedding.add_custom_model(model="local/all-MiniLM-L6-v2", pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf="local/all-MiniLM-L6-v2"), dim=384,
                                       model_file="onnx/model.onnx")
        sides["fastembed"] = TextEmbedding("local/all-MiniLM-L6-v2", specific_model_path=str(fe_dir),
                                           threads=args.threads)
    except Exception as e:  # noqa: BLE001 - reported, the other sides still run
        print(f"fastembed: not measured ({type(e).__name__}: {e})")

    ref_vecs = sides["torch"].embed(texts)
    quality: dict[str, dict[str, float]] = {}
    for label, emb in sides.items():
        vecs = emb_texts(emb, texts)
        quality[label] = {"ndcg10": ndcg10(emb, corpus, queries, qrels, vecs),
                          "min_cos": float((vecs * ref_vecs).sum(axis=1).min())}
    ce_queries = [x["text"] for x in queries[:4]]
    ce_docs = texts[:args.pairs]
    ce_ref = np.concatenate([rerankers["torch"].score(qq, ce_docs) for qq in ce_queries])
    for label, rr in rerankers.items():
        got = np.concatenate([rr.score(qq, ce_docs) for qq in ce_queries])
        quality[label]["ce_max_abs"] = float(np.abs(got - ce_ref).max())
        quality[label]["ce_corr"] = float(np.corrcoef(got, ce_ref)[0, 1])

    rates: dict[str, dict[str, list[tuple[float, str]]]] = {k: {} for k in sides}
    for rnd in range(args.rounds):
        for label, emb in sides.items():
            own = label != "fastembed"
            if "embed" not in skip:
                t0 = time.perf_counter()
                emb_texts(emb, sample)
                rates[label].setdefault("embed", []).append((len(sample) / (time.perf_counter() - t0), load()))
            if own and "index" not in skip:
                rates[label].setdefault("index", []).append((index_rate(emb, docs, work / "cols"), load()))
            if own and "rest" not in skip:
                rates[label].setdefault("rest", []).append((rest_rate(emb, args.rest_seconds), load()))
            if own and "rerank" not in skip:
                t0 = time.perf_counter()
                for qq in ce_queries:
                    rerankers[label].score(qq, ce_docs)
                rates[label].setdefault("rerank", []).append(
                    (len(ce_queries) * len(ce_docs) / (time.perf_counter() - t0), load()))
            print(f"round {rnd} {label}: " + ", ".join(f"{m} {v[-1][0]:.1f}/s ({v[-1][1]})"
                                                       for m, v in rates[label].items()), flush=True)

    measures = ["embed", "index", "rest", "rerank"]
    print(f"\nthreads per side: {args.threads}; rounds: {args.rounds}; cpus: {os.cpu_count()}; {load()} at the end")
    print("| side | " + " | ".join(f"{m} /s (x torch)" for m in measures)
          + " | nDCG@10 | Δ nDCG | min cos | CE max abs Δ | CE corr |")
    print("|" + "---|" * (len(measures) + 6))
    base = {m: float(np.median([r for r, _ in rates["torch"].get(m, [(float("nan"), "")])])) for m in measures}
    for label in sides:
        cells = []
        for m in measures:
            vals = [r for r, _ in rates[label].get(m, [])]
            if not vals:
                cells.append("–")
                continue
            med = float(np.median(vals))
            cells.append(f"{med:.1f} ({med / base[m]:.2f}x)")
        qd = quality[label]
        ce = (f"{qd['ce_max_abs']:.4f} | {qd['ce_corr']:.4f}" if "ce_max_abs" in qd else "– | –")
        print(f"| {label} | " + " | ".join(cells) + f" | {qd['ndcg10']:.4f} | "
              f"{qd['ndcg10'] - quality['torch']['ndcg10']:+.4f} | {qd['min_cos']:.5f} | {ce} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
