"""Auth and limits: the Bearer-key check, the body-size limit, and access to the app's models.

Routes declare what they need (``Depends(embedder)``, ``Depends(require_api_key)``, which also puts the
scheme in the OpenAPI schema). The key is checked first by ``ApiKeyMiddleware``, before anything reads
the body: a keyless request gets 401 whatever it sends. The body-size limit is ASGI middleware too,
because it must count bytes as they arrive, before anything buffers them.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omniret.api.errors import ApiError, error_response
from omniret.api.state import ServiceState
from omniret.embed.protocol import Embedder
from omniret.rerank.protocol import Reranker

_bearer = HTTPBearer(auto_error=False, description="An API key from the server's api_keys setting.")


def get_state(request: Request) -> ServiceState:
    return request.app.state.omniret


def check_key(authorization: str | None, keys: list[str]) -> None:
    """401 unless ``authorization`` is ``Bearer <one of keys>`` (no keys configured: open)."""
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization or scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                       field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    given = token.strip().encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        raise ApiError(401, "unauthorized", "invalid API key", field="Authorization",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def require_api_key(request: Request) -> None:
    """401 unless the request carries one of ``settings.api_keys`` as a Bearer token (no keys: open)."""
    keys = get_state(request).settings.api_keys
    if not keys:
        return
    creds: HTTPAuthorizationCredentials | None = await _bearer(request)
    check_key(f"Bearer {creds.credentials}" if creds is not None else None, keys)


#: paths behind the key; the rest (health, the search page, the docs) stay open
PROTECTED_PREFIXES = ("/v1/", "/v2/", "/metrics")


class ApiKeyMiddleware:
    """The key check, before routing and before the body is read (a 401 is never a 422 or a 413)."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = list(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if (scope["type"] != "http" or not self.keys or scope.get("method") == "OPTIONS"
                or not (path + "/").startswith(PROTECTED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        auth = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        try:
            check_key(auth, self.keys)
        except ApiError as e:
            await error_response(e)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _not_ready(state: ServiceState) -> ApiError:
    if state.load_error:
        return ApiError(503, "model_unavailable", f"the model failed to load: {state.load_error}")
    return ApiError(503, "not_ready", "the models are still loading; retry shortly (see /readyz)")


def embedder(request: Request) -> Embedder:
    """The served embedder (503 while loading)."""
    state = get_state(request)
    if not state.ready or state.embedder is None:
        raise _not_ready(state)
    return state.embedder


def reranker(request: Request) -> Reranker:
    """The served reranker (400 when the server runs without one)."""
    state = get_state(request)
    if not state.ready:
        raise _not_ready(state)
    if state.reranker is None:
        raise ApiError(400, "no_reranker", "this server runs without a reranker (start it with --reranker)",
                       field="model")
    return state.reranker


def check_model(requested: str | None, served: set[str], default: str, *, field: str = "model") -> str:
    """The model name to report; 400 when a request names a model this server does not serve."""
    if requested is None or requested == "" or requested in served:
        return default
    raise ApiError(400, "model_not_found", f"model {requested!r} is not served here; use {default!r} "
                   "(see GET /v1/models)", field=field)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, size: str) -> ApiError:
        return ApiError(413, "body_too_large", f"request body {size} is over the limit of {self.max_bytes} "
                        "bytes (max_body_bytes)", field="body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await error_response(self._error(f"of {declared} bytes"))(scope, receive, send)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error(f"of more than {seen} bytes")
            return message

        await self.app(scope, counting_receive, send)
