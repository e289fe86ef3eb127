"""Distillation of a reranker's judgements into an embedder: KL between softmaxes over candidates."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from omniret.errors import ConfigError, DimensionError


class DistillationLoss(nn.Module):
    """``KL(softmax(t / T_t) || softmax(s / T_s))`` per query, averaged over the batch.

    ``t`` are the teacher's (reranker's) scores for one query's candidates — the positive and its
    hard negatives — and ``s`` the student's cosine similarities between the query embedding and each
    candidate embedding. Teacher scores are best given as logits (the yes−no logit of a Qwen3
    reranker, or a CrossEncoder's raw score); probabilities work with a smaller ``T_t``.

    ``label_weight`` adds ``w · CE`` on the labelled positive (candidate 0) over the same softmax: the
    contrastive objective the student was trained with keeps holding while the teacher reorders the rest.

    Inputs: ``query`` ``(B, d)``, ``candidates`` ``(B, C, d)`` embeddings. Labels: ``teacher_scores``
    ``(B, C)``.

    Example::

        loss = DistillationLoss(teacher_temperature=1.0, student_temperature=0.05)
        value = loss(q_emb, cand_emb, teacher_scores)

    Paper: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015); Lin et al., "Distilling
    Dense Representations for Ranking using Tightly-Coupled Teachers" (2020); the Qwen3-VL-Embedding
    report distils its reranker into the embedder this way.
    """

    citation = """@article{hinton2015distilling,
  title={Distilling the Knowledge in a Neural Network},
  author={Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal={arXiv preprint arXiv:1503.02531},
  year={2015}
}"""

    def __init__(self, teacher_temperature: float = 1.0, student_temperature: float = 0.05,
                 label_weight: float = 0.0) -> None:
        super().__init__()
        if teacher_temperature <= 0 or student_temperature <= 0:
            raise ConfigError("distillation temperatures must be > 0, got "
                              f"teacher={teacher_temperature}, student={student_temperature}")
        if label_weight < 0:
            raise ConfigError(f"distillation label weight must be >= 0, got {label_weight}")
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)
        self.label_weight = float(label_weight)

    @property
    def config(self) -> dict[str, Any]:
        return {"teacher_temperature": self.teacher_temperature, "student_temperature": self.student_temperature,
                "label_weight": self.label_weight}

    def forward(self, query: Tensor, candidates: Tensor, teacher_scores: Tensor) -> Tensor:
        if query.ndim != 2 or candidates.ndim != 3 or candidates.shape[0] != query.shape[0] \
                or candidates.shape[2] != query.shape[1]:
            raise DimensionError(f"query must be (B, d) and candidates (B, C, d); got {tuple(query.shape)} and "
                                 f"{tuple(candidates.shape)}")
        if teacher_scores.shape != candidates.shape[:2]:
            raise DimensionError(f"teacher_scores must be (B, C) = {tuple(candidates.shape[:2])}, "
                                 f"got {tuple(teacher_scores.shape)}")
        s = (F.normalize(candidates, dim=-1) @ F.normalize(query, dim=-1).unsqueeze(-1)).squeeze(-1)
        log_student = F.log_softmax(s / self.student_temperature, dim=-1)
        log_teacher = F.log_softmax(teacher_scores.to(s.dtype) / self.teacher_temperature, dim=-1)
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
        if not self.label_weight:
            return kl
        # the labelled positive (candidate 0) keeps pulling as in contrastive training
        return kl - self.label_weight * log_student[:, 0].mean()
