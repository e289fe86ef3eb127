"""A generated multimodal task on the tiny random Qwen3-VL checkpoints: colour words <-> coloured images.

Colour-word queries against solid-colour pictures in several shades: the tiny Qwen3-VL embedder is trained
contrastively, the tiny Qwen3-VL reranker (its own yes/no head) listwise, and the embedder is distilled
from the reranker. Prints each row's pairwise accuracy on held-out (query, positive, negative) triples and
its validation nDCG@10 on the held-out shades:

    python benchmarks/vl_colour_task.py --work .cache/vl-colour

Splits (each its own pictures): train (6 shades per colour), val (2: every stage validates on it and keeps
its best weights), test (4: the pairwise accuracy reported), distill (6: lines the teacher labels; neither
model trained on them). Rows: (a) the untrained tiny embedder; (b) it trained contrastively; (r) the tiny
reranker trained listwise, validated on (b)'s top 20; (c) (b) distilled from (r); (c0) (a) distilled from (r).

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
#: a harder variant (--hues 12): twelve names, hues 1/12 apart
TWELVE = ["red", "orange", "yellow", "lime", "green", "jade", "cyan", "azure", "blue", "violet", "magenta", "rose"]


def picture(path: Path, hue: float, rng: random.Random) -> None:
    from PIL import Image

    s, v = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    r, g, b = colorsys.hsv_to_rgb((hue + rng.uniform(-0.02, 0.02)) % 1.0, s, v)
    Image.new("RGB", (64, 64), (int(r * 255), int(g * 255), int(b * 255))).save(path)


def make_task(root: Path, splits: dict[str, int], negatives: int, seed: int) -> dict[str, Path]:
    """One JSONL per split (``{"train": 12, "val": 2, ...}``: shades per colour): query "a <colour> picture",
    positive a picture of that colour, negatives pictures of other colours from the same split. Every
    split has its own shades, so validation, test and distillation lines show pictures training never saw."""
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    out = {}
    for split, shades in splits.items():
        files = {}
        for name, hue in COLOURS.items():
            files[name] = []
            for k in range(shades):
                rel = f"img/{split}-{name}-{k}.png"
                picture(root / rel, hue, rng)
                files[name].append(rel)

        def line(name: str, k: int, files: dict[str, list[str]] = files, shades: int = shades) -> dict:
            negs = [{"image": files[o][rng.randrange(shades)]} for o in rng.sample([o for o in names if o != name],
                                                                                   negatives)]
            return {"query": f"a {name} picture", "positive": {"image": files[name][k]}, "negatives": negs}

        rows = [line(n, k) for n in names for k in range(shades)]
        rng.shuffle(rows)
        out[split] = root / f"{split}.jsonl"
        out[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


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
    ap.add_argument("--train-shades", type=int, default=6, help="training pictures per colour")
    ap.add_argument("--hues", type=int, choices=(8, 12), default=8, help="8 colour names, or 12 hues 1/12 apart")
    ap.add_argument("--embed-steps", type=int, default=100)
    ap.add_argument("--embed-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300, help="reranker steps")
    ap.add_argument("--qk-gain", type=float, default=1.0, help="the tiny reranker's q/k norm gain (fixtures: 3)")
    ap.add_argument("--lr", type=float, default=3e-3, help="reranker learning rate")
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    a = ap.parse_args()
    if a.hues == 12:
        COLOURS.clear()
        COLOURS.update({name: k / 12 for k, name in enumerate(TWELVE)})
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker
    from omniret.testing import build_tiny_qwen3_vl
    from omniret.training.config import load_config
    from omniret.training.runner import train

    w = a.work
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    # soft attention: from the fixtures' peaked attention, fine-tuning often collapses (see omniret.testing)
    rr_src = build_tiny_qwen3_vl(w / "tiny-reranker", seed=1, kind="reranker", qk_gain=a.qk_gain)
    emb_src = build_tiny_qwen3_vl(w / "tiny-embedding", seed=0, kind="embedding")
    split = make_task(w / "data", {"train": a.train_shades, "val": 2, "test": 4, "distill": 6}, negatives=3, seed=0)
    common = {"batch_size": 8, "warmup_ratio": 0.0, "eval_data": split["val"], "device": "cpu"}

    def embedder_score(path: Path) -> Callable[[Any, list[Any]], np.ndarray]:
        emb = load_embedder(path, device="cpu")

        def score(q: Any, docs: list[Any]) -> np.ndarray:
            v = emb.embed([q, *docs])
            return v[1:] @ v[0]

        return score

    def timed(**kw: Any) -> tuple[dict[str, Any], float]:
        t = time.perf_counter()
        summary = train(load_config(**common, **kw))
        return summary, time.perf_counter() - t

    test = split["test"]
    acc_a = pairwise(embedder_score(emb_src), test)
    bsum, t_b = timed(stage="embed", model=str(emb_src), data=split["train"], out=w / "contrastive",
                      max_steps=a.embed_steps, lr=a.embed_lr, eval_steps=max(a.embed_steps // 5, 1))
    acc_b = pairwise(embedder_score(w / "contrastive"), test)
    rsum, t_r = timed(stage="rerank", model=str(rr_src), data=split["train"], out=w / "reranker", max_steps=a.steps,
                      lr=a.lr, rerank_loss="listwise", retriever=str(w / "contrastive"),
                      eval_steps=max(a.steps // 8, 1))
    acc_r = pairwise(load_reranker(w / "reranker", device="cpu").score, test)
    rows = []
    for tag, student in (("c", w / "contrastive"), ("c0", emb_src)):
        dsum, t_c = timed(stage="distill", model=str(student), teacher=str(w / "reranker"), data=split["distill"],
                          out=w / f"distilled-{tag}", max_steps=a.distill_steps, lr=a.distill_lr,
                          eval_steps=max(a.distill_steps // 6, 1))
        rows.append((pairwise(embedder_score(w / f"distilled-{tag}"), test), dsum, t_c))
    bv, rv = bsum["validation"], rsum["validation"]
    (acc_c, cv, t_c), (acc_c0, c0v, t_c0) = rows
    print("\n| row | test pairwise accuracy | validation nDCG@10 (best step) | seconds |\n| --- | --- | --- | --- |")
    print(f"| (a) tiny Qwen3-VL embedder, untrained | {acc_a:.3f} | {bv['before']['ndcg@10']:.4f} | – |")
    print(f"| (b) (a) trained contrastively ({bsum['steps']} steps, lr {a.embed_lr}) | {acc_b:.3f} | "
          f"{bv['best']['ndcg@10']:.4f} ({bv['best_step']}) | {t_b:.0f} |")
    print(f"| (r) tiny Qwen3-VL reranker ({rsum['steps']} steps, listwise, lr {a.lr}) on (b)'s top 20 "
          f"(untrained: {rv['before']['ndcg@10']:.4f}) | {acc_r:.3f} | {rv['best']['ndcg@10']:.4f} "
          f"({rv['best_step']}) | {t_r:.0f} |")
    for name, acc, summary, secs in (("(c) (b) distilled from (r)", acc_c, cv, t_c),
                                     ("(c0) (a) distilled from (r)", acc_c0, c0v, t_c0)):
        v = summary["validation"]
        print(f"| {name} on the distill split ({summary['steps']} steps, lr {a.distill_lr}) | {acc:.3f} | "
              f"{v['best']['ndcg@10']:.4f} ({v['best_step']}) | {secs:.0f} |")
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
