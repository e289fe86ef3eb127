"""What one running app holds: its settings, models, micro-batcher and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omniret.api.batching import MicroBatcher
from omniret.api.metrics import Metrics
from omniret.api.tokens import TokenCounter
from omniret.embed.protocol import Embedder
from omniret.rerank.protocol import Reranker
from omniret.settings import Settings

if TYPE_CHECKING:  # omniret.index loads FAISS; the app opens collections only when a request asks
    from omniret.index.collection import Collection


@dataclass
class ServiceState:
    """Shared by every request of one app (``app.state.omniret``)."""

    settings: Settings
    metrics: Metrics
    root: Path
    embedder: Embedder | None = None
    reranker: Reranker | None = None
    batcher: MicroBatcher | None = None
    load_error: str | None = None
    loading: bool = True
    #: the ids responses report for the served models, and the names a request's ``model`` may use
    embed_id: str = ""
    rerank_id: str = ""
    embed_names: set[str] = field(default_factory=set[str])
    rerank_names: set[str] = field(default_factory=set[str])
    #: open collections by name; touched only on the model worker thread
    collections: dict[str, Collection] = field(default_factory=dict[str, "Collection"])
    #: (server path, public name) pairs scrubbed from error messages (models' folders, the collections root)
    private_paths: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    #: count model tokens for ``usage`` (a tokenizer per thread): the embedder's and the reranker's
    tokens: TokenCounter | None = None
    rerank_tokens: TokenCounter | None = None

    @property
    def ready(self) -> bool:
        return not self.loading and self.load_error is None and self.embedder is not None
