"""Collections: create, list, info, delete; add items (JSON) or files (multipart); delete items; search;
thumbnails of stored images and PDF pages for the search page.

Every collection operation runs on the model worker (``batcher.call``): it embeds, and the stores' file
handles stay on one thread. Uploaded files are kept in the collection's own ``files`` folder, so payloads
point at them and thumbnails can be served; a thumbnail is only ever rendered from inside that folder.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response

from omniret.api.dependencies import check_model, embedder, get_state, require_api_key
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter
from omniret.api.routers.embeddings import check_dimensions
from omniret.api.schemas import (
    AddItems,
    CreateCollection,
    DeleteItems,
    ErrorBody,
    HitOut,
    SearchRequest,
    SearchResponse,
)
from omniret.api.state import ServiceState
from omniret.embed.protocol import Embedder
from omniret.errors import CollectionError, ConfigError, ItemError
from omniret.index.collection import COLLECTION_NAME
from omniret.types import IMAGE_SUFFIXES, Item

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require_api_key)],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
                              409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}})

_NAME = re.compile(COLLECTION_NAME)
_THUMB_PX = 320


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ApiError(400, "invalid_request", f"collection name {name!r}: use letters, digits, '_', '-', '.' "
                       "(at most 128, not starting with a symbol)", field="name")
    return name


def _names(state: ServiceState) -> list[str]:
    from omniret.index import list_collections

    out = []
    for c in list_collections(root=state.root):
        out.append(c if isinstance(c, str) else str(getattr(c, "name", None) or c["name"]))
    return out


def _open(state: ServiceState, name: str) -> Any:
    """The open collection (cached per app; opened on the model worker thread)."""
    from omniret.index import open_collection

    _check_name(name)
    cached = state.collections.get(name)
    if cached is not None:
        return cached
    if name not in _names(state):
        raise ApiError(404, "not_found", f"no collection named {name!r} (see GET /v1/collections)", field="name")
    col = open_collection(name, root=state.root, embedder=state.embedder, reranker=state.reranker, create=False)
    state.collections[name] = col
    return col


def _public(obj: Any) -> Any:
    """Without server-side paths: a client needs names, not where the server keeps them."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if k not in ("path", "url")}
    if isinstance(obj, list):
        return [_public(v) for v in obj]
    return obj


def _info(col: Any) -> dict[str, Any]:
    info = dict(_public(_jsonable(col.info())))
    info.setdefault("name", getattr(col, "name", None))
    info.setdefault("count", col.count())
    return info


def _files_dir(state: ServiceState, name: str) -> Path:
    return state.root / name / "files"


async def _worker(state: ServiceState, fn: Any, *args: Any, **kwargs: Any) -> Any:
    if state.batcher is None:
        raise ApiError(503, "not_ready", "the model worker is not running")
    return await state.batcher.call(fn, *args, **kwargs)


# ---------------------------------------------------------------------------------------- routes


@router.post("", status_code=201)
async def create_collection(body: CreateCollection, request: Request,
                            model: Embedder = Depends(embedder)) -> dict[str, Any]:
    """Create an empty collection embedded by the served model (optionally at a Matryoshka dim)."""
    state = get_state(request)
    check_model(body.model, state.embed_names, state.embed_id)
    if body.dim is not None:
        check_dimensions(model, body.dim)
        dim_field = body.dim
    else:
        dim_field = None
    if body.url is not None and body.backend != "qdrant":
        raise ApiError(400, "invalid_request", "url is only for backend 'qdrant'", field="url")
    configured = state.settings.qdrant_url
    if body.url is not None and body.url != configured and not state.settings.allow_remote_urls:
        raise ApiError(400, "invalid_request", "this server does not connect to URLs named in requests "
                       "(allow_remote_urls is off); it uses its configured qdrant_url", field="url")
    url = body.url if body.url is not None else (configured if body.backend == "qdrant" else None)

    def create() -> dict[str, Any]:
        from omniret.index import open_collection

        if body.name in _names(state):
            raise ApiError(409, "conflict", f"collection {body.name!r} exists already", field="name")
        col = open_collection(body.name, root=state.root, backend=body.backend, url=url, embedder=model,
                              dim=dim_field, reranker=state.reranker, create=True,
                              index=body.index if body.backend == "faiss" else None)
        state.collections[body.name] = col
        return _info(col)

    return await _worker(state, create)


@router.get("")
async def list_all(request: Request) -> dict[str, Any]:
    """Every collection under the served root, with its size and model."""
    state = get_state(request)

    def run() -> list[dict[str, Any]]:
        out = []
        for n in _names(state):
            try:
                out.append(_info(_open(state, n)))
            except (CollectionError, ApiError) as e:  # listed, but not openable with the served model
                out.append({"name": n, "count": None, "error": str(getattr(e, "message", e))})
        return out

    return {"collections": await _worker(state, run)}


@router.get("/{name}")
async def info(name: str, request: Request) -> dict[str, Any]:
    state = get_state(request)
    return await _worker(state, lambda: _info(_open(state, name)))


@router.delete("/{name}")
async def delete(name: str, request: Request) -> dict[str, Any]:
    """Delete the collection and everything stored with it (uploaded files included)."""
    state = get_state(request)

    def run() -> dict[str, Any]:
        from omniret.index import delete_collection

        _check_name(name)
        if name not in _names(state):
            raise ApiError(404, "not_found", f"no collection named {name!r}", field="name")
        col = state.collections.pop(name, None)
        if col is not None and hasattr(col, "close"):
            col.close()
        delete_collection(name, root=state.root)
        return {"name": name, "deleted": True}

    return await _worker(state, run)


@router.post("/{name}/items")
async def add_items(name: str, body: AddItems, request: Request) -> dict[str, Any]:
    """Add JSON items (strings or media objects with id/metadata); all or nothing unless on_error=skip."""
    state = get_state(request)
    with InputConverter(state.settings) as conv:
        items = conv.items(body.items, field="items")
        await _worker(state, _open, state, name)  # 404 before anything is written
        _persist_media(items, _files_dir(state, name), temp=conv.temp_dir)

        def run() -> Any:
            col = _open(state, name)
            try:
                return col.add(items, on_error=body.on_error)
            except ItemError as e:
                raise item_error(e, field="items") from None

        result = await _worker(state, run)
    out = _report(result, len(items))
    state.metrics.items_indexed.labels(name).inc(out["added"])
    return out


def _persist_media(items: list[Item], folder: Path, *, temp: Path | None) -> None:
    """Keep a request's media in the collection's storage, so payloads point at files that stay
    (thumbnails, and the reranker rebuilds documents from them)."""
    import shutil

    def keep(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            from PIL import Image

            with Image.open(io.BytesIO(v)) as im:
                suffix = "." + (im.format or "png").lower().replace("jpeg", "jpg")
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / f"{uuid.uuid4().hex[:8]}-image{suffix}"
            dest.write_bytes(bytes(v))
            return str(dest)
        if isinstance(v, str) and temp is not None and Path(v).parent == temp:
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / f"{uuid.uuid4().hex[:8]}-video{Path(v).suffix}"
            shutil.copyfile(v, dest)
            return str(dest)
        if isinstance(v, list):
            return [keep(x) for x in v]
        return v

    for it in items:
        it.image = keep(it.image) if it.image is not None else None
        it.video = keep(it.video) if it.video is not None else None


def _report(result: Any, n: int) -> dict[str, Any]:
    """A JSON report from what ``add`` / ``add_files`` returned (a report object, ids or nothing)."""
    data = _jsonable(result)
    if isinstance(data, dict):
        data = dict(data)
        added = data.get("added", data.get("indexed_items"))
        if isinstance(added, list):
            added = len(added)
        data["added"] = int(added) if added is not None else n - len(data.get("failures") or [])
        return data
    if isinstance(data, list):
        return {"added": len(data), "ids": data}
    return {"added": n}


@router.post("/{name}/files")
async def add_files(name: str, request: Request, files: list[UploadFile] = File(...)) -> dict[str, Any]:
    """Upload files (images, PDFs, videos, text) and ingest them; they are kept in the collection's storage.

    Ingestion is the index's: a PDF becomes one item per page, a video one per time segment, text is
    chunked. Files that cannot be read are reported under ``failed`` / ``skipped``; the rest are indexed.
    """
    state = get_state(request)
    _check_name(name)
    if len(files) > state.settings.max_items_per_request:
        raise ApiError(413, "too_many_items", f"files: {len(files)} files, over the limit of "
                       f"{state.settings.max_items_per_request} per request (max_items_per_request)", field="files")
    await _worker(state, _open, state, name)  # 404 before anything is written
    folder = _files_dir(state, name)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for up in files:
        base = Path(up.filename or "upload").name  # never a client-chosen directory
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "upload"
        dest = folder / f"{uuid.uuid4().hex[:8]}-{safe}"
        with dest.open("wb") as f:
            while chunk := await up.read(1 << 20):
                f.write(chunk)
        paths.append(dest)

    def run() -> Any:
        return _open(state, name).add_files(paths, progress=False)

    result = await _worker(state, run)
    out = _public(_report(result, len(paths)))
    out["files"] = [p.name for p in paths]
    state.metrics.items_indexed.labels(name).inc(out["added"])
    return out


@router.delete("/{name}/items")
async def delete_items(name: str, body: DeleteItems, request: Request) -> dict[str, Any]:
    state = get_state(request)

    def run() -> dict[str, Any]:
        col = _open(state, name)
        col.delete(body.ids)
        return {"deleted": len(body.ids), "count": col.count()}

    return await _worker(state, run)


@router.post("/{name}/search", response_model=SearchResponse)
async def search(name: str, body: SearchRequest, request: Request) -> SearchResponse:
    """Text and/or image query; dense candidates, then (optionally) reranked; both scores per hit."""
    state = get_state(request)
    if body.text is None and body.image is None:
        raise ApiError(400, "invalid_request", "give text and/or image", field="text")
    if body.rerank and state.reranker is None:
        raise ApiError(400, "no_reranker", "rerank=true but this server runs without a reranker", field="rerank")
    raw: dict[str, Any] = {}
    if body.text is not None:
        raw["text"] = body.text
    if body.image is not None:
        raw["image"] = body.image
    with InputConverter(state.settings) as conv:
        query: Item = conv.one(raw, field="query", instruction=body.instruction)
        start = time.perf_counter()

        def run() -> list[Any]:
            col = _open(state, name)
            try:
                return col.search(query, k=body.k, filter=body.filter, rerank=body.rerank,
                                  candidates=max(body.candidates, body.k), rerank_top=body.rerank_top)
            except ConfigError as e:
                field = "filter" if str(e).startswith(("filter", "a filter")) else None
                raise ApiError(400, "invalid_request", str(e), field=field) from None
            except ItemError as e:
                raise item_error(e, field="query") from None

        hits = await _worker(state, run)
    took = (time.perf_counter() - start) * 1000
    out = [HitOut(id=h.id, score=float(h.score), payload=_jsonable(h.payload),
                  rerank_score=None if h.rerank_score is None else float(h.rerank_score),
                  thumbnail=_thumb_url(state, name, h)) for h in hits]
    return SearchResponse(hits=out, reranked=any(h.rerank_score is not None for h in out), took_ms=took)


# ------------------------------------------------------------------------------------ thumbnails


def _source(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(path, kind) of a payload's renderable file: an image or a PDF (page in the payload)."""
    kind = payload.get("kind")
    if kind == "video" and isinstance(payload.get("video") or payload.get("path"), str):
        return payload.get("video") or payload.get("path"), "video"
    for key in ("image", "path", "source"):
        v = payload.get(key)
        if isinstance(v, str) and v:
            suffix = Path(v).suffix.lower()
            if suffix == ".pdf":
                return v, "pdf"
            if suffix in IMAGE_SUFFIXES or (key == "image" and kind == "image"):
                return v, "image"
    return None, None


def _inside(state: ServiceState, name: str, path: str) -> Path | None:
    """The file when it lies inside the collection's own storage folder, else None (no traversal)."""
    folder = _files_dir(state, name).resolve()
    try:
        p = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return p if p.is_relative_to(folder) and p.is_file() else None


def _thumb_url(state: ServiceState, name: str, hit: Any) -> str | None:
    path, _ = _source(hit.payload or {})
    if path is None or _inside(state, name, path) is None:
        return None
    from urllib.parse import quote

    return f"/v1/collections/{quote(name)}/items/{quote(hit.id, safe='')}/thumbnail"


@router.get("/{name}/items/{item_id:path}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
async def thumbnail(name: str, item_id: str, request: Request) -> Response:
    """A small JPEG of the item's image, PDF page or video frame; only for files in the collection's storage."""
    state = get_state(request)

    def run() -> bytes:
        col = _open(state, name)
        found = col.get([item_id])
        record = found[0] if found else None  # {"id", "payload", "vector"} or None
        payload = record.get("payload") if isinstance(record, dict) else None
        if not payload:
            raise ApiError(404, "not_found", f"no item {item_id!r} in collection {name!r}", field="id")
        path, kind = _source(payload)
        file = _inside(state, name, path) if path else None
        if file is None:
            raise ApiError(404, "not_found", f"item {item_id!r} has no stored image or PDF page to preview",
                           field="id")
        return _render(file, kind or "image", int(payload.get("page") or 1),
                       float(payload.get("video_start") or 0.0))

    return Response(await _worker(state, run), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300"})


def _video_frame(path: Path, at: float) -> Any:
    """The first decoded frame at or after ``at`` seconds (the segment's start)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if at > 0 and stream.time_base:
            container.seek(int(at / stream.time_base), stream=stream, backward=True)
        first = None
        for frame in container.decode(stream):
            first = first or frame
            if frame.time is None or frame.time >= at - 1e-3:
                return frame.to_image()
        if first is None:
            raise ApiError(404, "not_found", "the video has no frames to preview")
        return first.to_image()


def _render(path: Path, kind: str, page: int, at: float = 0.0) -> bytes:
    from PIL import Image

    if kind == "video":
        im = _video_frame(path, at)
    elif kind == "pdf":
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(str(path))
        try:
            n = len(pdf)
            pg = pdf[min(max(page, 1), n) - 1]
            im = pg.render().to_pil()  # scale 1: 72 dpi, the thumbnail is shrunk below anyway
        finally:
            pdf.close()
    else:
        with Image.open(path) as src:
            src.draft("RGB", (_THUMB_PX, _THUMB_PX))
            im = src.convert("RGB")
    im.thumbnail((_THUMB_PX, _THUMB_PX))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()
