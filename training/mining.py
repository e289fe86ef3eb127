"""Hard-negative mining: search each query in an omniret index over the corpus, skip its positives.

The corpus is embedded into a FAISS store in a temporary folder; for each training query the top
candidates that are not its positive become its negatives. With a reranker, candidates the reranker
scores like positives are dropped as probable false negatives: a candidate goes when its score exceeds
``max_score`` or ``ratio`` × the positive's score (the filter of NV-Retriever's "positive-aware" mining).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError
from omniret.rerank.protocol import Reranker
from omniret.training.data import TrainExample, item_key
from omniret.types import Item


def mine_hard_negatives(examples: Sequence[TrainExample], corpus: Sequence[Item], embedder: Embedder, *,
                        num_negatives: int = 4, candidates: int = 30, skip_top: int = 0,
                        reranker: Reranker | None = None, max_score: float | None = None, ratio: float | None = None,
                        query_instruction: str | None = None, batch_size: int = 256,
                        progress: Callable[[int], None] | None = None) -> list[TrainExample]:
    """Examples with ``negatives`` replaced by mined ones (their existing negatives are dropped).

    ``skip_top`` ignores the first ranks (often unlabelled positives); ``reranker`` with ``max_score``
    and/or ``ratio`` filters false negatives. ``embedder`` is any omniret ``Embedder``.
    """
    import numpy as np

    from omniret.index import FaissStore

    if num_negatives <= 0:
        raise ConfigError(f"num_negatives must be > 0, got {num_negatives}")
    if (max_score is not None or ratio is not None) and reranker is None:
        raise ConfigError("max_score/ratio filter false negatives with a reranker; pass --reranker too")
    by_id = {it.id: it for it in corpus}
    keys = {it.id: item_key(it) for it in corpus}
    k = min(len(corpus), candidates + skip_top + 1)
    out: list[TrainExample] = []
    with tempfile.TemporaryDirectory(prefix="omniret-mine-") as tmp:
        store = None
        for start in range(0, len(corpus), batch_size):
            chunk = list(corpus[start:start + batch_size])
            vecs = embedder.embed(chunk)
            if store is None:
                store = FaissStore(Path(tmp) / "corpus", dim=vecs.shape[1])
            store.upsert([str(it.id) for it in chunk], vecs)
        if store is None:
            raise ConfigError("the corpus is empty")
        try:
            for start in range(0, len(examples), batch_size):
                batch = list(examples[start:start + batch_size])
                qv = np.concatenate([embedder.embed([ex.query], instruction=ex.instruction or query_instruction)
                                     for ex in batch]) if any(ex.instruction for ex in batch) else \
                    embedder.embed([ex.query for ex in batch], instruction=query_instruction)
                hits = store.search(qv, k)
                for ex, row in zip(batch, hits, strict=True):
                    pos_key = item_key(ex.positive)
                    cands = [by_id[h.id] for h in row if keys[h.id] != pos_key][skip_top:]
                    if reranker is not None:
                        cands = _filter(reranker, ex, cands, max_score, ratio)
                    out.append(TrainExample(query=ex.query, positive=ex.positive,
                                            negatives=cands[:num_negatives], instruction=ex.instruction,
                                            id=ex.id))
                if progress is not None:
                    progress(len(batch))
        finally:
            store.close()
    return out


def _filter(reranker: Reranker, ex: TrainExample, cands: list[Item], max_score: float | None,
            ratio: float | None) -> list[Item]:
    if not cands:
        return cands
    scores = reranker.score(ex.query, [ex.positive, *cands], instruction=ex.instruction)
    pos = float(scores[0])
    kept = []
    for item, s in zip(cands, scores[1:], strict=True):
        if max_score is not None and s > max_score:
            continue
        if ratio is not None and s > ratio * pos:
            continue
        kept.append(item)
    return kept
