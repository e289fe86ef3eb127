"""``POST /v1/rerank``: Cohere's and Jina's request and response shape, multimodal as an extension."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from omniret.api.dependencies import check_model, get_state, require_api_key
from omniret.api.dependencies import reranker as served_reranker
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter
from omniret.api.routers.embeddings import count_tokens
from omniret.api.schemas import ErrorBody, RerankRequest, RerankResponse, RerankResult, RerankUsage
from omniret.errors import ItemError

router = APIRouter(prefix="/v1", tags=["rerank"], dependencies=[Depends(require_api_key)],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 413: {"model": ErrorBody},
                              422: {"model": ErrorBody}})


def _echo(doc: Any) -> dict[str, Any]:
    """The document as given (strings as ``{"text": ...}``, as Cohere and Jina return them)."""
    return {"text": doc} if isinstance(doc, str) else dict(doc)


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank(body: RerankRequest, request: Request, model: Any = Depends(served_reranker)) -> RerankResponse:
    """Score every document against the query; results best first, cut to ``top_n``."""
    state = get_state(request)
    name = check_model(body.model, state.rerank_names, state.rerank_id)
    if state.batcher is None:
        raise ApiError(503, "not_ready", "the model worker is not running")
    with InputConverter(state.settings) as conv:
        query = conv.one(body.query, field="query")
        docs = conv.items(body.documents, field="documents")
        try:
            scores = await state.batcher.call(model.score, query, docs, instruction=body.instruction)
        except ItemError as e:
            raise item_error(e, field="documents") from None
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    if body.top_n is not None:
        order = order[: body.top_n]
    results = [RerankResult(index=int(i), relevance_score=float(scores[i]),
                            document=_echo(body.documents[i]) if body.return_documents else None)
               for i in order]
    tokens = count_tokens([query, *docs])
    return RerankResponse(results=results, model=name, usage=RerankUsage(total_tokens=tokens))
