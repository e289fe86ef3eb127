"""Matryoshka weighting: a base loss summed over truncated, re-normalised embedding prefixes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniret.errors import ConfigError


class MatryoshkaLoss(nn.Module):
    """``sum_d w_d * base(e_1[..., :d], e_2[..., :d], ...)`` over the declared dims ``d``.

    Every tensor argument whose last axis is the full dim is truncated to its first ``d`` components and
    L2-normalised again, so the model learns vectors whose prefixes are embeddings in their own right
    (the Matryoshka dims a checkpoint declares in ``omniret.json``). Other arguments (teacher scores,
    labels) pass through unchanged. Unlike sentence-transformers' ``MatryoshkaLoss`` this takes
    embeddings, not the model, so it never patches ``model.forward`` (which broke under DDP, ST #3170).

    Inputs: the base loss's inputs. Labels: the base loss's.

    Example::

        loss = MatryoshkaLoss(InfoNCELoss(), dims=[384, 256, 128, 64, 32])  # weights default to 1 each
        value = loss(q_emb, pos_emb, neg_emb)

    Paper: Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022).
    """

    citation = """@inproceedings{kusupati2022matryoshka,
  title={Matryoshka Representation Learning},
  author={Kusupati, Aditya and Bhatt, Gantavya and Rege, Aniket and Wallingford, Matthew and Sinha, Aditya and
          Ramanujan, Vivek and Howard-Snyder, William and Chen, Kaifeng and Kakade, Sham and Jain, Prateek and
          Farhadi, Ali},
  booktitle={Advances in Neural Information Processing Systems},
  year={2022}
}"""

    def __init__(self, base: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d <= 0 for d in dims):
            raise ConfigError(f"matryoshka dims must be positive integers, got {dims}")
        if weights is None:
            weights = [1.0] * len(dims)
        if len(weights) != len(dims):
            raise ConfigError(f"{len(weights)} matryoshka weights for {len(dims)} dims; give one weight per dim")
        self.base = base
        self.dims = dims
        self.weights = [float(w) for w in weights]

    @property
    def config(self) -> dict[str, Any]:
        return {"base": type(self.base).__name__, "dims": self.dims, "weights": self.weights}

    def forward(self, *embeddings: Tensor | None, **kwargs: Any) -> Tensor:
        full = max(e.shape[-1] for e in embeddings if e is not None)
        too_big = [d for d in self.dims if d > full]
        if too_big:
            raise ConfigError(f"matryoshka dims {too_big} exceed the embedding size {full}")
        terms = []
        for d, w in zip(self.dims, self.weights, strict=True):
            cut = [None if e is None else F.normalize(e[..., :d], dim=-1) if e.shape[-1] == full else e
                   for e in embeddings]
            terms.append(w * self.base(*cut, **kwargs))
        return torch.stack(terms).sum()
