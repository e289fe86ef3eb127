"""First-stage modes and the fusion of a dense and a lexical result list.

``mode``: ``dense`` (vectors), ``lexical`` (BM25) or ``hybrid`` (both, fused). ``fusion``:

- ``rrf`` (default): reciprocal rank fusion, ``sum over lists of 1 / (k + rank)`` with 1-based ranks and
  ``k = 60`` (Cormack et al. 2009). Rank-only, so it needs no score calibration.
- ``weighted``: ``alpha * dense + (1 - alpha) * lexical`` over scores min-max normalised within each list
  (Weaviate's relative-score fusion); a hit missing from a list contributes 0 from it. ``alpha`` is the
  dense side's weight: 1 is dense order, 0 lexical order.

Fused hits carry ``dense_score`` and ``lexical_score`` (None for a side that did not return the hit),
``fused_score``, and ``score = fused_score``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

from omniret.errors import SearchModeError
from omniret.types import Hit

Mode = Literal["dense", "lexical", "hybrid"]
Fusion = Literal["rrf", "weighted"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "weighted")
RRF_K = 60
#: weighted fusion's default dense weight: 0.6-0.8 beat both single modes on two of the project's three
#: offline sets (benchmarks/RESULTS.md); Weaviate's hybrid defaults to 0.75 for the same reason
DEFAULT_ALPHA = 0.7


def check_mode(mode: object, *, field: str = "mode") -> str:
    """``mode`` if it is one of ``MODES``; ``SearchModeError`` naming the field otherwise."""
    if mode not in MODES:
        raise SearchModeError(f"{field}={mode!r}: choose one of {', '.join(MODES)}", field="mode")
    return str(mode)


def check_query_text(mode: str, text: str) -> None:
    """Lexical and hybrid searches match words: a query without text is refused (field ``text``)."""
    if mode != "dense" and not text.strip():
        raise SearchModeError(f"mode={mode!r} needs query text (an image-only query has no words to match); use "
                              "mode='dense'", field="text")


def check_fusion(fusion: object, alpha: object = None, *, field: str = "fusion") -> tuple[str, float]:
    """Validated ``(fusion, alpha)``; alpha defaults to ``DEFAULT_ALPHA`` and must lie in [0, 1]."""
    if fusion not in FUSIONS:
        raise SearchModeError(f"{field}={fusion!r}: choose one of {', '.join(FUSIONS)}", field="fusion")
    if alpha is None:
        return str(fusion), DEFAULT_ALPHA
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise SearchModeError(f"alpha={alpha!r}: must be a number in [0, 1] (the dense side's weight)", field="alpha")
    if fusion != "weighted" and alpha != DEFAULT_ALPHA:
        raise SearchModeError(f"alpha={alpha!r} is the weight of fusion='weighted'; fusion={fusion!r} ranks by "
                              "reciprocal rank and takes no alpha", field="alpha")
    return str(fusion), float(alpha)


def _side(h: Hit, dense: bool) -> Hit:
    return Hit(id=h.id, score=h.score, payload=h.payload,
               dense_score=h.score if dense else None, lexical_score=None if dense else h.score)


def rrf(dense: Sequence[Hit], lexical: Sequence[Hit], k: int, *, rrf_k: int = RRF_K) -> list[Hit]:
    """The best ``k`` of the union of two ranked lists by reciprocal rank fusion (ties: dense order first)."""
    fused: dict[str, Hit] = {}
    for hits, is_dense in ((dense, True), (lexical, False)):
        for rank, h in enumerate(hits, 1):
            got = fused.get(h.id)
            if got is None:
                got = fused[h.id] = _side(h, is_dense)
                got.fused_score = 0.0
            elif is_dense:
                got.dense_score = h.score
            else:
                got.lexical_score = h.score
            got.fused_score = (got.fused_score or 0.0) + 1.0 / (rrf_k + rank)
    return _ranked(fused.values(), k)


def _minmax(hits: Sequence[Hit]) -> dict[str, float]:
    if not hits:
        return {}
    lo, hi = min(h.score for h in hits), max(h.score for h in hits)
    span = hi - lo
    return {h.id: (h.score - lo) / span if span > 0 else 1.0 for h in hits}


def weighted(dense: Sequence[Hit], lexical: Sequence[Hit], k: int, *, alpha: float = DEFAULT_ALPHA) -> list[Hit]:
    """The best ``k`` of the union by ``alpha * dense + (1 - alpha) * lexical`` on min-max-normalised scores."""
    nd, nl = _minmax(dense), _minmax(lexical)
    fused: dict[str, Hit] = {}
    for h in dense:
        fused[h.id] = _side(h, True)
    for h in lexical:
        got = fused.get(h.id)
        if got is None:
            fused[h.id] = _side(h, False)
        else:
            got.lexical_score = h.score
    for hid, h in fused.items():
        h.fused_score = alpha * nd.get(hid, 0.0) + (1.0 - alpha) * nl.get(hid, 0.0)
    return _ranked(fused.values(), k)


def _ranked(hits: Iterable[Hit], k: int) -> list[Hit]:
    out = sorted(hits, key=lambda h: -(h.fused_score or 0.0))
    for h in out:
        h.score = float(h.fused_score or 0.0)
    return out[:k]


def fuse(dense: Sequence[Hit], lexical: Sequence[Hit], k: int, *, fusion: str = "rrf",
         alpha: float = DEFAULT_ALPHA) -> list[Hit]:
    """Fuse two ranked lists by ``fusion`` (``rrf`` or ``weighted``); see the module docstring."""
    if fusion == "rrf":
        return rrf(dense, lexical, k)
    return weighted(dense, lexical, k, alpha=alpha)


def tag(hits: list[Hit], mode: str) -> list[Hit]:
    """Record a single-mode hit's score as its dense or lexical score too."""
    for h in hits:
        if mode == "dense":
            h.dense_score = h.score
        elif mode == "lexical":
            h.lexical_score = h.score
    return hits
