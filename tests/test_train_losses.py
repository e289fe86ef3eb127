"""Each training loss against a value computed by hand on a few vectors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from omniret.errors import ConfigError, DimensionError
from omniret.training.losses import DistillationLoss, InfoNCELoss, MatryoshkaLoss, RerankerLoss


def _unit(*rows: list[float]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.norm(dim=-1, keepdim=True)


def _nll(pos: float, others: list[float], tau: float) -> float:
    z = math.exp(pos / tau) + sum(math.exp(s / tau) for s in others)
    return -math.log(math.exp(pos / tau) / z)


def test_infonce_in_batch_only_matches_hand_value() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([0.8, 0.6], [0.6, 0.8])
    loss = InfoNCELoss(temperature=0.5, margin=None, query_query=False, doc_doc=False)
    # row 0: s(q0,p0)=0.8, s(q0,p1)=0.6 ; row 1: s(q1,p1)=0.8, s(q1,p0)=0.6
    want = (_nll(0.8, [0.6], 0.5) + _nll(0.8, [0.6], 0.5)) / 2
    assert loss(q, p).item() == pytest.approx(want, rel=1e-9)


def test_infonce_hard_negatives_and_qq_dd_terms() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([0.8, 0.6], [0.6, 0.8])
    n = _unit([0.0, 1.0], [1.0, 0.0]).reshape(2, 1, 2)
    loss = InfoNCELoss(temperature=1.0, margin=None)
    # row 0 candidates: p1 .6, n0 0, n1 1 (other row's hard negative), q1 0, s(p0,p1)=.96, s(p0,n0)=.6, s(p0,n1)=.8
    want0 = _nll(0.8, [0.6, 0.0, 1.0, 0.0, 0.96, 0.6, 0.8], 1.0)
    want1 = _nll(0.8, [0.6, 1.0, 0.0, 0.0, 0.96, 0.8, 0.6], 1.0)
    assert loss(q, p, n).item() == pytest.approx((want0 + want1) / 2, rel=1e-9)
    own_only = InfoNCELoss(temperature=1.0, margin=None, in_batch_hard_negatives=False, query_query=False,
                           doc_doc=False)
    assert own_only(q, p, n).item() == pytest.approx(
        (_nll(0.8, [0.6, 0.0], 1.0) + _nll(0.8, [0.6, 0.0], 1.0)) / 2, rel=1e-9)


def test_false_negative_mask_drops_candidates_above_positive_plus_margin() -> None:
    q = _unit([1.0, 0.0], [0.0, 1.0])
    p = _unit([0.8, 0.6], [0.6, 0.8])
    n = _unit([1.0, 0.05], [0.05, 1.0]).reshape(2, 1, 2)   # each hard negative scores ~0.9987 > 0.8 + 0.1
    plain = InfoNCELoss(temperature=1.0, margin=None, in_batch_hard_negatives=False, query_query=False,
                        doc_doc=False)
    masked = InfoNCELoss(temperature=1.0, margin=0.1, in_batch_hard_negatives=False, query_query=False,
                         doc_doc=False)
    assert masked(q, p, n).item() == pytest.approx(_nll(0.8, [0.6], 1.0), rel=1e-9)
    assert plain(q, p, n).item() > masked(q, p, n).item()
    # with a wide margin nothing is masked
    wide = InfoNCELoss(temperature=1.0, margin=0.5, in_batch_hard_negatives=False, query_query=False,
                       doc_doc=False)
    assert wide(q, p, n).item() == pytest.approx(plain(q, p, n).item(), rel=1e-12)


def test_infonce_rejects_bad_shapes_and_temperature() -> None:
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        InfoNCELoss(temperature=0)
    with pytest.raises(DimensionError, match=r"negatives must be \(B, K, d\)"):
        InfoNCELoss()(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3))


def test_matryoshka_sums_weighted_losses_over_truncated_renormalised_prefixes() -> None:
    q = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, 1.0, 0.0, -2.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    base = InfoNCELoss(temperature=0.5, margin=None, query_query=False, doc_doc=False)
    loss = MatryoshkaLoss(base, dims=[4, 2], weights=[1.0, 0.5])
    want = base(q, p).item() + 0.5 * base(q[:, :2], p[:, :2]).item()
    assert loss(q, p).item() == pytest.approx(want, rel=1e-12)
    # the 2-dim prefix alone differs from the full-dim loss, so the weighting changes the value
    assert MatryoshkaLoss(base, dims=[4]).forward(q, p).item() != pytest.approx(loss(q, p).item())
    with pytest.raises(ConfigError, match="exceed the embedding size 4"):
        MatryoshkaLoss(base, dims=[8])(q, p)
    with pytest.raises(ConfigError, match="give one weight per dim"):
        MatryoshkaLoss(base, dims=[4, 2], weights=[1.0])


def test_reranker_pointwise_and_listwise() -> None:
    z = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5))) / 3
    assert RerankerLoss()(z, y).item() == pytest.approx(want, rel=1e-9)
    lw = RerankerLoss("listwise")(z.reshape(1, 3))
    assert lw.item() == pytest.approx(-math.log(math.exp(2.0) / sum(math.exp(v) for v in (2.0, -1.0, 0.5))),
                                      rel=1e-9)
    both = RerankerLoss("both")(z.reshape(1, 3))
    assert both.item() == pytest.approx(lw.item() + want, rel=1e-9)


def test_distillation_kl_with_temperatures() -> None:
    q = _unit([1.0, 0.0])
    c = _unit([1.0, 0.0], [0.0, 1.0]).reshape(1, 2, 2)       # student cosines 1, 0
    t = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    tt, ts = 2.0, 0.5
    pt = [math.exp(1.0) / (math.exp(1.0) + 1), 1 / (math.exp(1.0) + 1)]     # softmax([2, 0] / 2)
    ps = [math.exp(2.0) / (math.exp(2.0) + 1), 1 / (math.exp(2.0) + 1)]     # softmax([1, 0] / 0.5)
    want = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    got = DistillationLoss(teacher_temperature=tt, student_temperature=ts)(q, c, t)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # equal distributions give zero
    same = DistillationLoss(teacher_temperature=1.0, student_temperature=1.0)(q, c, torch.tensor([[1.0, 0.0]]))
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(DimensionError, match=r"teacher_scores must be \(B, C\)"):
        DistillationLoss()(q, c, torch.ones(1, 3))


def test_distillation_label_weight_adds_the_cross_entropy_on_the_positive() -> None:
    torch.manual_seed(0)
    q, c, t = torch.randn(4, 8), torch.randn(4, 3, 8), torch.randn(4, 3)
    kl = DistillationLoss(1.0, 0.1)(q, c, t)
    s = (F.normalize(c, dim=-1) @ F.normalize(q, dim=-1).unsqueeze(-1)).squeeze(-1) / 0.1
    ce = F.cross_entropy(s, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(DistillationLoss(1.0, 0.1, label_weight=0.5)(q, c, t), kl + 0.5 * ce)
    with pytest.raises(ConfigError, match="label weight"):
        DistillationLoss(label_weight=-1.0)
