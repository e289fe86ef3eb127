"""Text-only Qwen3-Embedding (0.6B/4B/8B): last-token pooling over ``Qwen3Model``.

Follows the model card: queries are written ``Instruct: {task}\\nQuery:{query}``, documents as they are;
the tokenizer of the published checkpoints appends ``<|endoftext|>`` (a ``TemplateProcessing``
post-processor added after release) and truncates the text to ``max_length - 1`` so that token stays;
the embedding is the final hidden state of that last token, L2-normalised. omniret appends the token
itself, so checkpoints whose tokenizer lacks the post-processor (older revisions, fine-tunes) embed the
same way. Batches are padded on the right (same vectors as the card's left padding: RoPE is relative).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.batching import BatchBudget, run_batched
from omniret.base.models import last_token_pool, load_quietly, pick_attn_implementation
from omniret.embed.base import BaseEmbedder
from omniret.errors import ItemError
from omniret.registry import ModelSpec
from omniret.types import Item

EOD_TOKEN = "<|endoftext|>"


def query_text(text: str, instruction: str | None) -> str:
    """The model card's query format; without an instruction the text is used as it is."""
    return f"Instruct: {instruction}\nQuery:{text}" if instruction else text


class Qwen3TextEmbedder(BaseEmbedder):
    """Qwen3-Embedding: ``embed(items, instruction=task)`` for queries, no instruction for documents.

    Options: ``max_length`` (8192, as the model card), ``default_instruction`` (None: documents plain),
    ``max_batch_tokens``, ``max_batch_items``, ``attn_implementation``.
    """

    modalities = frozenset({"text"})

    def __init__(self, source: str | Path, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 max_length: int = 8192, default_instruction: str | None = None, max_batch_tokens: int = 16384,
                 max_batch_items: int = 64, prepare_workers: int = 0, attn_implementation: str | None = None) -> None:
        from transformers import AutoTokenizer, Qwen3Model

        from omniret.base.device import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.path = str(source)
        self.name = spec.name if spec is not None else self.path
        if max_length < 2:
            from omniret.errors import ConfigError

            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        self.max_length = int(max_length)
        self.default_instruction = default_instruction
        self.budget = BatchBudget(max_tokens=max_batch_tokens, max_items=max_batch_items)
        self.prepare_workers = int(prepare_workers)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.eod_id = self.tokenizer.convert_tokens_to_ids(EOD_TOKEN)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eod_id
        self._tok_lock = threading.Lock()
        self.attn_implementation = attn_implementation or pick_attn_implementation(self.device)
        self.model = load_quietly(Qwen3Model, self.path, dtype=self.dtype,
                                  attn_implementation=self.attn_implementation).to(self.device)
        full = int(self.model.config.hidden_size)
        self.dim = full
        if spec is not None and spec.dims:
            self.dims = (*[d for d in spec.dims if d < full], full)
        else:
            self.dims = (*[d for d in (32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072) if d < full], full)

    def _prepare(self, item: Item, index: int, instruction: str | None) -> list[int]:
        texts = item.texts
        if texts and not "".join(texts).strip():
            raise ItemError.for_item(index, item.id, "empty text")
        text = "".join(texts) if texts else "NULL"
        instr = instruction if instruction is not None else self.default_instruction
        with self._tok_lock:
            ids = list(self.tokenizer(query_text(text, instr if instr and instr.strip() else None),
                                      add_special_tokens=False)["input_ids"])
        return ids[: self.max_length - 1] + [self.eod_id]

    def _forward(self, prepared: list[list[int]]) -> np.ndarray:
        return run_batched(prepared, self._forward_batch, lengths=[len(p) for p in prepared], budget=self.budget)

    def _forward_batch(self, batch: list[list[int]]) -> np.ndarray:
        import torch

        length = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            pooled = torch.nn.functional.normalize(last_token_pool(hidden, mask).float(), p=2, dim=-1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)
