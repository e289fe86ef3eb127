"""A Qdrant server's own collection snapshots: the consistent backup of a live server collection.

omniret's archive (``omniret.index.transfer``) reads a Qdrant collection with a scroll, which a server does
not isolate from concurrent writers. A server snapshot is Qdrant's point-in-time copy, made by the node that
answers (on a cluster, Qdrant documents one per node) and restored with its recover API. These functions
drive that API through qdrant-client and download the file over the snapshot REST endpoint. They need a
Qdrant server, which omniret's CI cannot run: the local-mode refusal is tested, the server path is not.
"""

from __future__ import annotations

from pathlib import Path

from omniret.errors import ConfigError, StoreError
from omniret.index.qdrant_store import QdrantStore

__all__ = ["download_server_snapshot", "recover_server_snapshot"]


def _server_only(store: QdrantStore) -> None:
    if not store.is_server:
        raise ConfigError(f"Qdrant collection {store.name!r} is in local mode: it has no server snapshot API "
                          "(use `omniret collections snapshot` without --server-snapshot)")


def download_server_snapshot(store: QdrantStore, out: Path) -> Path:
    """Have the server snapshot ``store``'s collection (``create_snapshot``) and download the file to ``out``.

    The file is written to ``out`` with a ``.part`` suffix and renamed when complete, so a cut download never
    looks like a snapshot.
    """
    _server_only(store)
    import httpx

    desc = store.call("snapshot", "create_snapshot", collection_name=store.name, wait=True)
    if desc is None:
        raise StoreError(f"Qdrant made no snapshot of {store.name!r}")
    key = store.options.get("api_key")
    headers = {"api-key": str(key)} if key else {}
    url = f"{store.location.rstrip('/')}/collections/{store.name}/snapshots/{desc.name}"
    part = out.with_name(out.name + ".part")
    try:
        with httpx.stream("GET", url, headers=headers, timeout=None) as r, open(part, "wb") as f:
            r.raise_for_status()
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
    except httpx.HTTPError as e:
        part.unlink(missing_ok=True)
        raise StoreError(f"downloading Qdrant snapshot {desc.name} of {store.name!r} failed: {e}") from e
    part.replace(out)
    return out


def recover_server_snapshot(store: QdrantStore, location: str) -> None:
    """Recover ``store``'s collection on the server from a snapshot ``location`` (a URL or ``file://`` path the
    server can read), through qdrant-client's ``recover_snapshot``."""
    _server_only(store)
    store.call("snapshot recovery", "recover_snapshot", collection_name=store.name, location=location, wait=True)
