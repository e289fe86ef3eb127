"""``POST /v1/collections/{name}/snapshot``: a point-in-time archive of a collection, streamed back.

The archive is the one ``omniret collections snapshot`` writes (``omniret.index.archive``); restore it
with ``omniret collections restore FILE``. It is written to a temporary file off the event loop and off the
model worker, then streamed and deleted. A FAISS collection is read from its SQLite file in one read
transaction, so searches and adds keep being answered while it runs; a Qdrant local-mode collection the
service holds open is exported through that store, whose calls (searches and adds on that collection
included) wait until the export is done.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from omniret.api.dependencies import get_state, require_api_key
from omniret.api.errors import ApiError
from omniret.api.schemas import ErrorBody
from omniret.errors import ConfigError
from omniret.index.manifest import MANIFEST
from omniret.index.names import check_collection_name

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(require_api_key)],
                   responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}})


@router.post("/{name}/snapshot", response_class=FileResponse,
             responses={200: {"content": {"application/x-tar": {}},
                              "description": "The snapshot archive (a tar file with a checksummed table of "
                                             "contents)."}})
async def snapshot(name: str, request: Request) -> FileResponse:
    """Stream a point-in-time snapshot of the collection (items, vectors, payloads, ledger, media, manifest)."""
    from omniret.index.transfer import snapshot_collection

    state = get_state(request)
    try:
        check_collection_name(name)
        known = (state.root / name / MANIFEST).is_file()
    except ConfigError:
        known = False  # a name the rule refuses names no collection
    if not known:
        raise ApiError(404, "not_found", f"no collection named {name!r} (see GET /v1/collections)", field="name")
    held = state.collections.get(name)
    folder = Path(tempfile.mkdtemp(prefix="omniret-snapshot-"))
    out = folder / f"{name}.omniret.tar"
    try:
        store = held.store if held is not None and held.manifest.get("backend") == "qdrant" else None
        await asyncio.to_thread(snapshot_collection, name, out, root=state.root, store=store)
    except BaseException:
        _remove(folder)
        raise
    return FileResponse(out, media_type="application/x-tar", filename=out.name,
                        background=BackgroundTask(_remove, folder))


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
