"""``train(config)``: run one stage (embed, rerank, distill) on the backbone the checkpoint is.

sentence-transformers embedders and cross-encoders train with sentence-transformers' trainers
(``st_trainer``); Qwen3-VL embedders and rerankers, text Qwen3-Embedding and text Qwen3-Reranker
checkpoints with omniret's own loop (``vl_trainer``), which owns the differentiable forward and GradCache.
Distillation asks the teacher reranker (``load_reranker``) for scores unless the data already carries them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omniret.errors import ConfigError
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample, load_examples


def teacher_logits(teacher: Any, examples: Sequence[TrainExample], k: int,
                   progress: Any = None) -> list[list[float]]:
    """The teacher's logit ``log(p / (1 - p))`` for each example's positive and first ``k`` negatives.

    omniret rerankers report P(yes) in [0, 1]; the logit recovers the yes−no margin the KL softmax needs.
    """
    out = []
    for ex in examples:
        p = teacher.score(ex.query, ex.candidates[:k + 1], instruction=ex.instruction)
        out.append([math.log(max(float(x), 1e-6) / max(1 - float(x), 1e-6)) for x in p])
        if progress is not None:
            progress(1)
    return out


def train(cfg: TrainConfig, examples: Sequence[TrainExample] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` (or the given examples) and save to ``cfg.out``; returns a summary."""
    from omniret.registry import detect_arch, resolve

    if examples is None:
        examples = load_examples(cfg.data)
    if cfg.out.exists() and any(p.name != "checkpoints" for p in cfg.out.iterdir()) and not cfg.resume:
        raise ConfigError(f"{cfg.out}: output directory is not empty; pick a new --out or pass --resume")
    cfg.out.mkdir(parents=True, exist_ok=True)
    source, spec = resolve(cfg.model)
    arch = detect_arch(source, spec)
    if cfg.stage == "rerank":
        if arch == "qwen3_vl":
            from omniret.training.vl_trainer import train_vl_reranker

            return train_vl_reranker(cfg, examples)
        if arch == "qwen3_text":
            from omniret.training.vl_trainer import train_text_reranker

            return train_text_reranker(cfg, examples)
        if arch in ("cross_encoder", "sentence_transformers"):
            from omniret.training.st_trainer import train_cross_encoder

            return train_cross_encoder(cfg, examples)
        raise ConfigError(f"{cfg.model}: cannot train a {arch} checkpoint as a reranker")
    scores = None
    if cfg.stage == "distill":
        k = min(len(ex.negatives) for ex in examples)
        if k == 0:
            raise ConfigError("distillation needs negatives for every example; mine them first (omniret mine)")
        k = min(k, max(cfg.hard_negatives, 1))
        if all(ex.scores is not None for ex in examples):
            scores = [list(ex.scores[:k + 1]) for ex in examples]  # type: ignore[index]
        else:
            if cfg.teacher is None:
                raise ConfigError("distillation needs --teacher (a reranker) or 'scores' in every data line")
            from omniret.rerank import load_reranker

            scores = teacher_logits(load_reranker(cfg.teacher, device=cfg.device), examples, k)
    if arch == "sentence_transformers":
        from omniret.training.st_trainer import train_st_embedder

        return train_st_embedder(cfg, examples, scores)
    if arch == "qwen3_vl":
        from omniret.training.vl_trainer import train_vl_embedder

        return train_vl_embedder(cfg, examples, scores)
    if arch == "qwen3_text":
        from omniret.training.vl_trainer import train_text_embedder

        return train_text_embedder(cfg, examples, scores)
    raise ConfigError(f"{cfg.model}: training a {arch} embedder is not supported; use a Qwen3-VL, Qwen3 or "
                      "sentence-transformers checkpoint")
