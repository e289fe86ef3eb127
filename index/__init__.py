"""Vector stores (FAISS, Qdrant), ingestion, collections and two-stage search.

``open_collection`` is the entry point: it picks the store from its arguments, records the model, and
returns a ``Collection`` that adds files or items and searches them (dense, lexical or hybrid). Heavy modules (faiss, qdrant-client,
torch) load on first use, so importing ``omniret.index`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from omniret.index.protocol import (
    HybridStore,
    LexicalBackfill,
    LexicalStore,
    PointExport,
    TunableStore,
    VectorStore,
)

if TYPE_CHECKING:
    from omniret.index.catalog import collection_store, delete_collection, list_collections
    from omniret.index.collection import Collection, open_collection
    from omniret.index.faiss import FaissStore
    from omniret.index.filters import Filter
    from omniret.index.ingest import IngestReport
    from omniret.index.lexical import Analyzer
    from omniret.index.manifest import Manifest
    from omniret.index.names import check_collection_name
    from omniret.index.qdrant_store import QdrantStore
    from omniret.index.searcher import Searcher, first_stage

_LAZY = {
    "FaissStore": "omniret.index.faiss",
    "QdrantStore": "omniret.index.qdrant_store",
    "Collection": "omniret.index.collection",
    "open_collection": "omniret.index.collection",
    "list_collections": "omniret.index.catalog",
    "delete_collection": "omniret.index.catalog",
    "collection_store": "omniret.index.catalog",
    "Manifest": "omniret.index.manifest",
    "check_collection_name": "omniret.index.names",
    "Searcher": "omniret.index.searcher",
    "IngestReport": "omniret.index.commit",
    "ExecutorInfo": "omniret.index.commit",
    "IngestOptions": "omniret.index.readers",
    "ingest": "omniret.index.ingest",
    "Ledger": "omniret.index.ledger",
    "Source": "omniret.index.ledger",
    "Filter": "omniret.index.filters",
    "Analyzer": "omniret.index.lexical",
    "first_stage": "omniret.index.searcher",
}

__all__ = ["VectorStore", "LexicalStore", "HybridStore", "LexicalBackfill", "TunableStore", "PointExport", "FaissStore", "QdrantStore",
           "Collection", "open_collection", "list_collections", "delete_collection", "collection_store", "Manifest",
           "check_collection_name", "Searcher", "IngestReport", "Filter", "Analyzer", "first_stage"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniret.index' has no attribute {name!r}")
