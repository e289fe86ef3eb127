"""Chunked embedding with and without media/model overlap (``embed_chunks`` vs ``embed_partial`` per chunk).

Same model, same images (written as JPEG files so decoding costs what it costs users), same run.
Usage: python benchmarks/embed_pipeline.py [--images 96] [--chunk 16] [--model PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: a tiny random Qwen3-VL)")
    args = ap.parse_args()

    from omniret.embed import load_embedder
    from omniret.testing import build_tiny_qwen3_vl

    tmp = Path(tempfile.mkdtemp(prefix="omniret-pipe-"))
    model = args.model or str(build_tiny_qwen3_vl(tmp / "model", seed=0))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        w, h = int(rng.integers(600, 1600)), int(rng.integers(400, 1200))
        p = tmp / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    emb = load_embedder(model, max_pixels=256 * 32 * 32)
    items = [{"image": p} for p in paths]
    chunks = [items[s:s + args.chunk] for s in range(0, len(items), args.chunk)]
    emb.embed(items[:2])  # warm-up

    t = time.perf_counter()
    seq = np.concatenate([emb.embed_partial(c).vectors for c in chunks])
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    pipe = np.concatenate([r.vectors for r in emb.embed_chunks(chunks)])
    t_pipe = time.perf_counter() - t
    assert np.allclose(seq, pipe, atol=1e-5)
    print(f"{len(items)} images in chunks of {args.chunk}")
    print(f"sequential (baseline): {len(items) / t_seq:7.2f} items/s")
    print(f"embed_chunks overlap : {len(items) / t_pipe:7.2f} items/s   ratio {t_seq / t_pipe:.2f}x")


if __name__ == "__main__":
    main()
