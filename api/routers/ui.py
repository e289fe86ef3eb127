"""The search page at ``/`` and its static files (plain HTML + JS, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The search page; it asks for the API key itself, so it is served without one."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """One of the page's own files (a fixed list: nothing else on disk is reachable)."""
    from omniret.api.errors import ApiError

    allowed = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in allowed:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    media = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(allowed[name].suffix)
    return FileResponse(allowed[name], media_type=media)
