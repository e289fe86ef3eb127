"""WordNet retrieval experiment: all-MiniLM-L6-v2 before and after omniret's training stages.

Runs the real CLI commands (printed as they run) and scores nDCG@10 on the held-out test queries with
``omniret.evaluation.metrics.evaluate_run`` (pytrec_eval), at Matryoshka dims 384, 256, 128, 64, 32:

    python benchmarks/wordnet_data.py --out .cache/wordnet
    python benchmarks/wordnet_experiment.py --data .cache/wordnet --work .cache/wordnet-runs

Rows: (a) pretrained; (b) contrastive fine-tuning with mined hard negatives; (b') the same plus the
Matryoshka loss; (r) the MiniLM cross-encoder trained with the reranker stage (reranking the pretrained
model's top 20, for reference); (c) (b) distilled from that cross-encoder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

DIMS = (384, 256, 128, 64, 32)


def sh(cmd: str) -> float:
    print(f"$ {cmd}", flush=True)
    t = time.perf_counter()
    subprocess.run(shlex.split(cmd), check=True)
    return time.perf_counter() - t


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def scores(model: str, data: Path, reranker: str | None = None, top: int = 20) -> dict[int, float]:
    import numpy as np

    from omniret.embed import load_embedder
    from omniret.evaluation.metrics import evaluate_run

    corpus = read_jsonl(data / "corpus.jsonl")
    queries = read_jsonl(data / "test_queries.jsonl")
    qrels = json.loads((data / "test_qrels.json").read_text())
    emb = load_embedder(model)
    dv = emb.embed([d["text"] for d in corpus])
    qv = emb.embed([q["text"] for q in queries])
    out: dict[int, float] = {}
    dims = [d for d in DIMS if d in (*emb.dims, emb.dim)] if reranker is None else [emb.dim]
    if reranker is None and len(emb.dims) <= 1:
        dims = list(DIMS)  # plain truncation of a model trained without Matryoshka
    for d in dims:
        def cut(m: np.ndarray, d: int = d) -> np.ndarray:
            x = m[:, :d]
            return x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = cut(qv) @ cut(dv).T
        top_idx = np.argsort(-sim, axis=1)[:, :100]
        run = {q["id"]: {corpus[j]["id"]: float(sim[i, j]) for j in top_idx[i]} for i, q in enumerate(queries)}
        if reranker is not None:
            from omniret.rerank import load_reranker

            rr = load_reranker(reranker)
            run = {}
            for i, q in enumerate(queries):
                cand = top_idx[i, :top]
                s = rr.score(q["text"], [corpus[j]["text"] for j in cand])
                run[q["id"]] = {corpus[j]["id"]: float(v) for j, v in zip(cand, s, strict=True)}
        out[d] = evaluate_run(qrels, run, ["ndcg_cut_10"])["ndcg_cut_10"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".cache/wordnet"))
    ap.add_argument("--work", type=Path, default=Path(".cache/wordnet-runs"))
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    w, d = a.work, a.data
    w.mkdir(parents=True, exist_ok=True)
    omniret = str(Path(sys.executable).parent / "omniret")
    times: dict[str, float] = {}
    results: dict[str, dict[int, float]] = {}
    t = time.perf_counter()
    results["(a) pretrained all-MiniLM-L6-v2"] = scores("minilm", d)
    times["eval"] = time.perf_counter() - t
    times["mine"] = sh(f"{omniret} mine --model minilm --data {d}/train.jsonl --corpus {d}/corpus.jsonl "
                       f"--out {w}/mined.jsonl --num-negatives 3 --skip-top 0")
    times["contrastive"] = sh(f"{omniret} train embed --model minilm --data {w}/mined.jsonl --out {w}/contrastive "
                              f"--epochs 1 --batch-size {a.batch_size} --lr 5e-5 --hard-negatives 1")
    results["(b) contrastive + mined hard negatives"] = scores(str(w / "contrastive"), d)
    times["matryoshka"] = sh(f"{omniret} train embed --model minilm --data {w}/mined.jsonl --out {w}/matryoshka "
                             f"--epochs 1 --batch-size {a.batch_size} --lr 5e-5 --hard-negatives 1 "
                             f"--matryoshka-dims 256,128,64,32")
    results["(b') contrastive + Matryoshka loss"] = scores(str(w / "matryoshka"), d)
    times["rerank"] = sh(f"{omniret} train rerank --model minilm --data {w}/mined.jsonl --out {w}/reranker "
                         f"--epochs 1 --batch-size {a.batch_size} --lr 5e-5 --hard-negatives 3")
    results["(r) pretrained top-20 reranked by the trained cross-encoder"] = scores("minilm", d, str(w / "reranker"))
    times["distill"] = sh(f"{omniret} train distill --model {w}/contrastive --teacher {w}/reranker "
                          f"--data {w}/mined.jsonl --out {w}/distilled --epochs 1 --batch-size {a.batch_size} "
                          f"--lr 2e-5 --hard-negatives 3 --teacher-temperature 1.0 --student-temperature 0.05")
    results["(c) (b) distilled from the cross-encoder"] = scores(str(w / "distilled"), d)
    print("\n| model | " + " | ".join(f"nDCG@10 @{x}" for x in DIMS) + " |")
    print("| --- |" + " --- |" * len(DIMS))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[x]:.4f}" if x in r else "–" for x in DIMS) + " |")
    print("\nseconds:", json.dumps({k: round(v, 1) for k, v in times.items()}))
    (w / "results.json").write_text(json.dumps({"results": results, "seconds": times}, indent=2))


if __name__ == "__main__":
    main()
