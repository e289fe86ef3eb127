"""The text-only Qwen3-Reranker (0.6B / 4B / 8B), to its model card's reference code.

The card formats a pair as ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}``,
tokenises it alone (right-truncated to ``max_length`` minus the fixed prefix and suffix), wraps it in
the pre-tokenised chat prefix (judgement system turn, user turn opening) and suffix (closing turn,
assistant turn with an empty ``<think>`` block), pads on the left and takes softmax over the ``no``/``yes``
logits at the last position — sigmoid(h · (w_yes − w_no)) here, with the two LM-head rows read from the
safetensors file so only the base ``Qwen3Model`` is built. omniret owns this instead of using
sentence-transformers' CrossEncoder because published Qwen3-Reranker checkpoints carry no
sentence-transformers config, and the card's tokenisation (prefix, middle, suffix apart) must be exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omniret.base.batching import BatchBudget, run_batched
from omniret.registry import TEXT_ONLY, ModelSpec
from omniret.rerank.base import BaseReranker, item_text
from omniret.rerank.yes_no import checkpoint_dir, quiet_transformers, token_id, yes_no_rows
from omniret.types import Item

PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MAX_LENGTH = 8192


def format_pair(instruction: str, query: str, document: str) -> str:
    """The card's ``format_instruction``."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Qwen3TextReranker(BaseReranker):
    """Text (query, document) pairs scored by a Qwen3-Reranker checkpoint (see module docstring)."""

    def __init__(self, name_or_path: str, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 max_length: int = MAX_LENGTH, default_instruction: str = DEFAULT_INSTRUCTION,
                 max_batch_tokens: int = 16384, max_batch_items: int = 64, prepare_workers: int = 0,
                 attn_implementation: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen3Model

        from omniret.base.device import resolve_device, resolve_dtype

        path = checkpoint_dir(str(name_or_path), spec.revision if spec is not None else None)
        self.path = str(path)
        self.name = spec.name if spec is not None else str(name_or_path)
        self.modalities = frozenset(TEXT_ONLY)
        self.max_length = int(max_length)
        self.default_instruction = default_instruction
        self.budget = BatchBudget(max_tokens=max_batch_tokens, max_items=max_batch_items)
        self.prepare_workers = int(prepare_workers)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.prefix_ids = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.convert_tokens_to_ids("<|endoftext|>")

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        with quiet_transformers():
            self.model = Qwen3Model.from_pretrained(str(path), dtype=self.dtype,
                                                    attn_implementation=attn_implementation or "sdpa")
        self.model.to(self.device).eval()
        self.yes_id = token_id(self.tokenizer, "yes", path)
        self.no_id = token_id(self.tokenizer, "no", path)
        w_yes, w_no, self.head_source = yes_no_rows(path, self.yes_id, self.no_id)
        self.direction = (w_yes - w_no).to(self.device, torch.float32)

    def encode_pair(self, query: Item | str, document: Item | str, *, instruction: str | None = None) -> list[int]:
        """One pair's token ids, as the card's ``process_inputs`` builds them (for inspection and tests)."""
        q = Item.coerce(query)
        prepared = self._prepare_query(q, q.instruction if q.instruction is not None else instruction)
        return self._prepare(prepared, Item.coerce(document), 0)

    # -- BaseReranker hooks -----------------------------------------------------------------------
    def _prepare_query(self, query: Item, instruction: str | None) -> tuple[str, str]:
        # the card: only None falls back to the default instruction
        return (self.default_instruction if instruction is None else instruction), item_text(query, None)

    def _prepare(self, query: tuple[str, str], document: Item, index: int) -> list[int]:
        instruction, text = query
        budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        middle = self.tokenizer(format_pair(instruction, text, item_text(document, index)),
                                truncation="longest_first", max_length=budget)["input_ids"]
        return self.prefix_ids + list(middle) + self.suffix_ids

    def _forward(self, prepared: list[list[int]]) -> np.ndarray:
        return run_batched(prepared, self._score_batch, lengths=[len(p) for p in prepared], budget=self.budget)

    def collate(self, batch: list[list[int]]) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)`` of prepared pairs, left-padded as the card pads them (also what
        the reranker trainer feeds the model, so training and scoring see the same inputs)."""
        import torch

        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids, mask

    def _score_batch(self, batch: list[list[int]]) -> np.ndarray:
        """One left-padded forward; float32 sigmoid(h_last · (w_yes − w_no)) per pair."""
        import torch

        ids, mask = self.collate(batch)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                use_cache=False).last_hidden_state[:, -1]
            return torch.sigmoid(hidden.to(torch.float32) @ self.direction).cpu().numpy()
