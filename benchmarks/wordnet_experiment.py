"""WordNet retrieval experiment: all-MiniLM-L6-v2 before and after omniret's training stages.

Runs the real CLI commands (printed as they run) and scores nDCG@10 on the held-out test queries with
``omniret.evaluation.metrics.evaluate_run`` (pytrec_eval), at Matryoshka dims 384, 256, 128, 64, 32:

    python benchmarks/wordnet_data.py --out .cache/wordnet-cpu --train 1000 --test 300 --corpus 1500
    OMP_NUM_THREADS=1 python benchmarks/wordnet_experiment.py --data .cache/wordnet-cpu --work .cache/wordnet-cpu-runs

Sized for a CPU: 1 epoch, batch 64, max length 128; the pretrained model's corpus and query vectors are
computed once and cached under ``--work`` (rows (a) and (r) share them). A stage whose output already
exists is skipped, so ``--rerank-loss listwise --rerank-lr 2e-4`` on the same ``--work`` adds only a second
teacher (``reranker-listwise``) and its distilled student.

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


def sh(cmd: str, done: Path | None = None) -> float:
    """Run ``cmd``; skipped (0 s) when ``done`` exists, so a rerun only does the missing stages."""
    if done is not None and done.exists():
        print(f"$ {cmd}  # skipped: {done} exists", flush=True)
        return 0.0
    print(f"$ {cmd}", flush=True)
    t = time.perf_counter()
    subprocess.run(shlex.split(cmd), check=True)
    return time.perf_counter() - t


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def scores(model: str, data: Path, reranker: str | None = None, top: int = 20,
           cache: Path | None = None) -> dict[int, float]:
    """nDCG@10 per dim; ``cache`` (an .npz) keeps ``model``'s corpus and query vectors between calls."""
    import numpy as np

    from omniret.embed import load_embedder
    from omniret.evaluation.metrics import evaluate_run

    corpus = read_jsonl(data / "corpus.jsonl")
    queries = read_jsonl(data / "test_queries.jsonl")
    qrels = json.loads((data / "test_qrels.json").read_text())
    emb = load_embedder(model)
    if cache is not None and cache.is_file():
        z = np.load(cache)
        dv, qv = z["docs"], z["queries"]
    else:
        dv = emb.embed([d["text"] for d in corpus])
        qv = emb.embed([q["text"] for q in queries])
        if cache is not None:
            np.savez(cache, docs=dv, queries=qv)
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
        out[d] = evaluate_run(qrels, run, ["ndcg@10"])["ndcg@10"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".cache/wordnet-cpu"))
    ap.add_argument("--work", type=Path, default=Path(".cache/wordnet-cpu-runs"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rerank-loss", default="pointwise", choices=["pointwise", "listwise", "both"])
    ap.add_argument("--rerank-lr", type=float, default=5e-5)
    ap.add_argument("--rerank-epochs", type=int, default=1)
    a = ap.parse_args()
    w, d = a.work, a.data
    common = f"--epochs 1 --batch-size {a.batch_size} --max-length {a.max_length}"
    base_cache = w / "base_vectors.npz"
    w.mkdir(parents=True, exist_ok=True)
    omniret = str(Path(sys.executable).parent / "omniret")
    times: dict[str, float] = {}
    results: dict[str, dict[int, float]] = {}
    t = time.perf_counter()
    results["(a) pretrained all-MiniLM-L6-v2"] = scores("minilm", d, cache=base_cache)
    times["eval"] = time.perf_counter() - t
    # mine without the test positives (older data folders lack mine_corpus.jsonl: the leaky full corpus)
    mine_corpus = d / "mine_corpus.jsonl" if (d / "mine_corpus.jsonl").is_file() else d / "corpus.jsonl"
    times["mine"] = sh(f"{omniret} mine --model minilm --data {d}/train.jsonl --corpus {mine_corpus} "
                       f"--out {w}/mined.jsonl --num-negatives 3 --skip-top 0", w / "mined.jsonl")
    times["contrastive"] = sh(f"{omniret} train embed --model minilm --data {w}/mined.jsonl --out {w}/contrastive "
                              f"{common} --lr 5e-5 --hard-negatives 1", w / "contrastive" / "omniret.json")
    results["(b) contrastive + mined hard negatives"] = scores(str(w / "contrastive"), d)
    times["matryoshka"] = sh(f"{omniret} train embed --model minilm --data {w}/mined.jsonl --out {w}/matryoshka "
                             f"{common} --lr 5e-5 --hard-negatives 1 "
                             f"--dims 256,128,64,32", w / "matryoshka" / "omniret.json")
    results["(b') contrastive + Matryoshka loss"] = scores(str(w / "matryoshka"), d)
    suffix = ("" if a.rerank_loss == "pointwise" else f"-{a.rerank_loss}") \
        + ("" if a.rerank_epochs == 1 else f"-{a.rerank_epochs}ep")
    rerank_common = common.replace("--epochs 1", f"--epochs {a.rerank_epochs}")
    rr, dist = w / f"reranker{suffix}", w / f"distilled{suffix}"
    times["rerank"] = sh(f"{omniret} train rerank --reranker minilm --data {w}/mined.jsonl --out {rr} "
                         f"{rerank_common} --lr {a.rerank_lr} --hard-negatives 1 --loss {a.rerank_loss}", rr / "omniret.json")
    tag = f"{a.rerank_loss}, {a.rerank_epochs} epoch{'s' if a.rerank_epochs > 1 else ''}"
    results[f"(r) pretrained top-20 reranked by the trained cross-encoder ({tag})"] = scores(
        "minilm", d, str(rr), cache=base_cache)
    times["distill"] = sh(f"{omniret} train distill --model {w}/contrastive --teacher {rr} "
                          f"--data {w}/mined.jsonl --out {dist} {common} "
                          f"--lr 2e-5 --hard-negatives 3 --teacher-temperature 1.0 --student-temperature 0.05",
                          dist / "omniret.json")
    results[f"(c) (b) distilled from the cross-encoder ({tag})"] = scores(str(dist), d)
    print("\n| model | " + " | ".join(f"nDCG@10 @{x}" for x in DIMS) + " |")
    print("| --- |" + " --- |" * len(DIMS))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[x]:.4f}" if x in r else "–" for x in DIMS) + " |")
    print("\nseconds:", json.dumps({k: round(v, 1) for k, v in times.items()}))
    (w / f"results{suffix}.json").write_text(json.dumps({"results": results, "seconds": times}, indent=2))


if __name__ == "__main__":
    main()
