"""Embedding throughput: omniret's token-budget batching vs the reference's one padded forward.

Same model, same inputs, same run. The reference (QwenLM/Qwen3-VL-Embedding ``process(list)``) pads the
whole list into one forward; omniret sorts by length and packs batches under a token budget. Both use
omniret's input pipeline here, so the figure isolates batching; the vectors must agree (cosine >= 0.9999).

    python benchmarks/embed_throughput.py            # small random Qwen3-VL (hidden 256, 4 layers), CPU
    python benchmarks/embed_throughput.py --tiny     # smoke test (hidden 64, 2 layers)
    python benchmarks/embed_throughput.py --model /path/to/Qwen3-VL-Embedding-2B --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(out: Path, *, tiny: bool) -> Path:
    """A random Qwen3-VL checkpoint: the tiny test one, or a small one where CPU timings mean something."""
    from omniret.testing import build_tiny_qwen3_vl

    if tiny:
        return build_tiny_qwen3_vl(out, seed=0)
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from omniret.testing import (
        _scale_init,
        build_qwen_tokenizer,
        tiny_qwen3_vl_config,
        write_qwen3_vl_preprocessor_configs,
    )

    out.mkdir(parents=True, exist_ok=True)
    build_qwen_tokenizer(out)
    text = dict(vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_theta=5_000_000.0, tie_word_embeddings=False, hidden_act="silu",
                rope_scaling={"rope_type": "default", "mrope_section": [8, 4, 4], "mrope_interleaved": True},
                bos_token_id=151643, eos_token_id=151645)
    cfg = tiny_qwen3_vl_config(text_config=text)
    cfg.vision_config.out_hidden_size = 256
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    _scale_init(model, 0)
    model.save_pretrained(str(out))
    write_qwen3_vl_preprocessor_configs(out)
    return out


def workload(n_texts: int, n_images: int, seed: int = 0) -> list:
    from PIL import Image

    from omniret import Item

    rng = np.random.default_rng(seed)
    words = ["retrieval", "vector", "image", "video", "search", "query", "document", "index", "model", "token", "batch", "padding"]
    # a long-tailed length mix, as real corpora have: most short, a few long
    lengths = np.minimum(rng.lognormal(3.0, 1.0, n_texts).astype(int) + 3, 600)
    items = [Item(text=" ".join(rng.choice(words, int(k)))) for k in lengths]
    for _ in range(n_images):
        w, h = int(rng.integers(32, 320)), int(rng.integers(32, 320))
        items.append(Item(image=Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))))
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def reference_style(emb, items) -> tuple[np.ndarray, list[int]]:
    """The reference's ``process(list)``: prepare every item, then ONE padded forward over the list."""
    prepared = emb.prepare_all(items, None)
    return emb._forward_batch(prepared), [p.num_tokens for p in prepared]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (default: build a random one in a temp dir)")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model and a small workload (smoke test)")
    ap.add_argument("--texts", type=int, default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each path (best is reported)")
    args = ap.parse_args()

    from omniret.base.batching import padding_ratio, plan_batches
    from omniret.embed import load_embedder

    n_texts = args.texts if args.texts is not None else (24 if args.tiny else 128)
    n_images = args.images if args.images is not None else (4 if args.tiny else 16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else build_model(Path(tmp) / "model", tiny=args.tiny)
        emb = load_embedder(str(path), device=args.device, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens)
        items = workload(n_texts, n_images)
        emb.embed(items[:4])  # warm-up

        timings: dict[str, float] = {}
        ref_vecs = ours = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref_vecs, lengths = reference_style(emb, items)
            timings["reference"] = min(timings.get("reference", 1e9), time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = emb.embed(items)
            timings["omniret"] = min(timings.get("omniret", 1e9), time.perf_counter() - t0)

        tokens = sum(lengths)
        pad = {"reference": padding_ratio(lengths, [list(range(len(items)))]),
               "omniret": padding_ratio(lengths, plan_batches(lengths, emb.budget, None))}
        cos = np.sum(ref_vecs * ours, axis=1)
        print(f"model {path} | device {emb.device} {str(emb.dtype).removeprefix('torch.')} | "
              f"{n_texts} texts + {n_images} images, {tokens} tokens (max {max(lengths)}) | "
              f"max_batch_tokens {args.max_batch_tokens}")
        for name in ("reference", "omniret"):
            s = timings[name]
            label = "reference-style (one padded forward)" if name == "reference" else "omniret (sorted, token budget)"
            print(f"{label:40s} {len(items) / s:8.1f} items/s {tokens / s:10.0f} tokens/s  padding {pad[name]:.1%}")
        print(f"speed-up {timings['reference'] / timings['omniret']:.2f}x | min cosine between paths {cos.min():.6f}")
        if cos.min() < 0.9999:
            raise SystemExit("vectors differ between the two paths")


if __name__ == "__main__":
    main()
