"""The Qwen3-VL cross-encoder reranker (Qwen3-VL-Reranker-2B / -8B), to the reference's scores.

Each (query, document) pair is a chat — the judgement system turn, then one user turn holding
``<Instruct>: {instruction}``, ``<Query>:`` and the query's videos, images, texts, ``\\n<Document>:`` and
the document's — rendered with the generation prompt and the pinned transformers 4.57.3 video layout
through the embedder's input builder (``omniret.base.vl_inputs``), so media are read exactly as the
embedder reads them. The score is sigmoid(h_last · (w_yes − w_no)) in float32, with the two LM-head rows
read from the safetensors file: only the base ``Qwen3VLModel`` is built.

Unlike the reference (one pair per forward; the whole batch replaced by ``NULL`` when any medium
fails), pairs are batched by length with left padding, and a bad document raises ``ItemError`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from omniret.base.batching import BatchBudget, run_batched
from omniret.base.models import pick_attn_implementation, to_device
from omniret.base.vl_inputs import (
    Encoded,
    Part,
    Qwen3VLInputBuilder,
    TextPart,
    VLOptions,
    truncate_keep_special,
)
from omniret.registry import MULTIMODAL, ModelSpec
from omniret.rerank.base import BaseReranker
from omniret.rerank.yes_no import checkpoint_dir, quiet_transformers, token_id, yes_no_rows
from omniret.types import Item

SYSTEM_PROMPT = ("Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
                 'Note that the answer can only be "yes" or "no".')
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
MAX_LENGTH = 10240
#: ``<|im_end|>\n<|im_start|>assistant\n``: the reference never truncates these
KEEP_LAST = 5


@dataclass
class _Query:
    instruction: str
    parts: list[Part]


class Qwen3VLReranker(BaseReranker):
    """Scores any mix of text, images, PDF pages and video on either side (see module docstring).

    Options keep the reference constructor's names and defaults (``max_length`` 10240, ``min_pixels``,
    ``max_pixels``, ``total_pixels``, ``fps``, ``max_frames``, ``default_instruction``); ``fps`` and
    ``max_frames`` of an item override them for its video files. ``max_batch_tokens`` (padded tokens),
    ``max_batch_items`` and ``max_batch_patches`` (vision patches) cap one forward, as for the embedder.
    """

    def __init__(self, name_or_path: str, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 max_length: int = MAX_LENGTH, min_pixels: int = 4 * 32 * 32, max_pixels: int = 1800 * 32 * 32,
                 total_pixels: int = 10 * 768 * 32 * 32, fps: float = 1.0, max_frames: int = 64,
                 default_instruction: str = DEFAULT_INSTRUCTION, allow_remote: bool = False,
                 max_batch_tokens: int = 16384, max_batch_items: int = 64, max_batch_patches: int = 65536,
                 prepare_workers: int = 0,
                 attn_implementation: str | None = None) -> None:
        import torch
        from transformers import Qwen3VLModel

        from omniret.base.device import resolve_device, resolve_dtype

        path = checkpoint_dir(str(name_or_path), spec.revision if spec is not None else None)
        self.path = str(path)
        self.name = spec.name if spec is not None else str(name_or_path)
        self.modalities = frozenset(MULTIMODAL)
        self.max_length = int(max_length)
        self.default_instruction = default_instruction
        self.budget = BatchBudget(max_tokens=max_batch_tokens, max_items=max_batch_items,
                                  max_patches=max_batch_patches)
        self.prepare_workers = int(prepare_workers)
        self.inputs = Qwen3VLInputBuilder(path, VLOptions(
            max_length=self.max_length, min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels,
            fps=fps, max_frames=max_frames, allow_remote=allow_remote))
        self.tokenizer = self.inputs.tokenizer
        self.special_ids = frozenset(self.tokenizer.all_special_ids)
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.inputs.pad_token_id

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        attn = attn_implementation or pick_attn_implementation(self.device)
        with quiet_transformers():
            self.model = Qwen3VLModel.from_pretrained(str(path), dtype=self.dtype, attn_implementation=attn)
        self.model.to(self.device).eval()

        self.yes_id = token_id(self.tokenizer, "yes", path)
        self.no_id = token_id(self.tokenizer, "no", path)
        w_yes, w_no, self.head_source = yes_no_rows(path, self.yes_id, self.no_id)
        self.direction = (w_yes - w_no).to(self.device, torch.float32)

    # -- prompt ---------------------------------------------------------------------------------
    def messages(self, query: _Query, document_parts: list[Part]) -> list[tuple[str, list[Part]]]:
        """The reference's chat for one pair (``format_mm_instruction``)."""
        user: list[Part] = [TextPart("<Instruct>: " + query.instruction), TextPart("<Query>:"), *query.parts,
                            TextPart("\n<Document>:"), *document_parts]
        return [("system", [TextPart(SYSTEM_PROMPT)]), ("user", user)]

    def truncate(self, ids: list[int]) -> list[int]:
        """The reference's truncation: keep every special token and the closing five tokens; the rest of the
        sequence keeps ``max_length`` tokens (so a cut sequence is ``max_length + 5`` long, as there)."""
        if len(ids) <= KEEP_LAST:
            return list(ids)
        return truncate_keep_special(ids[:-KEEP_LAST], self.max_length, self.special_ids, keep_last=0) \
            + list(ids[-KEEP_LAST:])

    def encode_pair(self, query: Item | str, document: Item | str, *, instruction: str | None = None) -> Encoded:
        """One pair's model input, as the reference tokenises it (for inspection and tests)."""
        q = Item.coerce(query)
        prepared = self._prepare_query(q, q.instruction if q.instruction is not None else instruction)
        return self._prepare(prepared, Item.coerce(document), 0)

    # -- BaseReranker hooks -----------------------------------------------------------------------
    def _prepare_query(self, query: Item, instruction: str | None) -> _Query:
        # the reference: `'<Instruct>: ' + (instruct or self.default_instruction)`, no strip, no '.'
        return _Query(instruction=instruction or self.default_instruction,
                      parts=self.inputs.parts(query, index=None))

    def _prepare(self, query: _Query, document: Item, index: int) -> Encoded:
        enc = self.inputs.encode(self.messages(query, self.inputs.parts(document, index=index)),
                                 add_generation_prompt=True)
        return replace(enc, input_ids=self.truncate(enc.input_ids))

    def _forward(self, prepared: list[Encoded]) -> np.ndarray:
        return run_batched(prepared, self._score_batch, lengths=[e.num_tokens for e in prepared],
                           patches=[e.num_patches for e in prepared], budget=self.budget)

    def _score_batch(self, batch: list[Encoded]) -> np.ndarray:
        """One left-padded forward; float32 sigmoid(h_last · (w_yes − w_no)) per pair."""
        import torch

        inputs = to_device(self.inputs.collate(batch, padding_side="left", pad_token_id=self.pad_token_id),
                           self.device, self.dtype)
        with torch.inference_mode():
            hidden = self.model(**inputs, use_cache=False).last_hidden_state[:, -1]
            return torch.sigmoid(hidden.to(torch.float32) @ self.direction).cpu().numpy()
