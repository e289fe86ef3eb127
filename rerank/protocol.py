"""The ``Reranker`` protocol every reranking backend implements, and its result types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from omniret.errors import ItemFailure
from omniret.types import ItemLike


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs with a cross-encoder: float32 relevance in [0, 1], input order.

    ``modalities`` says what the model accepts on either side. The query carries the task
    ``instruction`` (its own ``instruction`` field overrides the call's). A bad document raises
    ``omniret.ItemError`` naming it before any model work is spent; ``score_partial`` keeps the other
    documents' scores instead. An empty document list gives an empty result, not an error.
    """

    name: str
    modalities: frozenset[str]

    def score(self, query: ItemLike, documents: Sequence[ItemLike], *,
              instruction: str | None = None) -> np.ndarray: ...

    def score_partial(self, query: ItemLike, documents: Sequence[ItemLike], *,
                      instruction: str | None = None) -> ScoreResult: ...

    def rerank(self, query: ItemLike, documents: Sequence[ItemLike], top_n: int | None = None, *,
               instruction: str | None = None, skip_errors: bool = False) -> RerankResult: ...


@dataclass
class ScoreResult:
    """The good documents' scores (entries follow ``indices``) and the bad documents' failures."""

    scores: np.ndarray
    indices: list[int]
    failures: list[ItemFailure] = field(default_factory=list[ItemFailure])

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class RerankResult:
    """Documents ordered by descending score (ties keep input order), cut to ``top_n``.

    ``indices[k]`` is the input position of the k-th best document and ``scores[k]`` its score;
    ``failures`` lists documents left out because they could not be scored (``skip_errors=True``).
    """

    indices: list[int]
    scores: np.ndarray
    failures: list[ItemFailure] = field(default_factory=list[ItemFailure])

    def __len__(self) -> int:
        return len(self.indices)

    def to_list(self) -> list[dict[str, Any]]:
        """``[{"index": i, "score": s}, ...]`` in rank order (JSON-friendly)."""
        return [{"index": int(i), "score": float(s)} for i, s in zip(self.indices, self.scores, strict=True)]
