"""A generated multimodal task on the tiny random Qwen3-VL checkpoints: colour words <-> coloured images.

Colour-word queries against solid-colour pictures in several shades: the tiny Qwen3-VL embedder is trained
contrastively, the tiny Qwen3-VL reranker (its own yes/no head) listwise, and the embedder is distilled
from the reranker. Prints each row's pairwise accuracy on held-out (query, positive, negative) triples and
its validation nDCG@10 on the held-out shades:

    python benchmarks/vl_colour_task.py --work .cache/vl-colour

Rows: (a) the untrained tiny embedder; (b) it trained contrastively on the task; (r) the tiny reranker trained
listwise, validated on (b)'s top 20; (c) (b) distilled from (r). Every stage validates on the held-out shades
and keeps its best weights.

The tiny checkpoints are built with ``omniret.testing`` (random weights, the real Qwen3-VL architecture).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = {"red": 0.0, "orange": 0.08, "yellow": 0.16, "green": 0.33, "cyan": 0.5, "blue": 0.62,
           "purple": 0.78, "pink": 0.9}


def picture(path: Path, hue: float, rng: random.Random) -> None:
    from PIL import Image

    s, v = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    r, g, b = colorsys.hsv_to_rgb((hue + rng.uniform(-0.02, 0.02)) % 1.0, s, v)
    Image.new("RGB", (64, 64), (int(r * 255), int(g * 255), int(b * 255))).save(path)


def make_task(root: Path, shades: int, held_out: int, negatives: int, seed: int) -> tuple[Path, Path]:
    """train.jsonl and val.jsonl: query "a <colour> picture", positive a picture of that colour, negatives
    pictures of other colours; validation uses shades never seen in training."""
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    for name, hue in COLOURS.items():
        files[name] = []
        for k in range(shades + held_out):
            rel = f"img/{name}-{k}.png"
            picture(root / rel, hue, rng)
            files[name].append(rel)
    names = list(COLOURS)

    def line(name: str, k: int, pool: range) -> dict:
        others = [o for o in names if o != name]
        negs = [{"image": files[o][rng.choice(list(pool))]} for o in rng.sample(others, negatives)]
        return {"query": f"a {name} picture", "positive": {"image": files[name][k]}, "negatives": negs}

    train_rows = [line(n, k, range(shades)) for n in names for k in range(shades)]
    val_rows = [line(n, k, range(shades, shades + held_out)) for n in names for k in range(shades, shades + held_out)]
    rng.shuffle(train_rows)
    for fname, rows in (("train.jsonl", train_rows), ("val.jsonl", val_rows)):
        (root / fname).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root / "train.jsonl", root / "val.jsonl"


def pairwise(score: Callable[[Any, list[Any]], Any], val_file: Path) -> float:
    """Share of held-out (query, positive, negative) triples where the positive scores higher."""
    from omniret.training.data import load_examples

    wins = total = 0
    for ex in load_examples(val_file):
        s = np.asarray(score(ex.query, ex.candidates))
        wins += int((s[0] > s[1:]).sum())
        total += len(s) - 1
    return wins / total


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(".cache/vl-colour"))
    ap.add_argument("--embed-steps", type=int, default=100)
    ap.add_argument("--embed-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600, help="reranker steps")
    ap.add_argument("--lr", type=float, default=3e-3, help="reranker learning rate")
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    a = ap.parse_args()
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker
    from omniret.testing import build_tiny_qwen3_vl
    from omniret.training.config import load_config
    from omniret.training.runner import train

    w = a.work
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    rr_src = build_tiny_qwen3_vl(w / "tiny-reranker", seed=1, kind="reranker")
    emb_src = build_tiny_qwen3_vl(w / "tiny-embedding", seed=0, kind="embedding")
    train_file, val_file = make_task(w / "data", shades=6, held_out=2, negatives=3, seed=0)
    common = {"data": train_file, "batch_size": 8, "warmup_ratio": 0.0, "eval_data": val_file, "device": "cpu"}

    def embedder_score(path: Path) -> Callable[[Any, list[Any]], np.ndarray]:
        emb = load_embedder(path, device="cpu")

        def score(q: Any, docs: list[Any]) -> np.ndarray:
            v = emb.embed([q, *docs])
            return v[1:] @ v[0]

        return score

    def timed(cfg: Any) -> tuple[dict[str, Any], float]:
        t = time.perf_counter()
        summary = train(cfg)
        return summary, time.perf_counter() - t

    acc_a = pairwise(embedder_score(emb_src), val_file)
    bsum, t_b = timed(load_config(stage="embed", model=str(emb_src), out=w / "contrastive", max_steps=a.embed_steps,
                                  lr=a.embed_lr, eval_steps=max(a.embed_steps // 5, 1), **common))
    acc_b = pairwise(embedder_score(w / "contrastive"), val_file)
    rsum, t_r = timed(load_config(stage="rerank", model=str(rr_src), out=w / "reranker", max_steps=a.steps, lr=a.lr,
                                  rerank_loss="listwise", retriever=str(w / "contrastive"),
                                  eval_steps=max(a.steps // 6, 1), **common))
    rr = load_reranker(w / "reranker", device="cpu")
    acc_r = pairwise(rr.score, val_file)
    dsum, t_c = timed(load_config(stage="distill", model=str(w / "contrastive"), teacher=str(w / "reranker"),
                                  out=w / "distilled", max_steps=a.distill_steps, lr=a.distill_lr,
                                  eval_steps=max(a.distill_steps // 6, 1), **common))
    acc_c = pairwise(embedder_score(w / "distilled"), val_file)
    bv, rv, dv = bsum["validation"], rsum["validation"], dsum["validation"]
    print("\n| row | held-out pairwise accuracy | validation nDCG@10 | best step | seconds |\n"
          "| --- | --- | --- | --- | --- |")
    print(f"| (a) tiny Qwen3-VL embedder, untrained | {acc_a:.3f} | {bv['before']['ndcg@10']:.4f} | – | – |")
    print(f"| (b) contrastive ({bsum['steps']} steps, lr {a.embed_lr}) | {acc_b:.3f} | {bv['best']['ndcg@10']:.4f} "
          f"| {bv['best_step']} | {t_b:.0f} |")
    print(f"| (r) tiny Qwen3-VL reranker ({rsum['steps']} steps, listwise, lr {a.lr}) reranking (b)'s top 20; "
          f"untrained: {rv['before']['ndcg@10']:.4f} | {acc_r:.3f} | {rv['best']['ndcg@10']:.4f} "
          f"| {rv['best_step']} | {t_r:.0f} |")
    print(f"| (c) (b) distilled from (r) ({dsum['steps']} steps, lr {a.distill_lr}) | {acc_c:.3f} | "
          f"{dv['best']['ndcg@10']:.4f} | {dv['best_step']} | {t_c:.0f} |")
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
