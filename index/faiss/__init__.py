"""The embedded default store: ``FaissStore``, FAISS for similarity over SQLite as the source of truth.

One module per concern: ``items`` (SQLite rows, vectors, generation), ``ann`` (index kinds, GPU, mmap,
the cache file and its catch-up), ``cache`` (the FAISS files), ``funnel`` (the short-prefix index),
``lexical`` (the FTS5 table), ``tune`` (recall tuning), and ``store`` (the ``FaissStore`` facade).
``import faiss`` inside this package is the FAISS library (imports are absolute).
"""

from __future__ import annotations

from omniret.index.faiss.ann import INDEX_KINDS, FaissOptions, IndexKind, check_index_kind
from omniret.index.faiss.store import FaissStore

__all__ = ["INDEX_KINDS", "FaissOptions", "FaissStore", "IndexKind", "check_index_kind"]
