"""``POST /v1/embeddings`` (OpenAI-compatible) and ``GET /v1/models``."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from omniret.api.dependencies import check_model, embedder, get_state, require_api_key
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter
from omniret.api.schemas import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    ModelCard,
    ModelList,
    Usage,
)
from omniret.embed.protocol import Embedder
from omniret.errors import ItemError
from omniret.types import Item

router = APIRouter(prefix="/v1", tags=["embeddings"], dependencies=[Depends(require_api_key)],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 413: {"model": ErrorBody},
                              422: {"model": ErrorBody}})


def check_dimensions(model: Embedder, dim: int | None) -> int:
    """The Matryoshka dim to return; 400 naming ``dimensions`` when the model does not offer it."""
    if dim is None:
        return model.dim
    supported = sorted(set(model.dims) | {model.dim})
    if dim not in supported:
        raise ApiError(400, "invalid_dimensions", f"dimensions={dim} is not supported by {model.name}; "
                       f"supported: {supported}", field="dimensions")
    return dim


def count_tokens(items: list[Item]) -> int:
    """``usage`` figure: whitespace-separated words of the texts.

    Not the model's tokenizer: that one is busy in the model worker, and HF fast tokenizers must not be
    called from two threads at once. Clients use the figure for accounting only.
    """
    return sum(len(t.split()) for it in items for t in it.texts)


def encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # as OpenAI: the raw little-endian float32 bytes
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()


@router.post("/embeddings", response_model=EmbeddingResponse, response_model_exclude_none=True)
async def create_embeddings(body: EmbeddingRequest, request: Request,
                            model: Embedder = Depends(embedder)) -> EmbeddingResponse:
    """Embed strings (as OpenAI) or multimodal items (an extension); all succeed or a 4xx names the bad item."""
    state = get_state(request)
    name = check_model(body.model, state.embed_names, state.embed_id)
    dim = check_dimensions(model, body.dimensions)
    with InputConverter(state.settings) as conv:
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
    tokens = count_tokens(items)
    return EmbeddingResponse(data=data, model=name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The served models (OpenAI's list shape, with dims and modalities)."""
    state = get_state(request)
    cards = []
    if state.embedder is not None:
        e = state.embedder
        cards.append(ModelCard(id=state.embed_id or e.name, kind="embedding", dim=e.dim, dims=sorted(set(e.dims) | {e.dim}),
                               modalities=sorted(e.modalities)))
    if state.reranker is not None:
        r = state.reranker
        cards.append(ModelCard(id=state.rerank_id or r.name, kind="reranker", modalities=sorted(r.modalities)))
    return ModelList(data=cards)
