"""Reranker throughput: omniret's batched, length-sorted path against the reference's way, same run.

The reference (``Qwen3VLReranker.process``) runs one (query, document) pair per forward. omniret packs
pairs into left-padded batches sorted by length. Both paths here use the same loaded model and the same
prepared inputs, so the ratio is the batching alone; the script also checks that the two give the same
scores (max abs difference).

    python benchmarks/rerank_throughput.py            # CPU-sized random Qwen3-VL (hidden 256, 4 layers)
    python benchmarks/rerank_throughput.py --tiny     # smoke run on the test-sized checkpoint
    python benchmarks/rerank_throughput.py --model Qwen/Qwen3-VL-Reranker-2B --pairs 256   # a real model (GPU)
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ["cat", "dog", "river", "mountain", "invoice", "quarterly", "revenue", "neural", "network", "photo", "kitchen", "recipe", "train", "station", "museum", "painting", "violin", "football", "election", "weather", "forecast", "satellite", "protein", "enzyme"]


def build_checkpoint(out: Path, *, hidden: int, layers: int, seed: int = 0) -> Path:
    """A random Qwen3-VL checkpoint of the given text width and depth (real vocabulary, tiny vision tower)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from omniret.testing import (
        _scale_init,
        build_qwen_tokenizer,
        tiny_qwen3_vl_config,
        write_qwen3_vl_preprocessor_configs,
    )

    if (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_qwen_tokenizer(out)
    cfg = tiny_qwen3_vl_config()
    head_dim = 64 if hidden >= 256 else 16
    half = head_dim // 2
    section = [half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16]
    for key, value in dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=max(2, hidden // head_dim), num_key_value_heads=max(1, hidden // head_dim // 2),
                           head_dim=head_dim).items():
        setattr(cfg.text_config, key, value)
    rope = dict(getattr(cfg.text_config, "rope_parameters", None) or cfg.text_config.rope_scaling)
    rope["mrope_section"] = section
    if hasattr(cfg.text_config, "rope_parameters"):
        cfg.text_config.rope_parameters = rope
    else:  # transformers 4.x
        cfg.text_config.rope_scaling = rope
    cfg.vision_config.out_hidden_size = hidden
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    _scale_init(model, seed)
    model.save_pretrained(str(out))
    write_qwen3_vl_preprocessor_configs(out)
    return out


def make_documents(n: int, *, images: int, image_dir: Path, seed: int) -> list[dict]:
    """Text documents of very different lengths (as candidates from a first stage are), a few with images."""
    from PIL import Image

    rng = random.Random(seed)
    docs: list[dict] = []
    for i in range(n):
        length = rng.choice([8, 16, 32, 64, 128, 256, 384])
        docs.append({"text": " ".join(rng.choice(WORDS) for _ in range(length)), "id": f"d{i}"})
    for i in rng.sample(range(n), min(images, n)):
        path = image_dir / f"img{i}.png"
        arr = np.random.default_rng(i).integers(0, 256, (rng.choice([64, 128]), rng.choice([64, 96, 128]), 3),
                                                dtype=np.uint8)
        Image.fromarray(arr).save(path)
        docs[i]["image"] = str(path)
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="reranker checkpoint (default: a random Qwen3-VL built into --cache)")
    ap.add_argument("--tiny", action="store_true", help="smoke run: test-sized checkpoint, 12 pairs")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--images", type=int, default=4, help="documents that also hold an image")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each path; the best is reported")
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--max-batch-items", type=int, default=64)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "omniret-bench")
    args = ap.parse_args()

    import torch

    from omniret.rerank import load_reranker

    if args.model:
        source = args.model
    elif args.tiny:
        from omniret.testing import build_tiny_qwen3_vl

        source = args.cache / "rerank-tiny"
        if not (source / "model.safetensors").is_file():
            build_tiny_qwen3_vl(source, seed=1, kind="reranker")
        args.pairs, args.images = 12, 2
    else:
        source = build_checkpoint(args.cache / f"rerank-h{args.hidden}-l{args.layers}", hidden=args.hidden,
                                  layers=args.layers)
    rr = load_reranker(source, device=args.device, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens,
                       max_batch_items=args.max_batch_items)
    image_dir = args.cache / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    docs = make_documents(args.pairs, images=args.images, image_dir=image_dir, seed=0)
    query = {"text": "a photo of a cat near a river at the train station"}

    # prepare once: both paths then time only model work on identical inputs
    prepared = rr.prepare_pairs(query, docs)
    lengths = [p.num_tokens for p in prepared]
    sync = torch.cuda.synchronize if rr.device.type == "cuda" else (lambda: None)

    def batched() -> np.ndarray:
        return rr.score_prepared(prepared)

    def one_at_a_time() -> np.ndarray:  # the reference's loop: one pair, one forward
        return np.concatenate([rr.score_prepared([p]) for p in prepared])

    rr.score_prepared(prepared[:2]), rr.score_prepared(prepared[:1])  # warm-up
    paths = (("one pair per forward (reference)", one_at_a_time), ("batched, length-sorted", batched))
    timings = dict.fromkeys((name for name, _ in paths), float("inf"))
    results = {}
    for _ in range(args.repeats):  # alternate the paths so a change in machine load hits both
        for name, fn in paths:
            sync()
            t0 = time.perf_counter()
            results[name] = fn()
            sync()
            timings[name] = min(timings[name], time.perf_counter() - t0)
    ref, ours = results["one pair per forward (reference)"], results["batched, length-sorted"]
    device = torch.cuda.get_device_name() if rr.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model: {source}  device: {device}  dtype: {rr.dtype}")
    print(f"pairs: {len(docs)} ({args.images} with an image), tokens per pair {min(lengths)}..{max(lengths)} "
          f"(mean {np.mean(lengths):.0f})")
    for name, secs in timings.items():
        print(f"  {name:34s} {len(docs) / secs:9.1f} pairs/s  ({secs:.3f} s)")
    base = timings["one pair per forward (reference)"]
    print(f"speed-up: {base / timings['batched, length-sorted']:.2f}x   "
          f"max |score difference|: {np.max(np.abs(ref - ours)):.2e}")


if __name__ == "__main__":
    main()
