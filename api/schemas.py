"""Request and response bodies of the REST API (pydantic models; they are the OpenAPI schema).

``/v1/embeddings`` follows OpenAI's shape, ``/v1/rerank`` Cohere's and Jina's, so existing clients work
unchanged. Inputs are kept loose (``Any``) where the service's own checks give clearer, item-naming
errors than pydantic's union messages would; see ``omniret.api.inputs``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from omniret.index.collection import COLLECTION_NAME
from omniret.types import JSON as JSON  # re-exported: the service builds error bodies and reports by hand

# --------------------------------------------------------------------------------------- shared


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None
    item: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class MediaItem(BaseModel):
    """A multimodal input (the extension to OpenAI's strings): any mix of text, images and a video.

    ``image``: ``data:image/...;base64,...`` URIs (paths and URLs only when the server allows them);
    ``video``: a ``data:video/...;base64,...`` URI, or a list of frame images.
    """

    model_config = ConfigDict(extra="forbid")

    text: str | list[str] | None = None
    image: str | list[str] | None = None
    video: str | list[str] | None = None
    fps: float | None = None
    max_frames: int | None = None
    instruction: str | None = None
    id: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


# ----------------------------------------------------------------------------------- embeddings


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request, plus ``instruction`` and multimodal items."""

    input: Any = Field(..., description="A string, a list of strings, or a list of MediaItem objects "
                                        "(token-id arrays are refused).")
    model: str | None = Field(None, description="The served embedding model (see GET /v1/models).")
    dimensions: int | None = Field(None, description="Matryoshka dimension: a prefix, re-normalised.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, base64-encoded (as OpenAI).")
    user: str | None = Field(None, description="Accepted and ignored.")
    instruction: str | None = Field(None, description="Task instruction for queries (an extension).")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# --------------------------------------------------------------------------------------- rerank


class RerankRequest(BaseModel):
    """Cohere's / Jina's rerank request; query and documents may be MediaItem objects."""

    query: Any = Field(..., description="A string or a MediaItem.")
    documents: list[Any] = Field(..., description="Strings or MediaItem objects.")
    top_n: int | None = Field(None, ge=1, description="Return only the best n (default: all).")
    return_documents: bool = Field(False, description="Echo each document in its result.")
    model: str | None = None
    instruction: str | None = Field(None, description="Reranking instruction (an extension).")


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    results: list[RerankResult]
    model: str
    usage: RerankUsage


class RerankV2Request(BaseModel):
    """Cohere's v2 rerank request (``cohere.ClientV2().rerank``); query and documents may be MediaItems."""

    model: str | None = Field(None, description="The served reranker (see GET /v1/models).")
    query: Any = Field(..., description="A string or a MediaItem.")
    documents: list[Any] = Field(..., description="Strings or MediaItem objects.")
    top_n: int | None = Field(None, ge=1, description="Return only the best n (default: all).")
    max_tokens_per_doc: int | None = Field(None, ge=1, description="Cut each text document to this many of "
                                                                   "the reranker's tokens first.")
    relevant_spans: Any = Field(None, description="Not supported: must be absent or null.")
    priority: int | None = Field(None, description="Accepted and ignored (one queue serves every request).")
    instruction: str | None = Field(None, description="Reranking instruction (an extension).")


class RerankV2Result(BaseModel):
    index: int
    relevance_score: float


class RerankV2ApiVersion(BaseModel):
    version: str = "2"


class RerankV2BilledUnits(BaseModel):
    search_units: int = 1


class RerankV2Meta(BaseModel):
    api_version: RerankV2ApiVersion = RerankV2ApiVersion()
    billed_units: RerankV2BilledUnits = RerankV2BilledUnits()


class RerankV2Response(BaseModel):
    id: str
    results: list[RerankV2Result]
    meta: RerankV2Meta = RerankV2Meta()


# ----------------------------------------------------------------------------------- models list


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "omniret"
    kind: str
    dim: int | None = None
    dims: list[int] = []
    modalities: list[str] = []
    backend: str = Field("torch", description="Where the model runs: torch, onnx, onnx-int8 or openvino.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------------------------- collections


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=COLLECTION_NAME)
    backend: Literal["faiss", "qdrant"] = "faiss"
    model: str | None = Field(None, description="Must be the served embedding model (default: it).")
    dim: int | None = Field(None, description="Matryoshka dimension of the stored vectors.")
    index: str = Field("flat", description="FAISS index type (flat, hnsw, ...).")
    url: str | None = Field(None, description="Qdrant server URL (default: the server's qdrant_url setting, "
                                              "else embedded local mode).")


class AddItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(..., description="Strings or MediaItem objects with optional metadata; an item "
                                              "without an id gets one from its content (the same content "
                                              "twice is one item). Reserved metadata keys: text, image, "
                                              "video, video_start, video_end, kind, path, source, sha256.")
    on_error: Literal["raise", "skip"] = "raise"


class DeleteItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(..., min_length=1)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = Field(None, description="A data:image/...;base64 URI.")
    instruction: str | None = None
    k: int = Field(10, ge=1, le=1000)
    filter: dict[str, Any] | None = None
    rerank: bool | None = Field(None, description="Rerank the candidates (default: when a reranker is served).")
    candidates: int = Field(100, ge=1, le=10000)
    rerank_top: int | None = Field(None, ge=1)
    # plain strings, checked by the route, so a bad value is a 400 naming the field like other search errors
    mode: str = Field("dense", description="First stage: dense (vectors), lexical (BM25 over the items' text) "
                                           "or hybrid (both, fused).",
                      json_schema_extra={"enum": ["dense", "lexical", "hybrid"]})
    fusion: str = Field("rrf", description="Hybrid fusion: rrf (reciprocal rank, k=60) or weighted "
                                           "(min-max-normalised scores mixed by alpha).",
                        json_schema_extra={"enum": ["rrf", "weighted"]})
    alpha: float | None = Field(None, description="Weighted fusion: the dense side's weight in [0, 1] "
                                                  "(default 0.7).")


class HitOut(BaseModel):
    id: str
    score: float = Field(..., description="The first-stage score the hit was ranked by (dense, lexical or fused).")
    dense_score: float | None = None
    lexical_score: float | None = None
    fused_score: float | None = None
    rerank_score: float | None = None
    payload: dict[str, Any] = {}
    thumbnail: str | None = Field(None, description="URL of a small preview, when the source is servable.")


class SearchResponse(BaseModel):
    hits: list[HitOut]
    reranked: bool
    took_ms: float
