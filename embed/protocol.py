"""The ``Embedder`` protocol every embedding backend implements, and its partial-result type."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from omniret.errors import ItemFailure
from omniret.types import ItemLike


@runtime_checkable
class Embedder(Protocol):
    """Turns items into L2-normalised float32 vectors, rows in input order.

    ``dim`` picks a Matryoshka prefix (truncate, then re-normalise); ``dims`` lists the supported ones and
    ``modalities`` what the model accepts. Queries carry a task ``instruction``; documents use the default.
    A bad item raises ``omniret.ItemError`` before any model work is spent on the batch.
    """

    name: str
    dim: int
    dims: tuple[int, ...]
    modalities: frozenset[str]

    def embed(self, items: Sequence[ItemLike], *, instruction: str | None = None,
              dim: int | None = None) -> np.ndarray: ...

    def embed_partial(self, items: Sequence[ItemLike], *, instruction: str | None = None,
                      dim: int | None = None) -> EmbedResult: ...

    def embed_chunks(self, chunks: Iterable[Sequence[ItemLike]], *, instruction: str | None = None,
                     dim: int | None = None) -> Iterator[EmbedResult]:
        """``embed_partial`` over a stream of chunks, in chunk order; a backend may prepare chunk i+1
        (media decoding) while chunk i runs on the model."""
        ...


@dataclass
class EmbedResult:
    """The good items' vectors (rows follow ``indices``) and the bad items' failures."""

    vectors: np.ndarray
    indices: list[int]
    failures: list[ItemFailure] = field(default_factory=list[ItemFailure])

    @property
    def ok(self) -> bool:
        return not self.failures


@runtime_checkable
class SubmitsBatches(Protocol):
    """An embedder that runs batches asynchronously (``EmbedderPool``): ``submit`` returns at once and the
    future gets the batch's ``EmbedResult``; a pipeline keeps several batches in flight with it."""

    def submit(self, items: Sequence[ItemLike], *, instruction: str | None = None,
               dim: int | None = None) -> Future[EmbedResult]: ...
