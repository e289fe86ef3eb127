"""A generated multimodal task on the tiny random Qwen3-VL checkpoints: colour words <-> coloured images.

The reranker stage trains the tiny Qwen3-VL reranker (its own yes/no head, listwise) on colour-word queries
against solid-colour pictures in several shades, validated on held-out shades; then the tiny Qwen3-VL
embedder is distilled from it. Prints the trained reranker's pairwise accuracy on held-out (query,
positive, negative) triples beside the first stage's (the untrained embedder's) on the same triples, and
the embedder's validation nDCG@10 before and after distillation:

    python benchmarks/vl_colour_task.py --work .cache/vl-colour

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
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--distill-steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3)
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

    emb = load_embedder(emb_src, device="cpu")

    def emb_score(q: Any, docs: list[Any]) -> np.ndarray:
        v = emb.embed([q, *docs])
        return v[1:] @ v[0]

    first_acc = pairwise(emb_score, val_file)
    t = time.perf_counter()
    rcfg = load_config(stage="rerank", model=str(rr_src), data=train_file, out=w / "reranker", max_steps=a.steps,
                       batch_size=8, lr=a.lr, warmup_ratio=0.0, rerank_loss="listwise", eval_data=val_file,
                       retriever=str(emb_src), eval_steps=10, device="cpu")
    rsum = train(rcfg)
    t_rr = time.perf_counter() - t
    rr = load_reranker(w / "reranker", device="cpu")
    rr_acc = pairwise(lambda q, docs: rr.score(q, docs), val_file)
    t = time.perf_counter()
    dcfg = load_config(stage="distill", model=str(emb_src), teacher=str(w / "reranker"), data=train_file,
                       out=w / "distilled", max_steps=a.distill_steps, batch_size=8, lr=a.lr, warmup_ratio=0.0,
                       eval_data=val_file, eval_steps=10, device="cpu")
    dsum = train(dcfg)
    t_d = time.perf_counter() - t
    demb = load_embedder(w / "distilled", device="cpu")

    def d_score(q: Any, docs: list[Any]) -> np.ndarray:
        v = demb.embed([q, *docs])
        return v[1:] @ v[0]

    dist_acc = pairwise(d_score, val_file)
    rv, dv = rsum["validation"], dsum["validation"]
    print("\n| model | held-out pairwise accuracy | validation nDCG@10 | seconds |\n| --- | --- | --- | --- |")
    print(f"| first stage: tiny Qwen3-VL embedder (untrained) | {first_acc:.3f} | "
          f"{dv['before']['ndcg@10']:.4f} | – |")
    print(f"| tiny Qwen3-VL reranker, before training (reranking the first stage's top 20) | – | "
          f"{rv['before']['ndcg@10']:.4f} | – |")
    print(f"| tiny Qwen3-VL reranker, trained ({rsum['steps']} steps, listwise) | {rr_acc:.3f} | "
          f"{rv['best']['ndcg@10']:.4f} | {t_rr:.0f} |")
    print(f"| tiny embedder distilled from it ({dsum['steps']} steps) | {dist_acc:.3f} | "
          f"{dv['best']['ndcg@10']:.4f} | {t_d:.0f} |")
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
