"""``Searcher``: two-stage search. Embed the query, take ``candidates`` from the store, rerank the best.

Stage two needs the documents themselves, so they are rebuilt from the stored payloads (chunk text,
image path, PDF page, video span): ingestion stores enough to do that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError, ItemError
from omniret.index.filters import Filter
from omniret.index.protocol import VectorStore
from omniret.rerank.protocol import Reranker
from omniret.types import Hit, Item, ItemLike


def item_from_payload(payload: dict[str, Any], modalities: frozenset[str] | set[str]) -> Item | None:
    """The document a payload describes, in the modalities a model takes; None when it cannot be rebuilt.

    Media win when the model accepts them (a PDF page is re-rendered from its file); otherwise the text
    (a PDF page's text layer, a chunk) stands for the document.
    """
    text = payload.get("text") if isinstance(payload.get("text"), str) and payload.get("text") else None
    kind = payload.get("kind")
    path = payload.get("path")
    if kind == "pdf" and path and "image" in modalities:
        from omniret.base.media import pdf_page_items

        try:
            return pdf_page_items(path, pages=[int(payload.get("page", 1))])[0]
        except ItemError:
            pass
    video = payload.get("video")
    if isinstance(video, str) and "video" in modalities:
        return Item(video=video, video_start=payload.get("video_start"), video_end=payload.get("video_end"),
                    text=text if kind != "video" else None)
    image = payload.get("image")
    if isinstance(image, str) and "image" in modalities:
        return Item(image=image, text=text if kind != "image" else None)
    if text is not None and "text" in modalities:
        return Item(text=text)
    return None


class Searcher:
    """Query item -> embed (query instruction) -> ``store.search(candidates)`` -> rerank the top.

    ``reranker`` scores the top candidates in [0, 1]. ``dim`` is the store's width when the embedder is
    Matryoshka and the collection shorter.
    """

    def __init__(self, embedder: Embedder, store: VectorStore, reranker: Reranker | None = None, *,
                 instruction: str | None = None, dim: int | None = None,
                 rerank_instruction: str | None = None) -> None:
        self.embedder = embedder
        self.store = store
        self.reranker = reranker
        self.instruction = instruction
        self.rerank_instruction = rerank_instruction
        self.dim = dim if dim is not None else store.dim

    def embed_query(self, query: ItemLike, instruction: str | None = None) -> np.ndarray:
        item = Item.coerce(query, index=0)
        if item.is_empty:
            raise ItemError.for_item(0, item.id, "the query is empty; give text and/or an image")
        dim = self.dim if self.dim != self.embedder.dim else None
        return self.embedder.embed([item], instruction=instruction or self.instruction, dim=dim)

    def search(self, query_item: ItemLike, k: int = 10, filter: Filter | None = None,  # noqa: A002
               candidates: int = 100, rerank_top: int | None = None, *, rerank: bool | None = None,
               instruction: str | None = None, funnel: bool | None = None) -> list[Hit]:
        """Hits for one query: reranked ones first (by rerank score), then the rest by vector score.

        ``rerank``: None reranks when a reranker is set, False never, True requires one. ``funnel`` goes
        to the store (None: its default; see ``FaissStore.search``).
        """
        if k <= 0:
            raise ConfigError(f"k must be > 0, got {k}")
        if rerank and self.reranker is None:
            raise ConfigError("rerank=True but this searcher has no reranker; pass reranker= (e.g. "
                              "load_reranker('Qwen/Qwen3-VL-Reranker-2B'))")
        reranker = self.reranker if rerank is not False else None
        n_cand = max(k, candidates) if reranker is not None else k
        q = self.embed_query(query_item, instruction)
        extra = {"funnel": funnel} if funnel is not None else {}
        hits = self.store.search(q, n_cand, filter=filter, **extra)[0]
        if reranker is None or not hits:
            return hits[:k]
        top = min(rerank_top if rerank_top is not None else min(candidates, 50), len(hits))
        if top <= 0:
            return hits[:k]
        return self._rerank(reranker, Item.coerce(query_item), hits, top)[:k]

    def _rerank(self, reranker: Reranker, query: Item, hits: list[Hit], top: int) -> list[Hit]:
        head, tail = hits[:top], hits[top:]
        docs: list[Item] = []
        idx: list[int] = []
        for i, h in enumerate(head):
            doc = item_from_payload(h.payload, reranker.modalities)
            if doc is not None:
                docs.append(doc)
                idx.append(i)
        if docs:
            q = Item(text=query.text, image=query.image, video=query.video, video_start=query.video_start,
                     video_end=query.video_end, fps=query.fps, max_frames=query.max_frames)
            # a document that cannot be scored now (file moved) keeps its vector rank instead
            res = reranker.score_partial(q, docs, instruction=self.rerank_instruction)
            for j, s in zip(res.indices, res.scores, strict=True):
                head[idx[j]].rerank_score = float(s)
        scored = sorted((h for h in head if h.rerank_score is not None), key=lambda h: -h.final_score)
        rest = sorted([h for h in head if h.rerank_score is None] + tail, key=lambda h: -h.score)
        return scored + rest
