"""The collections under a root: find one, open its store without a model, list them, delete one.

A collection is a folder ``<root>/<name>/`` holding ``collection.json`` (``omniret.index.manifest``), its
store (the FAISS folder ``faiss/`` or Qdrant's local-mode folder ``qdrant/``; a server collection keeps
only its URL) and the ingestion ledger. ``omniret.index.collection.open_collection`` adds the model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from omniret.errors import CollectionNotFound
from omniret.index.manifest import Manifest, read_manifest
from omniret.index.names import check_collection_name, collections_root
from omniret.index.protocol import VectorStore
from omniret.types import JSON


def open_store(path: Path, manifest: Manifest, *, url: str | None = None,
               options: Mapping[str, object] | None = None, create: bool) -> VectorStore:
    """The store a manifest describes (FAISS in the folder, or Qdrant local/server); no model is loaded.

    ``url`` overrides the recorded server; ``options`` are laid over the recorded store options.
    """
    opts = {**manifest.store_options, **(options or {})}
    url = url if url is not None else manifest.url
    lexical = manifest.lexical.to_dict() if manifest.lexical is not None else None
    if manifest.backend == "qdrant":
        from omniret.index.qdrant_store import QdrantStore, check_options

        # the Qdrant collection is named after the collection's folder
        if url is not None:
            return QdrantStore(path.name, dim=manifest.dim, url=url, options=check_options(opts), create=create,
                               funnel_dim=manifest.funnel_dim, lexical=lexical)
        return QdrantStore(path.name, dim=manifest.dim, path=path / "qdrant", options=check_options(opts),
                           create=create, funnel_dim=manifest.funnel_dim, lexical=lexical)
    from omniret.index.faiss import FaissStore
    from omniret.index.faiss.ann import check_index_kind, check_options

    # the FAISS folder is the collection's own: it is made whenever the manifest exists
    return FaissStore(path / "faiss", dim=manifest.dim, index=check_index_kind(manifest.index),
                      options=check_options(opts), create=True, funnel_dim=manifest.funnel_dim, lexical=lexical)


def existing_collection(name: str, root: str | os.PathLike[str] | None, *, say_where: bool
                        ) -> tuple[Path, Manifest]:
    """An existing collection's folder and manifest, else ``CollectionNotFound`` (naming the folder it looked
    in when ``say_where``: the admin commands do, the service must not show its paths)."""
    path = collections_root(root) / check_collection_name(name)
    manifest = read_manifest(path)
    if manifest is None:
        raise CollectionNotFound(f"no collection {name!r}" + (f" in {path.parent}" if say_where else ""))
    return path, manifest


def collection_store(name: str, root: str | os.PathLike[str] | None = None) -> VectorStore:
    """The store of an existing collection, opened without loading its model (admin commands)."""
    path, manifest = existing_collection(name, root, say_where=True)
    return open_store(path, manifest, create=False)


def recorded_model(name: str, root: str | os.PathLike[str] | None = None) -> str | None:
    """The model an existing collection was built with (from its manifest; nothing is loaded), or None."""
    manifest = read_manifest(collections_root(root) / check_collection_name(name))
    return None if manifest is None else manifest.model


def list_collections(root: str | os.PathLike[str] | None = None) -> list[dict[str, JSON]]:
    """The manifests of every collection under ``root`` (sorted by name), as JSON objects with ``name`` and
    ``path`` set from the folder."""
    base = collections_root(root)
    if not base.is_dir():
        return []
    out: list[dict[str, JSON]] = []
    for d in sorted(base.iterdir()):
        m = read_manifest(d) if d.is_dir() else None
        if m is not None:
            out.append({**m.to_json(), "name": d.name, "path": str(d)})
    return out


def delete_collection(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """Delete a collection: its folder, and its Qdrant collection when it lives on a server."""
    path, manifest = existing_collection(name, root, say_where=False)
    if manifest.backend == "qdrant" and manifest.url:
        from omniret.index.qdrant_store import QdrantStore, check_options

        store = QdrantStore(name, url=manifest.url, options=check_options(manifest.store_options), create=False)
        try:
            store.drop()
        finally:
            store.close()
    shutil.rmtree(path)
