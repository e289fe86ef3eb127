"""The training recipe on WordNet: pretrained < contrastive, reranked >= first stage, distilled > contrastive.

Runs the real CLI commands (printed as they run, each timed) on a WordNet split from
``benchmarks/wordnet_data.py`` and scores every row on the same held-out test queries (nDCG@10 and MRR@10
over the whole corpus, pytrec_eval through ``omniret.evaluation.metrics``):

    python benchmarks/wordnet_data.py --out .cache/wordnet-small --train 400 --test 150 --corpus 700
    OMP_NUM_THREADS=2 python benchmarks/recipe_experiment.py --data .cache/wordnet-small --work .cache/recipe-runs

Rows: (a) pretrained all-MiniLM-L6-v2; (b) contrastive fine-tuning with mined hard negatives;
(r0) the plain sentence-transformers cross-encoder recipe (MiniLM body, fresh head, BCE over the positive
and 3 mined negatives, 1 epoch, lr 2e-5, batch 16) reranking (b)'s top 20 — the baseline; (r) omniret's
anchored reranker built from (b) reranking (b)'s top 20; (c) (b) distilled from (r). Every training
command validates on a held-out tenth of the training queries and keeps its best weights. Sized for a
shared CPU; a stage whose output exists is skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def sh(cmd: str, done: Path, log: Path) -> float:
    """Run ``cmd`` unless ``done`` exists; its wall seconds, kept in ``log`` so a rerun that skips the stage
    still reports them (0 when never measured)."""
    known: dict[str, float] = json.loads(log.read_text()) if log.is_file() else {}
    if done.exists():
        print(f"$ {cmd}  # skipped: {done} exists", flush=True)
        return known.get(done.as_posix(), 0.0)
    print(f"$ {cmd}", flush=True)
    t = time.perf_counter()
    subprocess.run(shlex.split(cmd), check=True)
    known[done.as_posix()] = round(time.perf_counter() - t, 1)
    log.write_text(json.dumps(known, indent=2))
    return known[done.as_posix()]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


class Bench:
    """The test queries, the corpus and the qrels; scores embedders and rerankers on them."""

    def __init__(self, data: Path, work: Path, top: int = 20) -> None:
        self.corpus = read_jsonl(data / "corpus.jsonl")
        self.queries = read_jsonl(data / "test_queries.jsonl")
        self.qrels = json.loads((data / "test_qrels.json").read_text())
        self.work = work
        self.top = top

    def vectors(self, model: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
        cache = self.work / f"vectors-{tag}.npz"
        if cache.is_file():
            z = np.load(cache)
            return z["docs"], z["queries"]
        from omniret.embed import load_embedder

        emb = load_embedder(model, device="cpu")
        dv = emb.embed([d["text"] for d in self.corpus])
        qv = emb.embed([q["text"] for q in self.queries])
        np.savez(cache, docs=dv, queries=qv)
        return dv, qv

    def scored(self, run: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Mean nDCG@10 and MRR@10, plus each query's nDCG@10 (for the paired comparisons)."""
        from omniret.evaluation.metrics import evaluate_run

        per = evaluate_run(self.qrels, run, ["ndcg@10", "mrr@10"], per_query=True)
        out: dict[str, Any] = {m: float(np.mean([v[m] for v in per.values()])) for m in ("ndcg@10", "mrr@10")}
        out["per_query"] = {q: v["ndcg@10"] for q, v in per.items()}
        return out

    def first_stage(self, model: str, tag: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        dv, qv = self.vectors(model, tag)
        sim = qv @ dv.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :100]
        run = {q["id"]: {self.corpus[j]["id"]: float(sim[i, j]) for j in top[i]} for i, q in enumerate(self.queries)}
        return self.scored(run), top, sim

    def reranked(self, reranker: str, top: np.ndarray) -> dict[str, Any]:
        from omniret.rerank import load_reranker

        rr = load_reranker(reranker, device="cpu", max_length=128)
        run = {}
        for i, q in enumerate(self.queries):
            cand = top[i, :self.top]
            s = rr.score(q["text"], [self.corpus[j]["text"] for j in cand])
            run[q["id"]] = {self.corpus[j]["id"]: float(v) for j, v in zip(cand, s, strict=True)}
        return self.scored(run)


def paired(new: dict[str, float], old: dict[str, float], rounds: int = 10_000, seed: int = 0) -> str:
    """``new`` minus ``old`` over the same queries: mean nDCG@10 difference, queries up / down, and a paired
    bootstrap 95% interval of the mean difference."""
    q = sorted(new)
    d = np.array([new[k] - old[k] for k in q])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(rounds, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (f"{d.mean():+.4f} nDCG@10 (better on {(d > 0).sum()}, worse on {(d < 0).sum()} of {len(d)} queries; "
            f"paired bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}])")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".cache/wordnet-small"))
    ap.add_argument("--work", type=Path, default=Path(".cache/recipe-runs"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--rerank-epochs", type=int, default=1)
    ap.add_argument("--embed-epochs", type=int, default=1, help="epochs of (b), the contrastive student")
    ap.add_argument("--label-weight", type=float, default=0.0, help="distillation: CE on the positive beside the KL")
    ap.add_argument("--controls", action="store_true",
                    help="also (c') distillation with --label-weight 1 and (b+) its control: (b) trained one more "
                         "epoch on the same lines with the contrastive loss alone")
    ap.add_argument("--skip-baseline", action="store_true", help="leave out row (r0)")
    a = ap.parse_args()
    w, d = a.work, a.data
    w.mkdir(parents=True, exist_ok=True)
    omniret = str(Path(sys.executable).parent / "omniret")
    common = f"--batch-size {a.batch_size} --max-length {a.max_length} --device cpu"
    secs: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    bench = Bench(d, w)

    done_rows = w / "rows.json"
    cached: dict[str, dict] = json.loads(done_rows.read_text()) if done_rows.is_file() else {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        t = time.perf_counter()
        out = fn()
        secs[name] = round(time.perf_counter() - t, 1)
        return out

    def row(name: str, key: str, fn: Callable[[], dict[str, Any]]) -> None:
        """A row's metrics, measured once and kept in rows.json so a rerun skips it."""
        if key not in cached:
            cached[key] = {"metrics": timed(key, fn), "seconds": secs.get(key)}
            done_rows.write_text(json.dumps(cached, indent=2))
        rows[name] = cached[key]["metrics"]
        secs.setdefault(key, cached[key]["seconds"])

    # validation on held-out training queries: the reranker on the first stage's top 10
    conf = w / "train.yaml"
    conf.write_text("eval_depth: 10\n", encoding="utf-8")
    val = f"--val-split 0.1 --config {conf}"
    row("(a) pretrained all-MiniLM-L6-v2", "eval a", lambda: bench.first_stage("minilm", "a")[0])
    mine_corpus = d / "mine_corpus.jsonl"
    secs["mine"] = sh(f"{omniret} mine --model minilm --data {d}/train.jsonl --corpus {mine_corpus} "
                      f"--out {w}/mined.jsonl --num-negatives 3", w / "mined.jsonl", w / "stage-seconds.json")
    secs["train b"] = sh(f"{omniret} train embed --model minilm --data {w}/mined.jsonl --out {w}/contrastive "
                         f"{common} --epochs {a.embed_epochs} --lr 5e-5 {val}", w / "contrastive" / "omniret.json", w / "stage-seconds.json")
    _, top_b, _ = bench.first_stage(str(w / "contrastive"), "b")
    row("(b) contrastive + mined hard negatives", "eval b", lambda: bench.first_stage(str(w / "contrastive"), "b")[0])
    if not a.skip_baseline:
        secs["train r0"] = sh(f"{omniret} train rerank --reranker minilm --init fresh --data {w}/mined.jsonl "
                              f"--out {w}/st-recipe --loss pointwise --hard-negatives 3 --epochs 1 --lr 2e-5 "
                              f"--batch-size 16 --max-length {a.max_length} --device cpu",
                              w / "st-recipe" / "omniret.json", w / "stage-seconds.json")
        row("(r0) (b)'s top 20 reranked by the sentence-transformers recipe (fresh head, BCE, 3 negatives)",
            "eval r0", lambda: bench.reranked(str(w / "st-recipe"), top_b))
    secs["train r"] = sh(f"{omniret} train rerank --reranker {w}/contrastive --data {w}/mined.jsonl --out {w}/anchored "
                         f"{common} --epochs {a.rerank_epochs} --lr 5e-5 --candidates {a.candidates} {val}",
                         w / "anchored" / "omniret.json", w / "stage-seconds.json")
    row("(r) (b)'s top 20 reranked by the anchored reranker", "eval r",
        lambda: bench.reranked(str(w / "anchored"), top_b))
    secs["train c"] = sh(f"{omniret} train distill --model {w}/contrastive --teacher {w}/anchored "
                         f"--data {w}/mined.jsonl --out {w}/distilled {common} --epochs 1 --lr 2e-5 "
                         f"--student-temperature 0.05 --label-weight {a.label_weight} {val}",
                         w / "distilled" / "omniret.json", w / "stage-seconds.json")
    row("(c) (b) distilled from the anchored reranker", "eval c",
        lambda: bench.first_stage(str(w / "distilled"), "c")[0])
    if a.controls:
        secs["train c'"] = sh(f"{omniret} train distill --model {w}/contrastive --teacher {w}/anchored "
                              f"--data {w}/mined.jsonl --out {w}/distilled-lw1 {common} --epochs 1 --lr 2e-5 "
                              f"--student-temperature 0.05 --label-weight 1 {val}",
                              w / "distilled-lw1" / "omniret.json", w / "stage-seconds.json")
        row("(c') (b) distilled from the anchored reranker, KL + 1 x cross-entropy on the positive", "eval c'",
            lambda: bench.first_stage(str(w / "distilled-lw1"), "c1")[0])
        secs["train b+"] = sh(f"{omniret} train embed --model {w}/contrastive --data {w}/mined.jsonl "
                              f"--out {w}/contrastive-more {common} --epochs 1 --lr 2e-5 {val}",
                              w / "contrastive-more" / "omniret.json", w / "stage-seconds.json")
        row("(b+) control: (b) one more contrastive epoch, no teacher", "eval b+",
            lambda: bench.first_stage(str(w / "contrastive-more"), "b-more")[0])
    print("\n| row | nDCG@10 | MRR@10 |\n| --- | --- | --- |")
    for name, m in rows.items():
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} |")
    by_key = {k: v["metrics"].get("per_query") for k, v in cached.items()}
    for new, old in (("eval b", "eval a"), ("eval r0", "eval b"), ("eval r", "eval b"), ("eval c", "eval b"),
                     ("eval c'", "eval b"), ("eval b+", "eval b"), ("eval c'", "eval b+")):
        if by_key.get(new) and by_key.get(old):
            print(f"{new[5:]} vs {old[5:]}: {paired(by_key[new], by_key[old])}")
    print("\nseconds:", json.dumps(secs), "load average:", os.getloadavg())
    (w / "results.json").write_text(json.dumps({"rows": {k: {m: v[m] for m in ("ndcg@10", "mrr@10")}
                                                         for k, v in rows.items()}, "seconds": secs,
                                                "loadavg": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
