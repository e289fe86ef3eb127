"""``GET /healthz`` (the process serves), ``GET /readyz`` (models loaded), ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from omniret.api.dependencies import get_state, require_api_key

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers as long as the event loop runs (no auth, no model)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 once the models are loaded, 503 (with the reason) before or after a failed load."""
    state = get_state(request)
    models = {"embedding": state.embed_id or None, "reranker": state.rerank_id or None}
    if state.ready:
        return JSONResponse({"status": "ready", "models": models})
    if state.load_error:
        return JSONResponse({"status": "failed", "error": {"type": "model_unavailable",
                                                            "message": state.load_error}}, status_code=503)
    return JSONResponse({"status": "loading", "models": models}, status_code=503)


@router.get("/metrics", dependencies=[Depends(require_api_key)])
async def metrics(request: Request) -> Response:
    """Prometheus text format: latency, batch sizes, queue depth, items embedded and indexed."""
    m = get_state(request).metrics
    return Response(m.render(), media_type=m.content_type)
