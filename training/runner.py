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
from omniret.training.distributed import DistContext


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


def _sharded_teacher_logits(teacher: Any, examples: Sequence[TrainExample], k: int,
                            ctx: DistContext) -> list[list[float]]:
    """``teacher_logits`` with the examples split over the ranks (rank r scores every world-th one)."""
    import torch.distributed as tdist

    from omniret.training import distributed as dist

    mine = teacher_logits(teacher, examples[ctx.rank::ctx.world_size], k)
    if not ctx.enabled:
        return mine
    parts: list[Any] = [None] * ctx.world_size
    with dist.collective_errors(ctx, "scoring the examples with the teacher"):
        tdist.all_gather_object(parts, mine)
    out: list[list[float]] = [[] for _ in examples]
    for r, part in enumerate(parts):
        for j, row in enumerate(part):
            out[r + j * ctx.world_size] = row
    return out


def train(cfg: TrainConfig, examples: Sequence[TrainExample] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` (or the given examples) and save to ``cfg.out``; returns a summary.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) every rank runs this: it joins the
    process group, the ranks check together that each sees the same data and a usable output folder
    (so a bad launch fails before training, naming the rank), then train data-parallel.
    """
    import torch.distributed as tdist

    from omniret.training import distributed as dist

    joined_here = not tdist.is_initialized()
    ctx = dist.init_distributed(cfg.dist_timeout, cfg.device)
    try:
        return _train(cfg.model_copy(update={"device": dist.local_device(ctx, cfg.device)}), examples, ctx)
    finally:
        if joined_here:
            dist.shutdown()


def _check_out(cfg: TrainConfig) -> None:
    if cfg.out.exists() and any(p.name != "checkpoints" for p in cfg.out.iterdir()) and not cfg.resume:
        raise ConfigError(f"{cfg.out}: output directory is not empty; pick a new --out or pass --resume")


def _fingerprint(examples: Sequence[TrainExample]) -> str:
    import hashlib
    import json

    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps(ex.to_dict(), sort_keys=True, default=str).encode())
    return f"{len(examples)} examples, sha256 {digest.hexdigest()[:12]}"


def _train(cfg: TrainConfig, examples: Sequence[TrainExample] | None, ctx: DistContext) -> dict[str, Any]:
    from omniret.registry import detect_arch, resolve
    from omniret.training import distributed as dist

    if examples is None:
        examples = dist.agree(ctx, "loading the training data", lambda: load_examples(cfg.data),
                              key=lambda exs: _fingerprint(exs) if ctx.enabled else None)
    dist.agree(ctx, "checking the output directory", lambda: _check_out(cfg))
    if ctx.enabled:
        dist.agree(ctx, "planning the batches",
                   lambda: dist.global_batch_plan(max(cfg.batch_size, 1), ctx.world_size, cfg.global_batch_size))
        if len(examples) < ctx.world_size:
            raise ConfigError(f"{len(examples)} training examples cannot be split over {ctx.world_size} ranks")
    if ctx.is_main:
        cfg.out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    source, spec = resolve(cfg.model)
    arch = detect_arch(source, spec)
    if arch in ("qwen3_vl", "qwen3_text") and cfg.deepspeed is not None:
        raise ConfigError(f"--deepspeed {cfg.deepspeed}: DeepSpeed runs through the Hugging Face trainer "
                          "(sentence-transformers models); shard a Qwen3 tower with --fsdp")
    if arch == "qwen3_vl" and cfg.fsdp and any(item.modalities - {"text"} for ex in examples
                                               for item in (ex.query, *ex.candidates)):
        # a rank whose slice has no image skips the vision tower's sharded all-gathers while the others
        # wait in them; until text-only slices run a stand-in image, refuse rather than hang
        raise ConfigError("--fsdp with a Qwen3-VL tower trains on text-only data for now; this data has image/"
                          "video items (train data-parallel without --fsdp, with LoRA and "
                          "--gradient-checkpointing to save memory)")
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

            scores = _sharded_teacher_logits(load_reranker(cfg.teacher, device=cfg.device), examples, k, ctx)
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
