"""Training losses, one class per file; each takes embeddings (or logits), never the model."""

from omniret.training.losses.distillation import DistillationLoss
from omniret.training.losses.infonce import InfoNCELoss
from omniret.training.losses.matryoshka import MatryoshkaLoss
from omniret.training.losses.reranker import RerankerLoss

__all__ = ["DistillationLoss", "InfoNCELoss", "MatryoshkaLoss", "RerankerLoss"]
