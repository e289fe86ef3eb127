"""Collections: create, list, info, delete; add items (JSON) or files (multipart); delete items; search;
thumbnails of stored images and PDF pages for the search page.

Every collection operation runs on the model worker (``batcher.call``): it embeds, and the stores' file
handles stay on one thread. Uploaded files are kept in the collection's own ``files`` folder, so payloads
point at them and thumbnails can be served; a thumbnail is only ever rendered from inside that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar, cast

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response

from omniret.api.dependencies import check_model, embedder, get_state, require_api_key
from omniret.api.errors import ApiError, item_error
from omniret.api.inputs import InputConverter, as_list, check_body, image_size, model_max_tokens
from omniret.api.routers.embeddings import check_dimensions
from omniret.api.schemas import (
    JSON,
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
from omniret.errors import (
    CollectionError,
    CollectionNotFound,
    ConfigError,
    FilterError,
    ItemError,
    ItemFailure,
)
from omniret.index.collection import (
    RESERVED_PAYLOAD_KEYS,
    AddReport,
    Collection,
    delete_collection,
    list_collections,
    open_collection,
)
from omniret.index.fusion import check_fusion, check_mode, check_query_text
from omniret.index.ingest import IngestReport
from omniret.index.names import check_collection_name
from omniret.types import IMAGE_SUFFIXES, Hit, Item

if TYPE_CHECKING:
    from av.video.frame import VideoFrame
    from PIL.Image import Image

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require_api_key)],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody},
                              409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}})

_THUMB_PX = 320
#: longest stored upload name (bytes of the name part, before the content-hash prefix): file systems
#: refuse names over 255 bytes
_MAX_NAME_BYTES = 120


P = ParamSpec("P")
T = TypeVar("T")


def _check_name(name: str) -> str:
    try:
        return check_collection_name(name)
    except ConfigError as e:
        raise ApiError(400, "invalid_request", str(e), field="name") from e


def _names(state: ServiceState) -> list[str]:
    return [str(c["name"]) for c in list_collections(root=state.root)]


def _open(state: ServiceState, name: str) -> Collection:
    """The open collection (cached per app; opened on the model worker thread)."""
    _check_name(name)
    cached = state.collections.get(name)
    if cached is not None:
        return cached
    try:
        # an older collection builds its lexical index here, once; a server has no terminal for the bar
        col = open_collection(name, root=state.root, embedder=state.embedder, reranker=state.reranker,
                              create=False, progress=False)
    except CollectionNotFound:
        raise ApiError(404, "not_found", f"no collection named {name!r} (see GET /v1/collections)",
                       field="name") from None
    state.collections[name] = col
    return col


#: keys that only ever hold where the server keeps something (files, servers)
_PRIVATE_KEYS = frozenset({"path", "url", "location"})


def _public(info: Mapping[str, JSON]) -> dict[str, JSON]:
    """Without server-side paths: a client needs names, not where the server keeps them."""
    return {k: _public_value(v) for k, v in info.items() if k not in _PRIVATE_KEYS}


def _public_value(value: JSON) -> JSON:
    if isinstance(value, dict):
        return _public(value)
    if isinstance(value, list):
        return [_public_value(v) for v in value]
    return value


def public_payload(state: ServiceState, name: str, payload: Mapping[str, JSON]) -> dict[str, JSON]:
    """A hit's payload as a client sees it: no server paths. Media stored in the collection are named
    relative to it (``files/3f2a-logo.png``); media elsewhere on the server (an indexed folder) by their
    source key when that is the file (``photos/cat.png``), else by the file's own name."""
    out = {k: v for k, v in payload.items() if k != "path"}
    base = (state.root / name).resolve()
    for key in ("image", "video"):
        v = out.get(key)
        if not isinstance(v, str) or not os.path.isabs(v):
            continue
        try:
            rel = Path(v).resolve().relative_to(base)
        except (ValueError, OSError):
            src = payload.get("source")
            name = Path(v).name
            out[key] = src if isinstance(src, str) and src.endswith(name) else name
            continue
        out[key] = rel.as_posix()
    return out


def _info(state: ServiceState, col: Collection) -> dict[str, JSON]:
    info = _public(col.info())
    if state.embedder is not None and info.get("model") == str(state.embedder.name):
        info["model"] = state.embed_id  # the served model's id, not the folder it was loaded from
    return info


def _files_dir(state: ServiceState, name: str) -> Path:
    return state.root / name / "files"


async def _worker(state: ServiceState, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if state.batcher is None:
        raise ApiError(503, "not_ready", "the model worker is not running")
    return await state.batcher.call(fn, *args, **kwargs)


# ---------------------------------------------------------------------------------------- routes


@router.post("", status_code=201)
async def create_collection(body: CreateCollection, request: Request,
                            model: Embedder = Depends(embedder)) -> Mapping[str, object]:
    """Create an empty collection embedded by the served model (optionally at a Matryoshka dim)."""
    state = get_state(request)
    check_model(body.model, state.embed_names, state.embed_id)
    if body.dim is not None:
        check_dimensions(model, body.dim, state.embed_id)
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

    def create() -> dict[str, JSON]:
        # CollectionExists -> 409 (api/errors.py)
        col = open_collection(body.name, root=state.root, backend=body.backend, url=url, embedder=model,
                              dim=dim_field, reranker=state.reranker, create=True, exist_ok=False,
                              index=body.index if body.backend == "faiss" else None)
        state.collections[body.name] = col
        return _info(state, col)

    return await _worker(state, create)


@router.get("")
async def list_all(request: Request) -> Mapping[str, object]:
    """Every collection under the served root, with its size and model."""
    state = get_state(request)

    def run() -> list[JSON]:
        out: list[JSON] = []
        for n in _names(state):
            try:
                out.append(_info(state, _open(state, n)))
            except (CollectionError, ApiError) as e:  # listed, but not openable with the served model
                out.append({"name": n, "count": None, "error": str(getattr(e, "message", e))})
        return out

    return {"collections": await _worker(state, run)}


@router.get("/{name}")
async def info(name: str, request: Request) -> Mapping[str, object]:
    state = get_state(request)
    return await _worker(state, lambda: _info(state, _open(state, name)))


@router.delete("/{name}")
async def delete(name: str, request: Request) -> Mapping[str, object]:
    """Delete the collection and everything stored with it (uploaded files included)."""
    state = get_state(request)

    def run() -> dict[str, JSON]:
        _check_name(name)
        if name not in _names(state):
            raise ApiError(404, "not_found", f"no collection named {name!r}", field="name")
        col = state.collections.pop(name, None)
        if col is not None:
            col.close()
        delete_collection(name, root=state.root)
        return {"name": name, "deleted": True}

    return await _worker(state, run)


@router.post("/{name}/items")
async def add_items(name: str, body: AddItems, request: Request) -> Mapping[str, object]:
    """Add JSON items (strings or media objects, with an optional id and metadata).

    An item without an id gets one from its content (the same content twice is one item). All or nothing
    unless ``on_error=skip``: then the good items are added and every bad one is listed under
    ``failures`` with its index and reason. Media are kept in the collection's storage only for items
    that were stored: nothing refused stays on disk.
    """
    state = get_state(request)
    check_body(body)
    skip = body.on_error == "skip"
    with InputConverter(state.settings, max_tokens=model_max_tokens(state.embedder), with_ids=True,
                        reserved_metadata=RESERVED_PAYLOAD_KEYS) as conv:
        good, bad = conv.partition(body.items, field="items")
        if bad and not skip:
            raise item_error(ItemError.combine(bad), field="items")
        await _worker(state, _open, state, name)  # 404 before anything is written
        items = [it for _, it in good]
        created = _persist_media(items, _files_dir(state, name), temp=conv.temp_dir)

        def run() -> AddReport:
            col = _open(state, name)
            try:
                return col.add(items, on_error=body.on_error)
            except ItemError as e:
                raise item_error(_reindex(e, good), field="items") from None

        try:
            result = await _worker(state, run)
        except BaseException:
            _remove(f for files in created for f in files)
            raise
    stored = set(result.ids)
    _remove(f for it, files in zip(items, created, strict=True) if str(it.id) not in stored for f in files)
    failures = [x for e in bad for x in e.failures]
    failures += [ItemFailure(index=good[f.index][0], id=f.id, reason=f.reason) for f in result.failures]
    failures.sort(key=lambda f: f.index)
    state.metrics.items_indexed.labels(name).inc(result.added)
    return {"added": result.added, "ids": list[JSON](result.ids), "failures": [f.to_dict() for f in failures]}


def _reindex(e: ItemError, good: list[tuple[int, Item]]) -> ItemError:
    """An error about the converted items, renumbered to the request's own item indices."""
    fails: list[ItemError] = []
    for f in e.failures:
        idx = good[f.index][0] if 0 <= f.index < len(good) else f.index
        fails.append(ItemError.for_item(idx, f.id, f.reason))
    return ItemError.combine(fails) if fails else e


def _remove(paths: Iterable[str | Path]) -> None:
    for p in paths:
        Path(p).unlink(missing_ok=True)


def _persist_media(items: list[Item], folder: Path, *, temp: Path | None) -> list[list[Path]]:
    """Keep a request's media in the collection's storage, so payloads point at files that stay
    (thumbnails, and the reranker rebuilds documents from them). Files are named by their content, so the
    same image is stored once; returns, per item, the files this call created (to remove if it fails)."""
    created: list[list[Path]] = []

    def store(data: bytes, kind: str, suffix: str, mine: list[Path]) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{hashlib.sha256(data).hexdigest()[:24]}-{kind}{suffix}"
        if not dest.exists():
            tmp = folder / f".{dest.name}.{os.getpid()}.partial"
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            mine.append(dest)
        return str(dest)

    def keep(v: object, mine: list[Path]) -> object:
        if isinstance(v, (bytes, bytearray)):
            from PIL import Image

            im = Image.open(io.BytesIO(v))  # bound first: pyright loses the type through its __enter__
            with im:
                suffix = "." + (im.format or "png").lower().replace("jpeg", "jpg")
            return store(bytes(v), "image", suffix, mine)
        if isinstance(v, str) and temp is not None and Path(v).parent == temp:
            return store(Path(v).read_bytes(), "video", Path(v).suffix, mine)
        if (values := as_list(v)) is not None:
            return [keep(x, mine) for x in values]
        return v

    try:
        for it in items:
            mine: list[Path] = []
            created.append(mine)
            it.image = keep(it.image, mine) if it.image is not None else None
            it.video = keep(it.video, mine) if it.video is not None else None
    except BaseException:
        _remove(f for files in created for f in files)
        raise
    return created


def _report(report: IngestReport) -> dict[str, JSON]:
    """The ingestion report as the API gives it: the index's own report, plus ``added`` (items stored),
    the count ``POST /items`` gives too."""
    return {**report.to_dict(), "added": report.indexed_items}


def _stored_name(filename: str | None) -> str:
    """A safe, bounded file name from a client's: no directories, no odd characters, at most
    ``_MAX_NAME_BYTES`` (the suffix is kept: ingestion picks the reader by it)."""
    base = Path(filename or "upload").name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "upload"
    if len(safe) > _MAX_NAME_BYTES:
        suffix = Path(safe).suffix[:16]
        safe = safe[: _MAX_NAME_BYTES - len(suffix)] + suffix
    return safe


@router.post("/{name}/files")
async def add_files(name: str, request: Request, files: list[UploadFile] = File(...)) -> Mapping[str, object]:
    """Upload files (images, PDFs, videos, text) and ingest them; they are kept in the collection's storage.

    Ingestion is the index's: a PDF becomes one item per page, a video one per time segment, text is
    chunked. Files that cannot be read are reported under ``failed`` / ``skipped`` and not kept; a file
    whose content is already in the collection (same sha256) is reported under ``duplicates`` and not
    indexed again. Uploads are written to a temporary area first and moved in only when indexed.
    """
    state = get_state(request)
    _check_name(name)
    if len(files) > state.settings.max_items_per_request:
        raise ApiError(413, "too_many_items", f"files: {len(files)} files, over the limit of "
                       f"{state.settings.max_items_per_request} per request (max_items_per_request)", field="files")
    await _worker(state, _open, state, name)  # 404 before anything is written
    folder = _files_dir(state, name)
    folder.mkdir(parents=True, exist_ok=True)
    # the temporary area is beside the final folder (same file system: the move is a rename); areas
    # left by a killed server (older than an hour) are removed first
    for old in folder.parent.glob(".incoming-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder.parent))
    try:
        uploads: list[tuple[str, str, Path]] = []  # (client name, sha256, staged path)
        for up in files:
            h = hashlib.sha256()
            safe = _stored_name(up.filename)
            tmp = staging / f"{len(uploads)}-{safe}"
            with tmp.open("wb") as f:
                while chunk := await up.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
            uploads.append((up.filename or safe, h.hexdigest(), tmp))

        def run() -> tuple[dict[str, JSON], int]:
            col = _open(state, name)
            duplicates: list[JSON] = []
            todo: dict[str, Path] = {}
            seen: dict[str, str] = {}
            for client_name, sha, tmp in uploads:
                final = folder / f"{sha[:16]}-{_stored_name(client_name)}"
                prior = seen.get(sha) or col.ledger.source_with(sha)
                if prior is not None:
                    duplicates.append({"file": client_name, "duplicate_of": prior})
                    continue
                seen[sha] = final.name
                os.replace(tmp, final)  # in place for ingestion: payloads record where the file stays
                todo[final.name] = final
            try:
                report = col.add_files(list(todo.values()), progress=False)
            except BaseException:
                _remove(todo.values())
                raise
            refused = {src for src, _ in (*report.skipped, *report.failed)}
            for key, path in todo.items():
                if key in refused:
                    path.unlink(missing_ok=True)
            out = _public(_report(report))
            out["files"] = [k for k in todo if k not in refused]
            out["duplicates"] = duplicates
            return out, report.indexed_items

        out, added = await _worker(state, run)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    state.metrics.items_indexed.labels(name).inc(added)
    return out


@router.delete("/{name}/items")
async def delete_items(name: str, body: DeleteItems, request: Request) -> Mapping[str, object]:
    """Delete items by id: ``deleted`` counts the ids that were there, ``not_found`` lists the others."""
    state = get_state(request)
    check_body(body)

    def run() -> dict[str, JSON]:
        col = _open(state, name)
        gone = col.delete(body.ids)
        missing = [i for i in dict.fromkeys(body.ids) if i not in set(gone)]
        return {"deleted": len(gone), "ids": list[JSON](gone), "not_found": list[JSON](missing), "count": col.count()}

    return await _worker(state, run)


@router.post("/{name}/search", response_model=SearchResponse)
async def search(name: str, body: SearchRequest, request: Request) -> SearchResponse:
    """Text and/or image query; dense, lexical or hybrid candidates, then (optionally) reranked; every
    score per hit."""
    state = get_state(request)
    check_body(body)
    if body.text is None and body.image is None:
        raise ApiError(400, "invalid_request", "give text and/or image", field="text")
    # before any model work; a SearchModeError becomes a 400 naming its field (mode, fusion, alpha, text)
    check_mode(body.mode)
    check_fusion(body.fusion, body.alpha)
    check_query_text(body.mode, body.text or "")
    if body.rerank and state.reranker is None:
        raise ApiError(400, "no_reranker", "rerank=true but this server runs without a reranker", field="rerank")
    raw: dict[str, JSON] = {}
    if body.text is not None:
        raw["text"] = body.text
    if body.image is not None:
        raw["image"] = body.image
    with InputConverter(state.settings, max_tokens=model_max_tokens(state.embedder)) as conv:
        query: Item = conv.one(raw, field="query", instruction=body.instruction)
        start = time.perf_counter()

        def run() -> list[Hit]:
            col = _open(state, name)
            try:
                return col.search(query, k=body.k, filter=body.filter, rerank=body.rerank,
                                  candidates=max(body.candidates, body.k), rerank_top=body.rerank_top,
                                  mode=body.mode, fusion=body.fusion, alpha=body.alpha)
            except FilterError as e:
                raise ApiError(400, "invalid_request", str(e), field="filter") from None
            except ItemError as e:
                raise item_error(e, field="query") from None

        hits = await _worker(state, run)
    took = (time.perf_counter() - start) * 1000

    def opt(v: float | None) -> float | None:
        return None if v is None else float(v)

    out = [HitOut(id=h.id, score=float(h.score), payload=public_payload(state, name, h.payload),
                  dense_score=opt(h.dense_score), lexical_score=opt(h.lexical_score), fused_score=opt(h.fused_score),
                  rerank_score=opt(h.rerank_score),
                  thumbnail=_thumb_url(state, name, h)) for h in hits]
    return SearchResponse(hits=out, reranked=any(h.rerank_score is not None for h in out), took_ms=took)


# ------------------------------------------------------------------------------------ thumbnails


def _source(payload: Mapping[str, JSON]) -> tuple[str | None, str | None]:
    """(path, kind) of a payload's renderable file: an image or a PDF (page in the payload)."""
    kind = payload.get("kind")
    video = payload.get("video") or payload.get("path")
    if kind == "video" and isinstance(video, str):
        return video, "video"
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


def _thumb_url(state: ServiceState, name: str, hit: Hit) -> str | None:
    path, _ = _source(hit.payload)
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
        page, start = payload.get("page") or 1, payload.get("video_start") or 0.0
        if not isinstance(page, (int, float, str)) or not isinstance(start, (int, float, str)):
            raise ApiError(404, "not_found", f"item {item_id!r} has no stored image or PDF page to preview",
                           field="id")
        return _render(file, kind or "image", int(page), float(start), max_pixels=state.settings.max_image_pixels)

    return Response(await _worker(state, run), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300"})


def _video_frame(path: Path, at: float, max_pixels: int) -> Image:
    """The first decoded frame at or after ``at`` seconds (the segment's start); frames over
    ``max_pixels`` (by the stream header) are not decoded."""
    import av

    container = av.open(str(path))  # bound first: pyright loses the type through its __enter__
    with container:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width or 0, stream.codec_context.height or 0
        if w * h > max_pixels:
            raise ApiError(422, "unrenderable", f"the stored video's frames are {w}x{h} = {w * h} pixels, over "
                           f"the limit of {max_pixels} (max_image_pixels)", field="id")
        if at > 0 and stream.time_base:
            container.seek(int(at / stream.time_base), stream=stream, backward=True)
        first = None
        for frame in container.decode(stream):
            first = first or frame
            time_s = cast("float | None", frame.time)  # None for a frame without a timestamp
            if time_s is None or time_s >= at - 1e-3:
                return _pil(frame)
        if first is None:
            raise ApiError(404, "not_found", "the video has no frames to preview")
        return _pil(first)


def _pil(frame: VideoFrame) -> Image:
    # PyAV annotates to_image with untyped **kwargs
    return frame.to_image()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


class _PdfBitmap(Protocol):
    def to_pil(self) -> Image: ...


class _PdfPage(Protocol):
    def get_size(self) -> tuple[float, float]: ...

    # pypdfium2 annotates scale as int; it takes any float (the points-to-pixels factor)
    def render(self, *, scale: float) -> _PdfBitmap: ...


class _PdfDocument(Protocol):
    """What the thumbnail reads of a ``pypdfium2.PdfDocument`` (the package ships no type information)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> _PdfPage: ...

    def close(self) -> None: ...


def _render(path: Path, kind: str, page: int, at: float = 0.0, *, max_pixels: int) -> bytes:
    """A JPEG preview; the stored file is measured before it is decoded (``max_image_pixels``), and a PDF
    page is rendered at thumbnail scale, whatever size the page claims."""
    from PIL import Image

    if kind == "video":
        im = _video_frame(path, at, max_pixels)
    elif kind == "pdf":
        import pypdfium2 as pdfium  # pyright: ignore[reportMissingTypeStubs]

        try:
            pdf = cast("_PdfDocument", pdfium.PdfDocument(str(path)))
        except pdfium.PdfiumError as e:
            raise ApiError(422, "unrenderable", f"the stored PDF cannot be opened ({e})", field="id") from None
        try:
            n = len(pdf)
            pg = pdf[min(max(page, 1), n) - 1]
            w, h = pg.get_size()
            scale = min(1.0, 2 * _THUMB_PX / max(w, h, 1.0))
            im = pg.render(scale=scale).to_pil()
        finally:
            pdf.close()
    else:
        from omniret.api.inputs import InputRefused

        try:
            w, h = image_size(path.read_bytes())
        except InputRefused as e:
            raise ApiError(422, "unrenderable", f"the stored image cannot be previewed: {e}", field="id") from None
        if w * h > max_pixels:
            raise ApiError(422, "unrenderable", f"the stored image is {w}x{h} = {w * h} pixels, over the limit "
                           f"of {max_pixels} (max_image_pixels)", field="id")
        try:
            src = Image.open(path)  # bound first: pyright loses the type through its __enter__
            with src:
                src.draft("RGB", (_THUMB_PX, _THUMB_PX))
                im = src.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ApiError(422, "unrenderable", f"the stored image cannot be decoded ({type(e).__name__})",
                           field="id") from None
    im.thumbnail((_THUMB_PX, _THUMB_PX))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()
