"""Vector stores (FAISS, Qdrant), ingestion, collections and two-stage search.

``open_collection`` is the entry point: it picks the store from its arguments, records the model, and
returns a ``Collection`` that adds files or items and searches them (dense, lexical or hybrid). Heavy modules (faiss, qdrant-client,
torch) load on first use, so importing ``omniret.index`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from omniret.index.protocol import HybridStore, LexicalBackfill, LexicalStore, TunableStore, VectorStore

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
    "IngestReport": "omniret.index.ingest",
    "Filter": "omniret.index.filters",
    "Analyzer": "omniret.index.lexical",
    "first_stage": "omniret.index.searcher",
}

__all__ = ["VectorStore", "LexicalStore", "HybridStore", "LexicalBackfill", "TunableStore", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniret.index' has no attribute {name!r}")
