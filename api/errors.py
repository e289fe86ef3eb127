"""One place that turns every failure into the service's JSON error body.

Body: ``{"error": {"type", "message", "field" | "item"}}``. omniret's own errors map to a 4xx that names
the field or the item and the reason; anything else is a bug: a 500 with a fixed message and no
internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

from omniret.api.schemas import JSON
from omniret.errors import (
    CollectionError,
    CollectionExists,
    CollectionNotFound,
    ConfigError,
    DimensionError,
    FilterError,
    ItemError,
    ModelLoadError,
    OmniretError,
    SearchModeError,
    StoreError,
    WorkerError,
)

log = logging.getLogger("omniret.api")


class ApiError(StarletteHTTPException):
    """An error the service reports on purpose: status, type, message and the field or item at fault.

    It subclasses Starlette's ``HTTPException`` so FastAPI re-raises it untouched from body parsing
    (the body-size limit fires there).
    """

    def __init__(self, status: int, type: str, message: str, *, field: str | None = None,  # noqa: A002
                 item: Mapping[str, JSON] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.type = type
        self.message = message
        self.field = field
        self.item = item

    def body(self) -> dict[str, JSON]:
        err: dict[str, JSON] = {"type": self.type, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        if self.item is not None:
            err["item"] = dict(self.item)
        return {"error": err}


def error_response(err: ApiError, private: Sequence[tuple[str, str]] = ()) -> JSONResponse:
    """The JSON error; ``private``: (server path, public name) pairs replaced in the message, so an error
    never shows where the server keeps its models and collections."""
    body: JSON = err.body()
    if private:
        body = _scrub(body, private)
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


def _scrub(obj: JSON, private: Sequence[tuple[str, str]]) -> JSON:
    if isinstance(obj, str):
        for path, name in private:
            if path and path in obj:
                obj = obj.replace(path, name)
        return obj
    if isinstance(obj, dict):
        return {k: _scrub(v, private) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v, private) for v in obj]
    return obj


def _private(request: Request) -> Sequence[tuple[str, str]]:
    from omniret.api.state import ServiceState

    state = getattr(request.app.state, "omniret", None)
    return state.private_paths if isinstance(state, ServiceState) else ()


def item_error(e: ItemError, *, field: str = "input") -> ApiError:
    """A 400 naming the (first) bad item: its index, id and reason; every failure is listed."""
    failures: list[JSON] = [f.to_dict() for f in e.failures]
    first = e.failures[0].to_dict() if e.failures else {"index": e.index, "id": e.item_id, "reason": e.reason}
    item: dict[str, JSON] = {**first, "field": field}
    if len(failures) > 1:
        item["failures"] = failures
    return ApiError(400, "invalid_item", str(e), item=item)


def from_omniret(e: OmniretError) -> ApiError:
    """Map omniret's error hierarchy to status codes (one table, by type: never by message text)."""
    if isinstance(e, ItemError):
        return item_error(e)
    if isinstance(e, DimensionError):
        return ApiError(400, "invalid_dimensions", str(e), field="dimensions")
    if isinstance(e, CollectionNotFound):
        return ApiError(404, "not_found", str(e), field="name")
    if isinstance(e, CollectionExists):
        return ApiError(409, "conflict", str(e), field="name")
    if isinstance(e, CollectionError):
        return ApiError(400, "invalid_collection", str(e), field="name")
    if isinstance(e, FilterError):
        return ApiError(400, "invalid_request", str(e), field="filter")
    if isinstance(e, SearchModeError):
        return ApiError(400, "invalid_request", str(e), field=e.field)
    if isinstance(e, ConfigError):
        return ApiError(400, "invalid_request", str(e))
    if isinstance(e, ModelLoadError):
        return ApiError(400, "invalid_model", str(e), field="model")
    if isinstance(e, WorkerError):  # a model replica died or failed: the service, not the request, is at fault
        log.error("model worker error: %s", e)
        return ApiError(503, "model_unavailable", str(e))
    if isinstance(e, StoreError):
        log.error("store error: %s", e)
        return ApiError(503, "store_unavailable", "the vector store failed; see the server log")
    return ApiError(400, "invalid_request", str(e))


def _loc_to_field(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else "body"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: ``ApiError``, omniret errors, validation errors, HTTP errors, bugs."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e, _private(request))

    @app.exception_handler(OmniretError)
    async def _omniret(request: Request, e: OmniretError) -> JSONResponse:
        return error_response(from_omniret(e), _private(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first: ErrorDetails = errs[0] if errs else {"type": "", "loc": (), "msg": "invalid request", "input": None}
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error", "JSON decode error")
            return error_response(ApiError(422, "invalid_json", f"body: not valid JSON ({reason})", field="body"))
        field = _loc_to_field(first.get("loc", ()))
        msg = f"{field}: {first.get('msg', 'invalid value')}"
        if len(errs) > 1:
            msg += f" (and {len(errs) - 1} more problem(s))"
        return error_response(ApiError(422, "invalid_request", msg, field=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(e.status_code, "http_error")
        raw = cast("object", e.detail)  # typed str, but FastAPI's own HTTPException takes any detail
        detail = raw if isinstance(raw, str) else "request failed"
        return error_response(ApiError(e.status_code, kind, detail, headers=getattr(e, "headers", None)))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", "internal server error; see the server log"))
