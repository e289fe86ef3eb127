"""Token-budget batching: sort by length, pack batches under a padded-token, item and pixel budget.

Generic over what a "prepared input" is (the embedders and rerankers both use it): callers give each
input's token count (and vision patch count), get batches of indices, run them, and ``restore`` puts the
rows back in input order. Sorting by length (longest first) keeps padding small and lets an out-of-memory
batch show up first, not after most of the work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from omniret.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchBudget:
    """Limits of one forward pass.

    ``max_tokens`` bounds ``padded_length * batch_size``; ``max_items`` the batch size; ``max_patches`` the
    vision patches (rows of pixel values) of the batch. An input larger than a budget on its own still
    runs, alone.
    """

    max_tokens: int = 16384
    max_items: int = 64
    max_patches: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_items", "max_patches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")


def plan_batches(lengths: Sequence[int], budget: BatchBudget, patches: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of the inputs, grouped into batches: longest first, each batch within ``budget``."""
    n = len(lengths)
    pts = list(patches) if patches is not None else [0] * n
    order = sorted(range(n), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_len = cur_patches = 0
    for i in order:
        new_len = max(cur_len, lengths[i])
        if cur and (new_len * (len(cur) + 1) > budget.max_tokens or len(cur) + 1 > budget.max_items
                    or cur_patches + pts[i] > budget.max_patches):
            batches.append(cur)
            cur, cur_len, cur_patches, new_len = [], 0, 0, lengths[i]
        cur.append(i)
        cur_len = new_len
        cur_patches += pts[i]
    if cur:
        batches.append(cur)
    return batches


def padding_ratio(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions among all positions the batches compute."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if total == 0 else 1.0 - real / total


@dataclass(frozen=True)
class BatchPlanSummary:
    """What the batcher did with one call: enough to tell why memory stayed bounded (or where it did not)."""

    inputs: int
    batches: int
    max_batch_tokens: int
    max_batch_patches: int
    padding_ratio: float
    #: inputs over a budget on their own, each run in a batch of its own
    oversized: tuple[int, ...]


def summarize_plan(lengths: Sequence[int], batches: Sequence[Sequence[int]], budget: BatchBudget,
                   patches: Sequence[int] | None = None) -> BatchPlanSummary:
    """Padded tokens and patches of the largest batch, padding share, and the inputs that ran alone."""
    pts = list(patches) if patches is not None else [0] * len(lengths)
    oversized = tuple(sorted(i for i in range(len(lengths))
                             if lengths[i] > budget.max_tokens or pts[i] > budget.max_patches))
    return BatchPlanSummary(
        inputs=len(lengths), batches=len(batches),
        max_batch_tokens=max((max(lengths[i] for i in b) * len(b) for b in batches), default=0),
        max_batch_patches=max((sum(pts[i] for i in b) for b in batches), default=0),
        padding_ratio=padding_ratio(lengths, batches), oversized=oversized)


def run_batched(prepared: Sequence[Any], forward: Callable[[list[Any]], np.ndarray], *,
                lengths: Sequence[int], budget: BatchBudget, patches: Sequence[int] | None = None) -> np.ndarray:
    """Run ``forward`` over token-budget batches and return its rows in input order."""
    if not prepared:
        raise ValueError("run_batched needs at least one input")
    batches = plan_batches(lengths, budget, patches)
    summary = summarize_plan(lengths, batches, budget, patches)
    if summary.oversized:
        # they cannot be split (one sequence is one forward); running them alone is the bound we can give
        logger.info("%d input(s) exceed the batch budget on their own (max_tokens=%d, max_patches=%d) and run "
                    "alone: positions %s", len(summary.oversized), budget.max_tokens, budget.max_patches,
                    list(summary.oversized[:10]))
    logger.debug("%d inputs in %d batches: at most %d padded tokens and %d patches per batch, %.1f%% padding",
                 summary.inputs, summary.batches, summary.max_batch_tokens, summary.max_batch_patches,
                 100 * summary.padding_ratio)
    results = [np.asarray(forward([prepared[i] for i in batch])) for batch in batches]
    out = np.empty((len(prepared), *results[0].shape[1:]), dtype=results[0].dtype)
    for batch, rows in zip(batches, results, strict=True):
        out[batch] = rows
    return out
