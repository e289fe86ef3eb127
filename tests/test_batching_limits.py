"""The batcher's memory bounds: tokens, patches and items per forward, oversized inputs alone, order kept.

The last tests run the tiny Qwen3-VL embedder on CPU: the same vectors whether items go one at a time, in
small budget-bound batches or in one big batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omniret import Item
from omniret.base.batching import BatchBudget, plan_batches, run_batched, summarize_plan
from omniret.embed import load_embedder


def _check_bounded(lengths: list[int], patches: list[int], budget: BatchBudget) -> list[list[int]]:
    batches = plan_batches(lengths, budget, patches)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        if len(b) == 1:
            continue  # a single input may exceed a budget; it then runs alone
        assert max(lengths[i] for i in b) * len(b) <= budget.max_tokens
        assert sum(patches[i] for i in b) <= budget.max_patches
        assert len(b) <= budget.max_items
    return batches


def test_random_plans_stay_within_every_budget():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        lengths = rng.integers(1, 4000, n).tolist()
        patches = (rng.integers(0, 3, n) * rng.integers(0, 5000, n)).tolist()
        budget = BatchBudget(max_tokens=int(rng.integers(100, 20000)), max_items=int(rng.integers(1, 64)),
                             max_patches=int(rng.integers(100, 20000)))
        _check_bounded(lengths, patches, budget)


def test_oversized_inputs_run_alone_and_are_reported(caplog: pytest.LogCaptureFixture):
    # a 32k-token document and a 64-frame video (many patches) among short texts
    lengths = [20, 32768, 30, 4000, 25]
    patches = [0, 0, 0, 64 * 1024, 0]
    budget = BatchBudget(max_tokens=16384, max_items=64, max_patches=32768)
    batches = _check_bounded(lengths, patches, budget)
    assert [1] in batches and [3] in batches
    summary = summarize_plan(lengths, batches, budget, patches)
    assert summary.oversized == (1, 3)
    assert summary.batches == 3
    with caplog.at_level(logging.INFO, logger="omniret.base.batching"):
        out = run_batched(list(range(5)), lambda xs: np.array(xs, dtype=np.float32)[:, None], lengths=lengths,
                          budget=budget, patches=patches)
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert "2 input(s) exceed the batch budget on their own" in caplog.text
    assert "positions [1, 3]" in caplog.text


def test_summary_counts_padding_and_largest_batch():
    lengths = [10, 8, 6, 4]
    batches = [[0, 1], [2, 3]]
    s = summarize_plan(lengths, batches, BatchBudget(max_tokens=100), [0, 5, 5, 0])
    assert s.max_batch_tokens == 20
    assert s.max_batch_patches == 5
    assert s.padding_ratio == pytest.approx(1 - 28 / 32)
    assert s.oversized == ()


@pytest.fixture(scope="module")
def mixed_items(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    folder: Path = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(1)
    items: list[Item] = []
    for i, (w, h) in enumerate([(64, 64), (200, 120), (96, 256)]):
        path = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        items.append(Item(image=str(path)))
        items.append(Item(text=f"caption {i} " + "word " * (5 * i), image=str(path)))
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "by", "the", "sea"]
    for n in (3, 40, 12, 90, 1, 25):
        items.append(Item(text=" ".join(words[k % len(words)] for k in range(n))))
    return items


def test_batched_equals_one_at_a_time(tiny_vl_embedding: Path, mixed_items: list[Item]):
    emb = load_embedder(str(tiny_vl_embedding), device="cpu", prepare_workers=2)
    whole = emb.embed(mixed_items)
    alone = np.concatenate([emb.embed([it]) for it in mixed_items])
    np.testing.assert_allclose(whole, alone, atol=2e-5)
    # distinct inputs are far apart compared with the tolerance, so a row in the wrong place would show
    dist = np.linalg.norm(alone[:, None] - alone[None], axis=-1)
    assert dist[~np.eye(len(mixed_items), dtype=bool)].min() > 1e-2


def test_small_budgets_bound_batches_and_keep_vectors(tiny_vl_embedding: Path, mixed_items: list[Item]):
    big = load_embedder(str(tiny_vl_embedding), device="cpu")
    small = load_embedder(str(tiny_vl_embedding), device="cpu", max_batch_tokens=128, max_batch_items=3,
                          max_batch_patches=64)
    prepared = small.prepare_all(mixed_items, None)
    lengths = [p.num_tokens for p in prepared]
    patches = [p.num_patches for p in prepared]
    batches = _check_bounded(lengths, patches, small.budget)
    assert len(batches) > 3
    np.testing.assert_allclose(small.embed(mixed_items), big.embed(mixed_items), atol=2e-5)
