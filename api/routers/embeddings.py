"""``POST /v1/embeddings`` (OpenAI-compatible), ``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from omniret.api.dependencies import check_model, embedder, get_state, require_api_key
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter, check_body, model_max_tokens
from omniret.api.schemas import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    ModelCard,
    ModelList,
    Usage,
)
from omniret.api.state import ServiceState
from omniret.api.tokens import TokenCounter
from omniret.embed.protocol import Embedder
from omniret.errors import ItemError
from omniret.types import Item

router = APIRouter(prefix="/v1", tags=["embeddings"], dependencies=[Depends(require_api_key)],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 413: {"model": ErrorBody},
                              422: {"model": ErrorBody}})


def check_dimensions(model: Embedder, dim: int | None, model_id: str | None = None) -> int:
    """The Matryoshka dim to return; 400 naming ``dimensions`` when the model does not offer it."""
    if dim is None:
        return model.dim
    supported = sorted(set(model.dims) | {model.dim})
    if dim not in supported:
        raise ApiError(400, "invalid_dimensions", f"dimensions={dim} is not supported by "
                       f"{model_id or model.name}; supported: {supported}", field="dimensions")
    return dim


async def count_tokens(counter: TokenCounter | None, items: list[Item]) -> int:
    """``usage`` figure: the model's tokens of the items' texts, counted in a worker thread (its own
    tokenizer copy), so neither the event loop nor the model thread waits for it."""
    if counter is None:
        return sum(len(t.split()) for it in items for t in it.texts)
    return await asyncio.to_thread(counter.count, items)


def encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # as OpenAI: the raw little-endian float32 bytes
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()


@router.post("/embeddings", response_model=EmbeddingResponse, response_model_exclude_none=True)
async def create_embeddings(body: EmbeddingRequest, request: Request,
                            model: Embedder = Depends(embedder)) -> EmbeddingResponse:
    """Embed strings (as OpenAI) or multimodal items (an extension); all succeed or a 4xx names the bad item."""
    state = get_state(request)
    check_body(body)
    name = check_model(body.model, state.embed_names, state.embed_id)
    dim = check_dimensions(model, body.dimensions, state.embed_id)
    with InputConverter(state.settings, max_tokens=model_max_tokens(model)) as conv:
        items = conv.items(body.input, field="input", instruction=body.instruction)
        if state.batcher is None:
            raise ApiError(503, "not_ready", "the embedding worker is not running")
        result = await state.batcher.embed(items, dim)
    if result.failures:
        fails = [ItemError.for_item(f.index, f.id, f.reason) for f in result.failures]
        raise item_error(ItemError.combine(fails), field="input")
    state.metrics.items_embedded.inc(len(items))
    data = [EmbeddingData(index=i, embedding=encode(result.vectors[r], body.encoding_format))
            for r, i in enumerate(result.indices)]
    tokens = await count_tokens(state.tokens, items)
    return EmbeddingResponse(data=data, model=name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The served models (OpenAI's list shape, with dims and modalities)."""
    return ModelList(data=_cards(get_state(request)))


@router.get("/models/{model_id:path}", response_model=ModelCard, responses={404: {"model": ErrorBody}})
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    """One served model by its id or any name it answers to (OpenAI's ``models.retrieve``)."""
    state = get_state(request)
    for card in _cards(state):
        names = state.embed_names if card.kind == "embedding" else state.rerank_names
        if model_id == card.id or model_id in names:
            return card
    raise ApiError(404, "model_not_found", f"model {model_id!r} is not served here (see GET /v1/models)",
                   field="model")


def _cards(state: ServiceState) -> list[ModelCard]:
    cards: list[ModelCard] = []
    if state.embedder is not None:
        e = state.embedder
        cards.append(ModelCard(id=state.embed_id or "embedding", kind="embedding", dim=e.dim, dims=sorted(set(e.dims) | {e.dim}),
                               modalities=sorted(e.modalities), backend=str(getattr(e, "backend", "torch"))))
    if state.reranker is not None:
        r = state.reranker
        cards.append(ModelCard(id=state.rerank_id or "reranker", kind="reranker", modalities=sorted(r.modalities),
                               backend=str(getattr(r, "backend", "torch"))))
    return cards
