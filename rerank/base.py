"""``BaseReranker``: what every reranking backend shares — item checks, failures, ordering, options.

A backend implements ``_prepare_query(query, instruction)`` (load the query's media once),
``_prepare(query_prepared, document, index)`` (one pair's model input; raise ``ItemError`` for a bad
document) and ``_forward(prepared) -> (n,)`` float32 scores in [0, 1]. Every pair of the call is prepared
before the first forward, so a bad document is reported before any model work is spent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from omniret.base.options import ModelOptions, refuse_unknown
from omniret.base.prepare import prepare_each, prepare_item, split_prepared
from omniret.errors import ConfigError, ItemError
from omniret.rerank.protocol import ItemLike, RerankResult, ScoreResult
from omniret.types import Item


class RerankOptions(ModelOptions, total=False):
    """Options ``load_reranker`` passes on: the shared ``ModelOptions`` (onnx and openvino: CrossEncoders)."""


def check_options(options: dict[str, Any], *, model: str) -> None:
    """``ConfigError`` naming any option ``RerankOptions`` does not know, and the known ones."""
    refuse_unknown(options, RerankOptions.__annotations__, model=model, kind="reranker")


def item_text(item: Item, index: int | None) -> str:
    """A text-only model's view of an item: its texts joined with nothing between, ``NULL`` when none."""
    texts = item.texts
    if any(not isinstance(t, str) for t in texts):
        raise ItemError.for_item(index, item.id, "text must be a string")
    return "".join(texts) if texts else "NULL"


def query_error(query_id: Any, reason: str) -> ItemError:
    """The ``ItemError`` for a bad query (it has no document index)."""
    where = "query" if query_id is None else f"query id={str(query_id)!r}"
    return ItemError(f"{where}: {reason}", index=None, item_id=None if query_id is None else str(query_id),
                     reason=reason)


class BaseReranker(ABC):
    """Shared behaviour of the reranking backends (see module docstring)."""

    name: str = "reranker"
    modalities: frozenset[str] = frozenset({"text"})
    #: where the model runs: torch, onnx, onnx-int8 or openvino (what /v1/models records)
    backend: str = "torch"
    prepare_workers: int = 0

    # -- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def _prepare_query(self, query: Item, instruction: str | None) -> Any:
        """Check and pre-process the query once per call; raise ``ItemError`` if it is bad."""

    @abstractmethod
    def _prepare(self, query: Any, document: Item, index: int) -> Any:
        """One pair's model input from the prepared query and a document; ``ItemError`` if bad."""

    @abstractmethod
    def _forward(self, prepared: list[Any]) -> np.ndarray:
        """float32 scores in [0, 1] for prepared pairs, in the given order."""

    # -- public API ----------------------------------------------------------------------------
    def score(self, query: ItemLike, documents: Sequence[ItemLike], *,
              instruction: str | None = None) -> np.ndarray:
        """Relevance of every document to the query, float32 ``(n,)`` in [0, 1], input order.

        Raises ``ItemError`` listing every bad document (or naming a bad query) before the model runs.
        """
        return self._run(query, documents, instruction=instruction, raise_on_error=True).scores

    def score_partial(self, query: ItemLike, documents: Sequence[ItemLike], *,
                      instruction: str | None = None) -> ScoreResult:
        """Scores of the good documents and the failures of the bad ones; never a stand-in score.

        A bad query still raises ``ItemError``: no document can be scored without it.
        """
        return self._run(query, documents, instruction=instruction, raise_on_error=False)

    def rerank(self, query: ItemLike, documents: Sequence[ItemLike], top_n: int | None = None, *,
               instruction: str | None = None, skip_errors: bool = False) -> RerankResult:
        """Documents ordered by descending score (ties in input order), the best ``top_n`` of them.

        With ``skip_errors`` bad documents are left out and listed in ``failures``; otherwise they raise.
        """
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
            raise ConfigError(f"top_n={top_n!r}: use a non-negative integer or None for all documents")
        result = self._run(query, documents, instruction=instruction, raise_on_error=not skip_errors)
        order = np.argsort(-result.scores, kind="stable")
        if top_n is not None:
            order = order[:top_n]
        return RerankResult(indices=[result.indices[k] for k in order],
                            scores=result.scores[order].astype(np.float32), failures=result.failures)

    def prepare_pairs(self, query: ItemLike, documents: Sequence[ItemLike], *,
                      instruction: str | None = None) -> list[Any]:
        """Every pair's model input, in order, with an ``ItemError`` in place of each bad document (a bad
        query raises). With ``score_prepared`` this splits media loading from model work, so a server can
        prepare off the model thread and batch pairs of several requests together."""
        return self.prepare_all(self._query(query, instruction), list(documents))

    def score_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """float32 scores for pairs from ``prepare_pairs`` (errors removed), batched by length, input order."""
        if any(isinstance(p, ItemError) for p in prepared):
            raise TypeError("score_prepared() takes prepared pairs only; drop the ItemError entries first")
        if not prepared:
            return np.zeros((0,), dtype=np.float32)
        return np.asarray(self._forward(list(prepared)), dtype=np.float32).reshape(-1)

    # -- shared machinery ----------------------------------------------------------------------
    def _query(self, raw: ItemLike, instruction: str | None) -> Any:
        try:
            item = Item.coerce(raw)
        except ItemError as e:
            raise query_error(None, e.reason) from e
        try:
            return prepare_item(
                item, None,
                lambda query: self._prepare_query(query, query.instruction if query.instruction is not None
                                                  else instruction),
                model=self.name, accepted=self.modalities, verb="read")
        except ItemError as e:
            # the query has no document index: name it by its id alone
            raise query_error(item.id, e.reason) from e

    def prepare_all(self, query: Any, documents: Sequence[ItemLike]) -> list[Any]:
        """Prepare every pair, in order; an ``ItemError`` takes the place of a bad document."""
        def one(index: int, raw: ItemLike) -> Any:
            return prepare_item(raw, index, lambda doc: self._prepare(query, doc, index),
                                model=self.name, accepted=self.modalities, verb="read")

        return prepare_each(documents, one, workers=self.prepare_workers)

    def _run(self, query: ItemLike, documents: Sequence[ItemLike], *, instruction: str | None,
             raise_on_error: bool) -> ScoreResult:
        if isinstance(documents, (str, Item, dict)):
            raise TypeError("score() takes a list of documents; wrap a single document in a list")
        documents = list(documents)
        if not documents:
            return ScoreResult(scores=np.zeros((0,), dtype=np.float32), indices=[])
        prepared = self.prepare_pairs(query, documents, instruction=instruction)
        split = split_prepared(prepared, raise_on_error=raise_on_error)
        return ScoreResult(scores=self.score_prepared(split.inputs), indices=split.indices,
                           failures=split.failures)
