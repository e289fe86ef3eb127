"""``Searcher``: two-stage search. Take ``candidates`` from the store, rerank the best.

The first stage is dense (embed the query, nearest vectors), lexical (BM25 over the analysed text) or
hybrid (both, fused: ``omniret.index.fusion``); ``first_stage`` is that step alone, shared with evaluation.

Stage two needs the documents themselves, so they are rebuilt from the stored payloads (chunk text,
image path, PDF page, video span): ingestion stores enough to do that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError, ItemError, SearchModeError
from omniret.index.filters import Filter
from omniret.index.fusion import DEFAULT_ALPHA, check_fusion, check_mode, check_query_text, fuse, tag
from omniret.index.protocol import HybridStore, LexicalStore, VectorStore
from omniret.rerank.protocol import Reranker
from omniret.types import Hit, Item, ItemLike


def query_text(item: Item) -> str:
    """The text a query offers the lexical side (its text parts joined)."""
    return " ".join(t for t in item.texts if t)


def _lexical(store: VectorStore, mode: str) -> LexicalStore:
    if not isinstance(store, LexicalStore):
        raise SearchModeError(f"mode={mode!r}: this store ({type(store).__name__}) has no lexical index; use "
                              "mode='dense'")
    return store


def _no_text(store: VectorStore, lex: LexicalStore, mode: str) -> None:
    """Raise when an empty lexical answer is because no stored item has text (an empty store is fine)."""
    if lex.lexical_count() == 0 and store.count() > 0:
        raise SearchModeError(f"mode={mode!r}: no item in this collection has text (title, caption or text in its "
                              "payload), so there is no lexical index to search; use mode='dense'")


def first_stage(store: VectorStore, vectors: np.ndarray | None, texts: Sequence[str], k: int, *,
                filter: Filter | None = None, mode: str = "dense", fusion: str = "rrf",  # noqa: A002
                alpha: float = DEFAULT_ALPHA, depth: int | None = None, funnel: bool | None = None) -> list[list[Hit]]:
    """First-stage hits per query: ``k`` each, by ``mode``; hybrid fuses ``depth`` (default ``k``) per side.

    ``vectors`` are the embedded queries (needed for dense and hybrid), ``texts`` the query texts (lexical
    and hybrid). Hits carry ``dense_score`` / ``lexical_score`` / ``fused_score`` as they apply.
    """
    mode = check_mode(mode)
    fusion, alpha = check_fusion(fusion, alpha)
    extra = {"funnel": funnel} if funnel is not None else {}
    if mode == "dense":
        if vectors is None:
            raise ConfigError("mode='dense' needs query vectors")
        return [tag(h, "dense") for h in store.search(vectors, k, filter=filter, **extra)]
    lex = _lexical(store, mode)
    for t in texts:
        check_query_text(mode, t)
    if mode == "lexical":
        out = [tag(h, "lexical") for h in lex.lexical_search(texts, k, filter=filter)]
        if not any(out):
            _no_text(store, lex, mode)
        return out
    if vectors is None:
        raise ConfigError("mode='hybrid' needs query vectors")
    depth = max(depth or k, k)
    if isinstance(store, HybridStore):
        out = store.hybrid_search(vectors, texts, k, filter=filter, depth=depth, fusion=fusion, alpha=alpha,
                                  funnel=funnel)
        if all(h.lexical_score is None for hits in out for h in hits):
            _no_text(store, lex, mode)
        return out
    dense = store.search(vectors, depth, filter=filter, **extra)
    lexical = lex.lexical_search(texts, depth, filter=filter)
    if not any(lexical):
        _no_text(store, lex, mode)
    return [fuse(d, lx, k, fusion=fusion, alpha=alpha) for d, lx in zip(dense, lexical, strict=True)]


def _seconds(v: object) -> float | None:
    """A payload's segment bound: a number of seconds, or None when absent (or not a number)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def item_from_payload(payload: Mapping[str, object], modalities: frozenset[str] | set[str]) -> Item | None:
    """The document a payload describes, in the modalities a model takes; None when it cannot be rebuilt.

    Media win when the model accepts them (a PDF page is re-rendered from its file); otherwise the text
    (a PDF page's text layer, a chunk) stands for the document.
    """
    given = payload.get("text")
    text = given if isinstance(given, str) and given else None
    kind = payload.get("kind")
    path, page = payload.get("path"), payload.get("page", 1)
    if kind == "pdf" and isinstance(path, str) and path and isinstance(page, (int, float, str)) \
            and "image" in modalities:
        from omniret.base.media import pdf_page_items

        try:
            return pdf_page_items(path, pages=[int(page)])[0]
        except ItemError:
            pass
    video = payload.get("video")
    if isinstance(video, str) and "video" in modalities:
        return Item(video=video, video_start=_seconds(payload.get("video_start")),
                    video_end=_seconds(payload.get("video_end")), text=text if kind != "video" else None)
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
               instruction: str | None = None, funnel: bool | None = None, mode: str = "dense",
               fusion: str = "rrf", alpha: float | None = None) -> list[Hit]:
        """Hits for one query: reranked ones first (by rerank score), then the rest by first-stage score.

        ``rerank``: None reranks when a reranker is set, False never, True requires one. ``funnel`` goes
        to the store (None: its default; see ``FaissStore.search``). ``mode``: ``dense``, ``lexical`` or
        ``hybrid`` (each side takes ``candidates``, fused by ``fusion`` = ``rrf`` or ``weighted`` with
        ``alpha``, the dense weight in [0, 1]); see ``omniret.index.fusion``.
        """
        if k <= 0:
            raise ConfigError(f"k must be > 0, got {k}")
        mode = check_mode(mode)
        fusion, alpha_ = check_fusion(fusion, alpha)
        if rerank and self.reranker is None:
            raise ConfigError("rerank=True but this searcher has no reranker; pass reranker= (e.g. "
                              "load_reranker('Qwen/Qwen3-VL-Reranker-2B'))")
        reranker = self.reranker if rerank is not False else None
        n_cand = max(k, candidates) if reranker is not None else k
        text = query_text(Item.coerce(query_item, index=0))
        check_query_text(mode, text)
        q = self.embed_query(query_item, instruction) if mode != "lexical" else None
        hits = first_stage(self.store, q, [text], n_cand, filter=filter, mode=mode, fusion=fusion, alpha=alpha_,
                           depth=max(n_cand, candidates), funnel=funnel)[0]
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
