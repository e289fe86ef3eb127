"""The Qwen3-VL embedding tower (Qwen3-VL-Embedding-2B/-8B): text, images, PDF pages, video, mixed items.

Reproduces the reference ``Qwen3VLEmbedder`` (QwenLM/Qwen3-VL-Embedding under transformers 4.57.3 and
qwen-vl-utils 0.0.14): the same chat prompt, pixels and last-token pooling, so vectors match to float
tolerance. It differs where the reference misbehaves or is slow: a bad medium is an ``ItemError`` for
that item (the reference swaps the whole batch for one ``NULL`` input), inputs are batched by a token
budget with lengths sorted (the reference pads the whole list into one forward), and media are decoded
by worker threads. sentence-transformers 6 can load Qwen3-VL backbones, but it goes through
transformers' processor, which under transformers 5 renders video prompts differently from 4.57.3 and
needs torchvision; hence this module owns its inputs (``vl_inputs.py``).
"""

from __future__ import annotations

import os
import threading
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.batching import BatchBudget, run_batched
from omniret.base.models import last_token_pool, load_quietly, pick_attn_implementation, to_device
from omniret.base.vl_inputs import Encoded, Qwen3VLInputBuilder, TextPart, VLOptions, truncate_right
from omniret.embed.base import BaseEmbedder
from omniret.errors import ItemError
from omniret.registry import ModelSpec
from omniret.types import Item

DEFAULT_INSTRUCTION = "Represent the user's input."
#: Matryoshka prefixes offered for checkpoints the registry does not know (see ``_default_dims``).
STANDARD_DIMS = (64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096)


def format_instruction(instruction: str | None, default: str = DEFAULT_INSTRUCTION) -> str:
    """The reference's rule: strip; add ``.`` unless the last character is Unicode punctuation (``P*``);
    empty or missing means the default (used as given)."""
    if instruction:
        instruction = instruction.strip()
        if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
            instruction += "."
    return instruction or default


def _default_dims(full: int) -> tuple[int, ...]:
    """Dims for an unknown Qwen3-VL checkpoint: the full size plus the standard prefixes >= 64 below it.

    Qwen3-VL-Embedding is trained with Matryoshka losses down to 64 dims, and fine-tunes of it keep that
    property; a checkpoint that declares other dims says so in its ``omniret.json``.
    """
    return (*[d for d in STANDARD_DIMS if d < full], full)


class Qwen3VLEmbedder(BaseEmbedder):
    """Qwen3-VL embedding model: ``embed(items, instruction=, dim=)`` -> L2-normalised float32 rows.

    Options are the reference constructor's (``max_length``, ``min_pixels``, ``max_pixels``,
    ``total_pixels``, ``fps``, ``max_frames``, ``default_instruction``) plus ``max_batch_tokens``
    (padded tokens per forward), ``max_batch_items``, ``max_batch_patches`` (vision patches per forward),
    ``prepare_workers`` (threads decoding media), ``allow_remote`` (fetch http(s) media) and
    ``attn_implementation``.
    """

    modalities = frozenset({"text", "image", "video"})

    def __init__(self, source: str | Path, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 max_length: int = 8192, min_pixels: int = 4 * 32 * 32, max_pixels: int = 1800 * 32 * 32,
                 total_pixels: int = 10 * 768 * 32 * 32, fps: float = 1.0, max_frames: int = 64,
                 default_instruction: str = DEFAULT_INSTRUCTION, max_batch_tokens: int = 16384,
                 max_batch_items: int = 64, max_batch_patches: int = 65536, prepare_workers: int | None = None,
                 allow_remote: bool = False, attn_implementation: str | None = None) -> None:
        from transformers import Qwen3VLModel

        from omniret.base.device import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.path = str(source)
        self.name = spec.name if spec is not None else self.path
        self.options = VLOptions(max_length=max_length, min_pixels=min_pixels, max_pixels=max_pixels,
                                 total_pixels=total_pixels, fps=fps, max_frames=max_frames, allow_remote=allow_remote)
        self.default_instruction = default_instruction
        self.budget = BatchBudget(max_tokens=max_batch_tokens, max_items=max_batch_items,
                                  max_patches=max_batch_patches)
        self.prepare_workers = min(4, os.cpu_count() or 1) if prepare_workers is None else int(prepare_workers)
        self.attn_implementation = attn_implementation or pick_attn_implementation(self.device)
        self.model = load_quietly(Qwen3VLModel, self.path, dtype=self.dtype,
                                  attn_implementation=self.attn_implementation).to(self.device)
        self.inputs = Qwen3VLInputBuilder(self.path, self.options)
        self._tok_lock = threading.Lock()
        full = int(self.model.config.text_config.hidden_size)
        self.dim = full
        if spec is not None and spec.dims:
            self.dims = (*[d for d in spec.dims if d < full], full)
        else:
            self.dims = _default_dims(full)

    # -- BaseEmbedder hooks ---------------------------------------------------------------------------
    def _prepare(self, item: Item, index: int, instruction: str | None) -> Encoded:
        if item.texts and not "".join(item.texts).strip() and not item.images and not item.videos:
            raise ItemError.for_item(index, item.id, "empty text")
        parts = self.inputs.parts(item, index=index)
        system = [TextPart(format_instruction(instruction, self.default_instruction))]
        with self._tok_lock:  # a fast tokenizer object is not safe to share between threads
            enc = self.inputs.encode([("system", system), ("user", parts)], add_generation_prompt=True)
        max_length = self.options.max_length
        if enc.num_tokens > max_length:
            self.inputs.check_truncation(enc, max_length, index=index, item_id=item.id)
            enc.input_ids = truncate_right(enc.input_ids, max_length)
        return enc

    def _forward(self, prepared: list[Encoded]) -> np.ndarray:
        return run_batched(prepared, self._forward_batch, lengths=[e.num_tokens for e in prepared],
                           budget=self.budget, patches=[e.num_patches for e in prepared])

    # -- model ----------------------------------------------------------------------------------------
    def _forward_batch(self, batch: list[Encoded]) -> np.ndarray:
        import torch

        inputs = to_device(self.inputs.collate(batch, padding_side="right"), self.device, self.dtype)
        with torch.inference_mode():
            # no KV cache: an embedding forward never decodes, and the cache would hold every layer's K/V
            hidden = self.model(**inputs, use_cache=False).last_hidden_state
            pooled = last_token_pool(hidden, inputs["attention_mask"])
            pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)
