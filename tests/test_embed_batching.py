"""Token-budget batching: sorted, within budgets, rows restored to input order."""

from __future__ import annotations

import numpy as np
import pytest

from omniret.base.batching import BatchBudget, padding_ratio, plan_batches, run_batched
from omniret.errors import ConfigError


def test_plan_respects_budgets_and_sorts():
    lengths = [5, 100, 7, 50, 51, 3, 200]
    budget = BatchBudget(max_tokens=150, max_items=3, max_patches=10)
    batches = plan_batches(lengths, budget, patches=[0, 0, 0, 6, 6, 0, 0])
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches[0] == [6]  # longest first, alone over budget
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 150
    assert all(not {3, 4} <= set(b) for b in batches)  # 12 patches > 10
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)


def test_run_batched_restores_order_and_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 50).tolist()
    budget = BatchBudget(max_tokens=1000, max_items=16)
    out = run_batched(list(range(50)), lambda xs: np.array([[x, lengths[x]] for x in xs]), lengths=lengths,
                      budget=budget)
    assert out[:, 0].tolist() == list(range(50))
    assert padding_ratio(lengths, plan_batches(lengths, budget)) < padding_ratio(lengths, [list(range(50))])


def test_budget_validation():
    with pytest.raises(ConfigError, match="max_tokens must be a positive integer, got 0"):
        BatchBudget(max_tokens=0)
