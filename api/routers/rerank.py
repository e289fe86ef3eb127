"""``POST /v1/rerank`` (Cohere v1 / Jina shape) and ``POST /v2/rerank`` (Cohere v2, ``cohere.ClientV2``);
multimodal query and documents as an extension."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request

from omniret.api.dependencies import check_model, get_state, require_api_key
from omniret.api.dependencies import reranker as served_reranker
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter, as_object, check_body, model_max_tokens
from omniret.api.routers.embeddings import count_tokens
from omniret.api.schemas import (
    ErrorBody,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    RerankV2Request,
    RerankV2Response,
    RerankV2Result,
)
from omniret.api.state import ServiceState
from omniret.errors import ItemError
from omniret.rerank.protocol import Reranker
from omniret.types import Item

_RESPONSES: dict[int | str, dict[str, object]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody},
                                               413: {"model": ErrorBody}, 422: {"model": ErrorBody}}
router = APIRouter(tags=["rerank"], dependencies=[Depends(require_api_key)], responses=_RESPONSES)


def _echo(doc: object) -> dict[str, object]:
    """The document as given (strings as ``{"text": ...}``, as Cohere and Jina return them); the request's
    documents were checked to be strings or objects before scoring."""
    return {"text": doc} if isinstance(doc, str) else dict(as_object(doc) or {})


@dataclass
class _Scored:
    order: np.ndarray
    scores: np.ndarray
    tokens: int


async def _score(state: ServiceState, model: Reranker, query_raw: object, documents: list[object], *,
                 instruction: str | None, top_n: int | None, max_tokens_per_doc: int | None = None) -> _Scored:
    """Convert, score on the model worker, order best first; shared by both API versions."""
    if state.batcher is None:
        raise ApiError(503, "not_ready", "the model worker is not running")
    with InputConverter(state.settings, max_tokens=model_max_tokens(model)) as conv:
        query = conv.one(query_raw, field="query")
        docs = conv.items(documents, field="documents")
        if max_tokens_per_doc is not None and state.rerank_tokens is not None:
            docs = await asyncio.to_thread(_cut, state, docs, max_tokens_per_doc)
        try:
            scores = await state.batcher.call(model.score, query, docs, instruction=instruction)
        except ItemError as e:
            raise item_error(e, field="documents") from None
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    return _Scored(order, scores, await count_tokens(state.rerank_tokens, [query, *docs]))


def _cut(state: ServiceState, docs: list[Item], max_tokens: int) -> list[Item]:
    counter = state.rerank_tokens
    assert counter is not None
    for it in docs:
        if isinstance(it.text, str):
            it.text = counter.truncate(it.text, max_tokens)
        elif isinstance(it.text, list):
            it.text = [counter.truncate(t, max_tokens) for t in it.text]
    return docs


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank(body: RerankRequest, request: Request, model: Reranker = Depends(served_reranker)) -> RerankResponse:
    """Score every document against the query; results best first, cut to ``top_n``."""
    state = get_state(request)
    check_body(body)
    name = check_model(body.model, state.rerank_names, state.rerank_id)
    got = await _score(state, model, body.query, body.documents, instruction=body.instruction, top_n=body.top_n)
    results = [RerankResult(index=int(i), relevance_score=float(got.scores[i]),
                            document=_echo(body.documents[i]) if body.return_documents else None)
               for i in got.order]
    return RerankResponse(results=results, model=name, usage=RerankUsage(total_tokens=got.tokens))


@router.post("/v2/rerank", response_model=RerankV2Response, response_model_exclude_none=True)
async def rerank_v2(body: RerankV2Request, request: Request,
                    model: Reranker = Depends(served_reranker)) -> RerankV2Response:
    """Cohere's v2 rerank: ``{id, results[{index, relevance_score}], meta}``; ``max_tokens_per_doc`` cuts
    each text document to that many reranker tokens first."""
    state = get_state(request)
    check_body(body)
    check_model(body.model, state.rerank_names, state.rerank_id)
    if body.relevant_spans is not None:
        raise ApiError(400, "unsupported", "relevant_spans is not supported by this server; leave it out",
                       field="relevant_spans")
    got = await _score(state, model, body.query, body.documents, instruction=body.instruction, top_n=body.top_n,
                       max_tokens_per_doc=body.max_tokens_per_doc)
    results = [RerankV2Result(index=int(i), relevance_score=float(got.scores[i])) for i in got.order]
    return RerankV2Response(id=str(uuid.uuid4()), results=results)
