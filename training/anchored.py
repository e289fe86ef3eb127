"""Training the retriever-anchored reranker (``omniret.rerank.anchored``) from a sentence-transformers embedder.

Recipe (chosen by measurement on WordNet, see ``benchmarks/RESULTS.md``):

1. The embedding model is the frozen first stage. Each training query's candidate list is the positive plus
   the retriever's own top ``rerank_candidates`` from the pool of every distinct document in the data
   (positives and negatives of all lines) — the lists reranking will see — skipping candidates the
   retriever scores above the positive by more than ``rerank_fn_margin`` (probable unlabelled positives;
   the line's own labelled negatives are never skipped).
2. ``scale`` is fitted so ``softmax(scale · cos)`` best explains the positives (the retriever's own
   temperature); ``bias`` centres the scores.
3. A CrossEncoder is built from the same body with its one-logit head set to zero, so the reranker starts
   exactly at the retriever's order; it trains listwise (softmax over each list of ``scale · cos + C``,
   cross-entropy on the positive) through sentence-transformers' ``CrossEncoderTrainer``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from omniret.errors import ConfigError
from omniret.rerank.anchored import anchored_logit
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample, item_key, text_only
from omniret.types import Item


@dataclass
class CandidateLists:
    """Per training query: the text, the candidates (positive first) and the retriever's cosines."""

    queries: list[str]
    candidates: list[list[str]]
    sims: np.ndarray
    #: candidates skipped as probable false negatives
    filtered: int


def retriever_lists(encode: Callable[[list[str]], np.ndarray], examples: Sequence[TrainExample], k: int,
                    margin: float | None, seed: int = 42) -> CandidateLists:
    """Each example's positive and the retriever's top ``k`` other documents of the data's pool."""
    pool: list[str] = []
    where: dict[str, int] = {}
    for i, ex in enumerate(examples):
        for j, c in enumerate(ex.candidates):
            key = item_key(c)
            if key not in where:
                where[key] = len(pool)
                pool.append(text_only(c, f"example {i}: candidate {j}"))
    if len(pool) < 2:
        raise ConfigError("the anchored reranker needs at least two distinct documents in the training data")
    k = min(k, len(pool) - 1)
    dv = encode(pool)
    qv = encode([text_only(ex.query, f"example {i}: query") for i, ex in enumerate(examples)])
    sim = qv @ dv.T
    rng = random.Random(seed)
    lists, sims, filtered = [], [], 0
    for i, ex in enumerate(examples):
        p = where[item_key(ex.positive)]
        labelled = {where[item_key(n)] for n in ex.negatives}
        s_pos = float(sim[i, p])
        chosen: list[int] = []
        for j in np.argsort(-sim[i], kind="stable"):
            if j == p:
                continue
            # the line's own negatives are labelled: only unlabelled candidates can be hidden positives
            if margin is not None and j not in labelled and sim[i, j] > s_pos + margin:
                filtered += 1
                continue
            chosen.append(int(j))
            if len(chosen) == k:
                break
        while len(chosen) < k:  # the filter left too few: fill with random other documents
            j = rng.randrange(len(pool))
            if j != p and j not in chosen:
                chosen.append(j)
        lists.append([pool[p]] + [pool[j] for j in chosen])
        sims.append([s_pos] + [float(sim[i, j]) for j in chosen])
    return CandidateLists([text_only(ex.query, "query") for ex in examples], lists,
                          np.asarray(sims, dtype=np.float64), filtered)


def fit_scale(sims: np.ndarray) -> float:
    """The inverse temperature that minimises the listwise cross-entropy of ``sims`` (positive in column 0)."""
    best, best_loss = 1.0, math.inf
    for s in np.geomspace(1.0, 200.0, 80):
        z = s * sims
        z = z - z.max(axis=1, keepdims=True)
        loss = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[:, 0]))
        if loss < best_loss:
            best, best_loss = float(s), loss
    return best


class AnchoredListwiseLoss(nn.Module):
    """Listwise cross-entropy over ``scale · cos + C(q, d)`` per query (positive in column 0).

    Columns: query, candidate_0 (positive) .. candidate_k; label: the retriever's cosines ``(1 + k,)``. A step
    scores at most ``chunk`` pairs per forward under gradient caching (``st_trainer.listwise_loss``).
    """

    def __init__(self, model: Any, scale: float, chunk: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)
        self.chunk = chunk

    def forward(self, inputs: list[list[str]], labels: list[Tensor] | Tensor, prompt: str | None = None,
                task: str | None = None) -> Tensor:
        import torch
        import torch.nn.functional as F

        from omniret.training.st_trainer import listwise_loss

        def loss_of(correction: Tensor) -> Tensor:
            sims = (torch.stack(list(labels)) if isinstance(labels, list) else labels).to(correction)
            logits = anchored_logit(sims, correction, scale=self.scale)
            return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))

        return listwise_loss(self.model, inputs, loss_of, chunk=self.chunk, prompt=prompt, task=task)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "AnchoredListwiseLoss", "scale": self.scale, "chunk": self.chunk}


def train_anchored_reranker(cfg: TrainConfig, examples: Sequence[TrainExample], val: Any = None,
                            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train an anchored reranker from ``cfg.model`` (a sentence-transformers embedder) into ``cfg.out``."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from transformers import set_seed

    from omniret.registry import resolve
    from omniret.rerank.anchored import CORRECTION_DIR, RETRIEVER_DIR, head_module, write_anchor
    from omniret.training._meta import write_meta
    from omniret.training.st_trainer import (
        pair_chunk,
        progress_callback,
        resume_checkpoint,
        training_arguments,
    )
    from omniret.training.validation import (
        FirstStage,
        KeepBest,
        eval_interval,
        hf_callback,
        metrics_of,
        module_state,
    )

    say = log or (lambda _msg: None)
    source, _ = resolve(cfg.model)
    set_seed(cfg.seed)
    retriever = SentenceTransformer(source, device=cfg.device)
    if cfg.max_length:
        retriever.max_seq_length = cfg.max_length
    retriever.eval()
    for p in retriever.parameters():
        p.requires_grad_(False)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(retriever.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                           show_progress_bar=False), dtype=np.float32)

    lists = retriever_lists(encode, examples, cfg.rerank_candidates, cfg.rerank_fn_margin, cfg.seed)
    k = lists.sims.shape[1] - 1
    scale = fit_scale(lists.sims)
    bias = -scale * float(np.median(lists.sims))
    say(f"anchored reranker: {len(examples)} queries x (positive + the retriever's top {k}), "
        f"{lists.filtered} candidates above the positive by > {cfg.rerank_fn_margin} skipped as probable "
        f"false negatives; retriever scale {scale:.2f}")

    # pairs no longer than the body reads: the tokenizer's own limit (512 for MiniLM) doubles the activations
    model = CrossEncoder(source, num_labels=1, device=cfg.device,
                         max_length=cfg.max_length or retriever.max_seq_length)
    head = head_module(model.model)
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()

    cols: dict[str, list[Any]] = {"query": lists.queries}
    for j in range(k + 1):
        cols[f"candidate_{j}"] = [c[j] for c in lists.candidates]
    cols["label"] = [row.tolist() for row in lists.sims]
    loss = AnchoredListwiseLoss(model, scale, pair_chunk(cfg))
    ckpt_dir = cfg.out / "checkpoints"
    total = cfg.max_steps or max(1, math.ceil(len(examples) / max(cfg.batch_size, 1) * cfg.epochs))
    callbacks: list[Any] = [progress_callback(total)]
    keep: KeepBest | None = None
    first: FirstStage | None = None
    if val is not None:
        def val_encode(items: Sequence[Item], instr: str | None) -> np.ndarray:
            return encode([text_only(it, "validation item") for it in items])

        first = FirstStage.of(val, val_encode, depth=cfg.eval_depth)

        def evaluate() -> dict[str, float]:
            # the retriever's part of every candidate's score is the first stage's own similarity
            ranking = []
            for i, cand in enumerate(first.candidates):
                q = text_only(val.queries[i], "validation query")
                c = model.predict([(q, text_only(val.pool[j], "validation document")) for j in cand],
                                  activation_fn=torch.nn.Identity(), convert_to_numpy=True, show_progress_bar=False)
                ranking.append((cand, anchored_logit(first.scores[i], np.asarray(c, dtype=np.float64).reshape(-1),
                                                     scale=scale)))
            return metrics_of(val, ranking)

        keep = KeepBest(evaluate, *module_state(model.model), metric=cfg.eval_metric, min_delta=cfg.eval_min_delta, patience=cfg.patience,
                        log=say)
        callbacks.append(hf_callback(keep, eval_interval(cfg.eval_steps, total)))
    args = training_arguments(cfg, ckpt_dir, CrossEncoderTrainingArguments)
    # the zero head and the pooler under it learn fast; the body at cfg.lr
    args.learning_rate_mapping = {r"classifier|\.score\.|pooler": cfg.rerank_head_lr}
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(cols), loss=loss,
                                  callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, ckpt_dir))
    validation = keep.report() if keep is not None else {}
    if first is not None:
        validation["first_stage"] = first.metrics
    if trainer.is_world_process_zero():
        retriever.save(str(cfg.out / RETRIEVER_DIR))
        model.save_pretrained(str(cfg.out / CORRECTION_DIR))
        write_anchor(cfg.out, scale=scale, bias=bias, retriever=str(cfg.model), candidates=k,
                     fn_margin=cfg.rerank_fn_margin)
        write_meta(cfg.out, model=cfg.model, stage="rerank", dims=None,
                   losses={"AnchoredListwiseLoss": {"scale": scale, "candidates": k}},
                   extra={"steps": int(trainer.state.global_step), "examples": len(examples), "anchored": True,
                          "filtered_false_negatives": lists.filtered, "validation": _short(validation)},
                   inherit_base=False)
    trainer.accelerator.wait_for_everyone()
    return {"out": str(cfg.out), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "history": callbacks[0].history, "validation": validation, "recipe": "anchored"}


def _short(validation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in validation.items() if k != "history"}
