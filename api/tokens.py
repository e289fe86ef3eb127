"""``usage`` figures in the model's own tokens, counted off the model thread.

HF fast tokenizers must not be called from two threads at once ("Already borrowed"), and the model's
own tokenizer belongs to the model worker. So the counter keeps a private copy, made at startup, and
gives every thread that counts its own copy of that (``threading.local``): counting never waits for the
model, and the model never waits for counting. A model without a fast tokenizer is counted in
whitespace-separated words (said in the docstring of ``count``).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omniret.api.inputs import model_max_tokens
from omniret.base.models import find_tokenizer
from omniret.types import Item

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TokenCounter:
    """Counts the tokens a model reads for a list of items (its texts; each item capped at what the
    model reads). Thread-safe: each calling thread tokenises with its own tokenizer copy."""

    def __init__(self, model: object) -> None:
        base: PreTrainedTokenizerBase | None = find_tokenizer(model) if model is not None else None
        # a private prototype, copied while the model is still idle (startup); copies are made from it
        self._proto = copy.deepcopy(base) if base is not None else None
        self.max_tokens = model_max_tokens(model) if model is not None else None
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """True when counts are the model's tokens (False: whitespace words, no fast tokenizer)."""
        return self._proto is not None

    def _tokenizer(self, proto: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
        """This thread's copy of ``proto`` (the prototype)."""
        tok: PreTrainedTokenizerBase | None = getattr(self._local, "tok", None)
        if tok is None:
            with self._lock:  # the prototype is only ever read here, one copy at a time
                tok = copy.deepcopy(proto)
            self._local.tok = tok
        return tok

    def count(self, items: Sequence[Item]) -> int:
        """Tokens of the items' texts (special tokens included), each item at most ``max_tokens``;
        whitespace-separated words when the model has no fast tokenizer."""
        per_item: list[int] = []
        if self._proto is None:
            per_item = [sum(len(t.split()) for t in it.texts) for it in items]
        else:
            tok = self._tokenizer(self._proto)
            texts = [t for it in items for t in it.texts]
            lengths = iter([len(ids) for ids in tok(texts, add_special_tokens=True, verbose=False)["input_ids"]] if texts else [])
            per_item = [sum(next(lengths) for _ in it.texts) for it in items]
        if self.max_tokens is not None:
            per_item = [min(n, self.max_tokens) for n in per_item]
        return sum(per_item)

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to its first ``max_tokens`` model tokens (a prefix of the original string, never a
        detokenisation); by whitespace words when the model has no fast tokenizer."""
        if self._proto is None:
            words = text.split()
            return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
        enc = self._tokenizer(self._proto)(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]]
