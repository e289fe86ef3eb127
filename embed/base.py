"""``BaseEmbedder``: what every backend shares — item checks, failure collection, Matryoshka.

A backend implements ``_prepare(item, index, instruction)`` (load media, tokenise; raise ``ItemError``
for a bad item) and ``_forward(prepared) -> (n, full_dim)`` float32 rows. Preparation of the whole call
happens first, so a bad item is reported before any model work is spent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from omniret.base.options import ModelOptions, refuse_unknown
from omniret.base.prepare import prepare_each, prepare_item, split_prepared
from omniret.embed.matryoshka import check_dim, truncate
from omniret.embed.protocol import EmbedResult, ItemLike
from omniret.types import Item


class EmbedOptions(ModelOptions, total=False):
    """Options ``load_embedder`` takes: the shared ``ModelOptions`` and one of its own.

    A model family ignores the knobs only another family reads (a text model the media knobs, a
    sentence-transformers model the token budgets); a name that is none of these is refused.
    """

    #: sentence-transformers only: pass instructions as prompts (default: when the model defines prompts)
    use_instruction: bool


#: options only the Qwen backends read (their prompt and their own length-sorted batching)
QWEN_OPTIONS = frozenset({"max_batch_items", "max_batch_tokens", "max_batch_patches", "prepare_workers",
                                "attn_implementation", "default_instruction"})
#: options only the sentence-transformers adapter reads
ST_OPTIONS = frozenset({"batch_size", "use_instruction"})


def check_options(options: dict[str, Any], *, model: str) -> None:
    """``ConfigError`` naming any option ``EmbedOptions`` does not know, and the known ones."""
    refuse_unknown(options, EmbedOptions.__annotations__, model=model, kind="embedder")


class BaseEmbedder(ABC):
    """Shared behaviour of the embedding backends (see module docstring)."""

    name: str = "embedder"
    dim: int = 0
    dims: tuple[int, ...] = ()
    modalities: frozenset[str] = frozenset({"text"})
    #: where the model runs: torch, onnx, onnx-int8 or openvino (what /v1/models and manifests record)
    backend: str = "torch"
    #: threads that prepare items (media decoding) in parallel; 0 prepares inline
    prepare_workers: int = 0

    # -- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, item: Item, index: int, instruction: str | None) -> Any:
        """Check and pre-process one item (media decoding, tokenisation); raise ``ItemError`` if bad."""

    @abstractmethod
    def _forward(self, prepared: list[Any]) -> np.ndarray:
        """Full-dimension float32 rows for prepared items, in the given order."""

    # -- public API ----------------------------------------------------------------------------
    def embed(self, items: Sequence[ItemLike], *, instruction: str | None = None,
              dim: int | None = None) -> np.ndarray:
        """Vectors for every item, float32 ``(n, dim)``; raises ``ItemError`` listing every bad item."""
        result = self._run(items, instruction=instruction, dim=dim, raise_on_error=True)
        return result.vectors

    def embed_partial(self, items: Sequence[ItemLike], *, instruction: str | None = None,
                      dim: int | None = None) -> EmbedResult:
        """Vectors for the good items and the failures of the bad ones; never a stand-in vector."""
        return self._run(items, instruction=instruction, dim=dim, raise_on_error=False)

    def check_dim(self, dim: int | None) -> int:
        return check_dim(dim, full=self.dim, supported=self.dims, model=self.name)

    # -- shared machinery ----------------------------------------------------------------------
    def prepare_all(self, items: Sequence[ItemLike], instruction: str | None) -> list[Any]:
        """Prepare every item, in order; an ``ItemError`` takes the place of a bad one."""
        def one(index: int, raw: ItemLike) -> Any:
            return prepare_item(
                raw, index,
                lambda item: self._prepare(item, index, item.instruction if item.instruction is not None
                                           else instruction),
                model=self.name, accepted=self.modalities, verb="embed")

        return prepare_each(items, one, workers=self.prepare_workers)

    def embed_chunks(self, chunks: Iterable[Sequence[ItemLike]], *, instruction: str | None = None,
                     dim: int | None = None) -> Iterator[EmbedResult]:
        """``embed_partial`` over a stream of chunks, preparing chunk i+1 (media decoding, tokenising)
        in a background thread while chunk i runs on the model. Results come in chunk order; each
        chunk's failures are known before its model work starts, as in ``embed_partial``."""
        d = self.check_dim(dim)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for chunk in chunks:
                nxt = pool.submit(self.prepare_all, list(chunk), instruction)
                if pending is not None:
                    yield self._finish(pending.result(), d, raise_on_error=False)
                pending = nxt
            if pending is not None:
                yield self._finish(pending.result(), d, raise_on_error=False)

    def _run(self, items: Sequence[ItemLike], *, instruction: str | None, dim: int | None,
             raise_on_error: bool) -> EmbedResult:
        if isinstance(items, (str, Item, dict)):
            raise TypeError("embed() takes a list of items; wrap a single item in a list")
        d = self.check_dim(dim)
        return self._finish(self.prepare_all(items, instruction), d, raise_on_error=raise_on_error)

    def _finish(self, prepared: list[Any], d: int, *, raise_on_error: bool) -> EmbedResult:
        split = split_prepared(prepared, raise_on_error=raise_on_error)
        if split.inputs:
            vecs = truncate(self._forward(split.inputs), d)
        else:
            vecs = np.zeros((0, d), dtype=np.float32)
        return EmbedResult(vectors=vecs, indices=split.indices, failures=split.failures)
