"""Reranker loss on the ``yes``/``no`` token: pointwise binary cross-entropy, optionally listwise."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniret.errors import ConfigError, DimensionError


class RerankerLoss(nn.Module):
    """Loss on a cross-encoder's relevance logit ``z = h_last · (W[yes] − W[no])``.

    ``sigmoid(z)`` is the model's P(yes) (the score the Qwen3(-VL) rerankers report), so the
    pointwise loss is binary cross-entropy of ``z`` against the label (1 relevant, 0 not; soft labels
    allowed). The listwise loss reads ``z`` of one query's candidates ``(B, C)`` as logits of a softmax
    over them and takes cross-entropy with the positive's column (``labels`` ``(B,)`` long; column 0
    when omitted). ``mode="both"`` adds the two.

    Inputs: ``logits`` ``(n,)`` (pointwise) or ``(B, C)`` (listwise/both). Labels: ``(n,)`` / ``(B, C)``
    floats for pointwise, ``(B,)`` positive indices for listwise.

    Example::

        loss = RerankerLoss()                                   # pointwise
        value = loss(z, torch.tensor([1.0, 0.0, 0.0]))

    Paper: Zhang et al., "Qwen3 Embedding" (2025), section 3 (reranker trained with SFT on yes/no);
    Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach" (ICML 2007) for listwise.
    """

    citation = """@article{qwen3embedding,
  title={Qwen3 Embedding: Advancing Text Embedding and Reranking Through Foundation Models},
  author={Zhang, Yanzhao and others},
  journal={arXiv preprint arXiv:2506.05176},
  year={2025}
}"""

    def __init__(self, mode: Literal["pointwise", "listwise", "both"] = "pointwise",
                 temperature: float = 1.0) -> None:
        super().__init__()
        if mode not in ("pointwise", "listwise", "both"):
            raise ConfigError(f"reranker loss mode {mode!r}; use pointwise, listwise or both")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.mode = mode
        self.temperature = float(temperature)

    @property
    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "temperature": self.temperature}

    def forward(self, logits: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.mode == "pointwise":
            if labels is None or labels.shape != logits.shape:
                raise DimensionError(f"pointwise labels must match the logits' shape {tuple(logits.shape)}")
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if logits.ndim != 2:
            raise DimensionError(f"listwise logits must be (B, C), got {tuple(logits.shape)}")
        positives = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        if self.mode == "listwise" and labels is not None:
            positives = labels.long()
        listwise = F.cross_entropy(logits / self.temperature, positives)
        if self.mode == "listwise":
            return listwise
        targets = torch.zeros_like(logits)
        targets[torch.arange(logits.shape[0]), positives] = 1.0
        if labels is not None and labels.shape == logits.shape:
            targets = labels.to(logits.dtype)
        return listwise + F.binary_cross_entropy_with_logits(logits, targets)
