"""Training sentence-transformers models with sentence-transformers' own trainers.

Embedders go through ``SentenceTransformerTrainer`` (batching without duplicates, checkpoints, resume,
gradient checkpointing, bf16). The loss is omniret's ``InfoNCELoss`` (false-negative mask), its
``MatryoshkaLoss`` and ``DistillationLoss`` plugged in through ``EmbeddingLossAdapter``, so every
backbone trains on the same hand-tested definitions; with GradCache on, sentence-transformers'
``CachedMultipleNegativesRankingLoss`` (and its ``MatryoshkaLoss``, which knows cached losses) is used
instead, since it already does gradient caching well. Cross-encoders go through ``CrossEncoderTrainer``
with ``BinaryCrossEntropyLoss`` (pointwise) or omniret's ``RerankerLoss`` over each query's candidates
(listwise, both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from omniret.errors import ConfigError, ModelLoadError
from omniret.registry import ModelSpec
from omniret.training._meta import write_meta
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample, text_only
from omniret.training.distributed import gather_default
from omniret.training.losses import DistillationLoss, InfoNCELoss, MatryoshkaLoss, RerankerLoss
from omniret.training.validation import (
    FirstStage,
    KeepBest,
    ValidationSet,
    embedding_metrics,
    eval_interval,
    hf_callback,
    module_state,
    reranker_metrics,
)
from omniret.types import Item


class EmbeddingLossAdapter(nn.Module):
    """A sentence-transformers loss module around an omniret loss that takes embeddings.

    Columns: query, positive, negative_1..k. ``kind="contrastive"`` calls ``loss(q, p, negatives)``;
    ``kind="distill"`` calls ``loss(q, candidates, teacher_scores=labels)`` with candidates = the
    positive then the negatives.
    """

    def __init__(self, model: Any, loss: nn.Module, kind: str = "contrastive") -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.kind = kind

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        import torch

        embs = [self.model(f)["sentence_embedding"] for f in sentence_features]
        if self.kind == "distill":
            return self.loss(embs[0], torch.stack(embs[1:], dim=1), teacher_scores=labels)
        negatives = torch.stack(embs[2:], dim=1) if len(embs) > 2 else None
        return self.loss(embs[0], embs[1], negatives)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, **getattr(self.loss, "config", {})}

    @property
    def citation(self) -> str:
        return getattr(self.loss, "citation", "")



#: pairs one forward scores at most in a listwise training step; a step with more pairs is scored in chunks
#: of this many under gradient caching, so only one chunk's activations are alive at a time (16 queries x 8
#: candidates of MiniLM at 256 tokens held every attention and feed-forward activation of 128 pairs at once).
#: On CPU, training-mode attention (dropout) runs PyTorch's math kernel, which keeps each layer's attention
#: maps: 32 pairs peaked at 5.3 GB resident on the Debian benchmark, so 16
PAIR_CHUNK = 16


def read_length(source: str) -> int | None:
    """The longest input a sentence-transformers checkpoint was trained to read (its ``max_seq_length``), or
    None when it declares none. A CrossEncoder built from an embedding model otherwise takes the tokenizer's
    ``model_max_length`` (512 for MiniLM, trained at 256), doubling every pair's activations for nothing."""
    import json

    cfg = Path(source) / "sentence_bert_config.json"
    if not cfg.is_file():
        return None
    value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def _pairs(inputs: list[list[str]]) -> list[tuple[str, str]]:
    """A listwise batch's (query, candidate) pairs, candidate column by column."""
    return [(q, d) for docs in inputs[1:] for q, d in zip(inputs[0], docs, strict=True)]


def _tokens(model: Any, pairs: Sequence[tuple[str, str]], prompt: str | None, task: str | None) -> dict[str, Any]:
    from sentence_transformers.util import batch_to_device

    return batch_to_device(model.preprocess(list(pairs), prompt=prompt, task=task), model.device)


def candidate_scores(model: Any, inputs: list[list[str]], *, prompt: str | None = None,
                     task: str | None = None, chunk: int | None = None) -> Tensor:
    """A CrossEncoder's ``(queries, candidates)`` scores for a listwise batch: ``inputs[0]`` holds the
    queries, each later column one candidate per query. Forwards score ``chunk`` pairs at a time (default:
    one candidate column); under autograd every forward's graph stays alive until backward, so a bounded
    step uses ``listwise_loss`` instead."""
    import torch

    pairs = _pairs(inputs)
    step = chunk or len(inputs[0])
    flat = torch.cat([model(_tokens(model, pairs[b:b + step], prompt, task))["scores"].reshape(-1)
                      for b in range(0, len(pairs), step)])
    return flat.reshape(len(inputs) - 1, len(inputs[0])).T


def pair_chunk(cfg: TrainConfig) -> int | None:
    """The pairs per forward of a cross-encoder's listwise step: ``cfg.gradcache_chunk``, ``PAIR_CHUNK`` when
    unset, None (every pair of the step at once) for 0."""
    return PAIR_CHUNK if cfg.gradcache_chunk is None else (cfg.gradcache_chunk or None)


def listwise_loss(model: Any, inputs: list[list[str]], loss_of: Callable[[Tensor], Tensor], *,
                  chunk: int | None = PAIR_CHUNK, prompt: str | None = None, task: str | None = None) -> Tensor:
    """``loss_of(candidate_scores(...))`` with at most ``chunk`` pairs' activations alive at a time.

    GradCache (Gao et al., 2021, https://arxiv.org/abs/2101.06983) for a cross-encoder: the pairs are scored
    in chunks without a graph, the loss's gradient with respect to the scores is cached, and backward
    re-scores each chunk with its graph and pushes the cached gradient through it, one chunk at a time. The
    re-forward replays the first one's random state (sentence-transformers' ``RandContext``), so dropout
    draws the same masks and the loss and gradients equal the unchunked step's; it costs one more forward.
    A step of at most ``chunk`` pairs (or ``chunk=None``, or no autograd) runs the plain path.
    """
    import torch

    pairs = _pairs(inputs)
    if chunk is None or len(pairs) <= chunk or not torch.is_grad_enabled():
        return loss_of(candidate_scores(model, inputs, prompt=prompt, task=task, chunk=chunk))
    from sentence_transformers.base.losses.gradcache import RandContext

    device_type = torch.device(model.device).type
    autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    starts = range(0, len(pairs), chunk)
    states, parts = [], []
    with torch.no_grad():
        for b in starts:
            tokens = _tokens(model, pairs[b:b + chunk], prompt, task)
            states.append(RandContext(*tokens.values()))  # after tokenising: it snapshots the tensors' devices
            parts.append(model(tokens)["scores"].reshape(-1))
    flat = torch.cat(parts).detach().requires_grad_()
    with torch.enable_grad():
        loss = loss_of(flat.reshape(len(inputs) - 1, len(inputs[0])).T)
        (cache,) = torch.autograd.grad(loss, flat)

    def replay(grad_output: Tensor) -> None:
        from contextlib import nullcontext

        from torch.nn.parallel import DistributedDataParallel

        ddp = isinstance(model, DistributedDataParallel)
        with torch.enable_grad(), torch.autocast(device_type, dtype=autocast[1], enabled=autocast[0]):
            for i, b in enumerate(starts):
                tokens = _tokens(model, pairs[b:b + chunk], prompt, task)
                # DDP reduces the gradients once, after the last chunk's backward
                with (model.no_sync() if ddp and i < len(starts) - 1 else nullcontext()):
                    with states[i]:
                        scores = model(tokens)["scores"].reshape(-1)
                    scores.backward(cache[b:b + chunk].to(scores.dtype) * grad_output.to(scores.dtype))

    out = loss.detach().requires_grad_()
    out.register_hook(replay)
    return out


class CrossEncoderRerankerLoss(nn.Module):
    """A sentence-transformers CrossEncoder loss around omniret's ``RerankerLoss`` in listwise or both modes.

    Columns: query, positive, negative_1..k. Each candidate column is scored against the queries, giving
    ``(B, 1 + k)`` relevance logits with the positive in column 0 — the softmax over one query's candidates
    that sentence-transformers' own ``CrossEntropyLoss`` (a class-label loss over pairs) does not compute.
    """

    def __init__(self, model: Any, mode: str, chunk: int | None = PAIR_CHUNK) -> None:
        super().__init__()
        self.model = model
        self.loss = RerankerLoss(mode)  # type: ignore[arg-type]
        self.chunk = chunk

    def forward(self, inputs: list[list[str]], labels: Tensor | None = None, prompt: str | None = None,
                task: str | None = None) -> Tensor:
        return listwise_loss(self.model, inputs, self.loss, chunk=self.chunk, prompt=prompt, task=task)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "RerankerLoss", **self.loss.config, "chunk": self.chunk}


def _columns(examples: Sequence[TrainExample], k: int, scores: list[list[float]] | None = None) -> dict[str, list]:
    cols: dict[str, list] = {"query": [], "positive": [], **{f"negative_{j + 1}": [] for j in range(k)}}
    for i, ex in enumerate(examples):
        cols["query"].append(text_only(ex.query, f"example {i}: query"))
        cols["positive"].append(text_only(ex.positive, f"example {i}: positive"))
        for j in range(k):
            cols[f"negative_{j + 1}"].append(text_only(ex.negatives[j], f"example {i}: negatives[{j}]"))
    if scores is not None:
        cols["label"] = [s[:k + 1] for s in scores]
    return cols


def loss_dims(dims: Sequence[int] | None, full: int) -> list[int] | None:
    """The Matryoshka dims a loss sums over: the declared ones plus the full one, largest first."""
    if not dims:
        return None
    if max(dims) > full:
        raise ConfigError(f"matryoshka dims {sorted(dims)} exceed the model's dimension {full}")
    return sorted({int(d) for d in dims} | {full}, reverse=True)


def usable_negatives(examples: Sequence[TrainExample], wanted: int | None) -> int:
    """How many hard negatives every example can supply (sentence-transformers needs equal columns);
    ``wanted=None`` takes what every line has, up to one."""
    if wanted is None:
        return min(1, min(len(ex.negatives) for ex in examples))
    if wanted == 0:
        return 0
    have = min(len(ex.negatives) for ex in examples)
    if have == 0:
        raise ConfigError(f"hard_negatives={wanted} but some examples have no negatives; mine them first "
                          "(omniret mine) or pass --hard-negatives 0")
    return min(wanted, have)


def training_arguments(cfg: TrainConfig, output_dir: Path, cls: Any, gather: bool = False) -> Any:
    """Hugging Face training arguments (``cls``) for ``cfg``; announces the data-parallel plan on rank 0."""
    import torch
    from sentence_transformers.base.sampler import BatchSamplers

    from omniret.training import distributed as dist

    bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available()
    ctx = dist.current_context()
    per_device, global_batch = dist.global_batch_plan(max(cfg.batch_size, 1), ctx.world_size, cfg.global_batch_size)
    if ctx.is_main:
        dist.log_line(dist.announce(ctx, per_device, global_batch, gather))
    return cls(
        output_dir=str(output_dir), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=per_device, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else 0.0,
        seed=cfg.seed, bf16=bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.log_steps, report_to="none", disable_tqdm=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES, dataloader_drop_last=False,
        use_cpu=(cfg.device == "cpu") or not torch.cuda.is_available(),
        deepspeed=str(cfg.deepspeed) if cfg.deepspeed else None,
        **({"fsdp": "full_shard auto_wrap"} if cfg.fsdp else {}),
    )


def progress_callback(total_hint: int) -> Any:
    """A trainer callback that draws omniret's rich progress bar and keeps the loss history."""
    from transformers import TrainerCallback

    from omniret.training.progress import TrainProgress

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: TrainProgress | None = None
            self.history: list[dict[str, Any]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar = TrainProgress(state.max_steps or total_hint, "training", start=state.global_step,
                                     enabled=state.is_world_process_zero)
            self.bar.__enter__()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(state.global_step, loss=float(logs["loss"]),
                                examples=args.per_device_train_batch_size * args.world_size * args.logging_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.history = self.bar.history
                self.bar.__exit__(None, None, None)

    return RichProgress()


def resume_checkpoint(cfg: TrainConfig, ckpt_dir: Path) -> bool | str:
    """The newest ``checkpoint-*`` under ``ckpt_dir`` when ``cfg.resume``, else False; ConfigError if none."""
    if not cfg.resume:
        return False
    found = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) \
        if ckpt_dir.is_dir() else []
    if not found:
        raise ConfigError(f"--resume: no checkpoint-* folder under {ckpt_dir}; train with --save-steps first")
    return str(found[-1])


def train_st_embedder(cfg: TrainConfig, examples: Sequence[TrainExample],
                      teacher_scores: list[list[float]] | None = None, *, val: ValidationSet | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Contrastive (``cfg.stage == "embed"``) or distillation training of a sentence-transformers model;
    with ``val``, evaluated before, during and after training and the best weights saved."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses as st_losses

    from omniret.registry import resolve

    source, _ = resolve(cfg.model)
    model = SentenceTransformer(source, device=cfg.device)
    if cfg.max_length:
        model.max_seq_length = cfg.max_length
    declared = (model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                else model.get_sentence_embedding_dimension())
    if declared is None:
        raise ConfigError(f"{cfg.model}: the sentence-transformers model declares no embedding dimension")
    full = int(declared)
    dims = loss_dims(cfg.matryoshka_dims, full)
    distill = cfg.stage == "distill"
    gather = not distill and gather_default(cfg.gather_negatives)
    k = usable_negatives(examples, cfg.hard_negatives if not distill else max(cfg.hard_negatives or 0, 1))
    dataset = Dataset.from_dict(_columns(examples, k, teacher_scores if distill else None))
    if distill:
        base: nn.Module = DistillationLoss(cfg.teacher_temperature or 1.0, cfg.student_temperature,
                                           cfg.distill_label_weight)
        loss: nn.Module = EmbeddingLossAdapter(model, MatryoshkaLoss(base, dims, cfg.matryoshka_weights)
                                               if dims else base, kind="distill")
    elif cfg.gradcache_chunk:
        loss = st_losses.CachedMultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature,
                                                            mini_batch_size=cfg.gradcache_chunk,
                                                            gather_across_devices=gather)
        if dims:
            loss = st_losses.MatryoshkaLoss(model, loss, dims, matryoshka_weights=cfg.matryoshka_weights)
    else:
        base = InfoNCELoss(cfg.temperature, cfg.fn_margin, gather_across_devices=gather)
        loss = EmbeddingLossAdapter(model, MatryoshkaLoss(base, dims, cfg.matryoshka_weights) if dims else base)
    ckpt_dir = cfg.out / "checkpoints"
    total = cfg.max_steps or math.ceil(len(examples) / max(cfg.batch_size, 1) * cfg.epochs)
    callback = progress_callback(total)
    keep = None
    if val is not None:
        use_prompts = any(model.prompts.values())

        def encode(items: Sequence[Item], instruction: str | None) -> np.ndarray:
            return np.asarray(model.encode([text_only(it, "validation item") for it in items], batch_size=64,
                                           normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
                                           prompt=instruction if instruction and use_prompts else None))

        keep = KeepBest(lambda: embedding_metrics(val, encode, instruction=cfg.instruction), model.state_dict,
                        model.load_state_dict, metric=cfg.eval_metric, min_delta=cfg.eval_min_delta, patience=cfg.patience, log=log)
    callbacks = [callback] + ([hf_callback(keep, eval_interval(cfg.eval_steps, total))] if keep else [])
    args = training_arguments(cfg, ckpt_dir, SentenceTransformerTrainingArguments, gather)
    trainer = SentenceTransformerTrainer(model=model, args=args,
                                         train_dataset=dataset, loss=loss, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, ckpt_dir))
    if trainer.is_world_process_zero():
        model.save(str(cfg.out))
        losses_cfg = loss.get_config_dict() if hasattr(loss, "get_config_dict") else {}
        write_meta(cfg.out, model=cfg.model, stage=cfg.stage, dims=dims,
                   losses={type(loss).__name__: _jsonable(losses_cfg)},
                   extra={"steps": int(trainer.state.global_step), "examples": len(examples), "hard_negatives": k,
                          **_run_record(trainer.args, gather), **_validation_meta(keep)})
        _write_history(cfg.out, callback.history)
    trainer.accelerator.wait_for_everyone()
    return {"out": str(cfg.out), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "history": callback.history, "validation": keep.report() if keep else {}}


def train_cross_encoder(cfg: TrainConfig, examples: Sequence[TrainExample], *, val: ValidationSet | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reranker stage for a sentence-transformers CrossEncoder (or any HF encoder, given one new head: the
    plain sentence-transformers recipe, ``--init fresh``); with ``val``, validated against the first stage
    (``cfg.retriever``, else the model itself when it is an embedder) and the best weights saved."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder import losses as ce_losses
    from transformers import set_seed

    from omniret.registry import resolve

    source, _ = resolve(cfg.model)
    set_seed(cfg.seed)  # the fresh relevance head's initialisation, so a run repeats
    model = CrossEncoder(source, num_labels=1, device=cfg.device, max_length=cfg.max_length or read_length(source))
    k = usable_negatives(examples, max(cfg.hard_negatives or 0, 1))
    if cfg.rerank_loss == "pointwise":
        cols: dict[str, list] = {"query": [], "document": [], "label": []}
        for i, ex in enumerate(examples):
            q = text_only(ex.query, f"example {i}: query")
            for j, (doc, label) in enumerate([(ex.positive, 1.0)] + [(n, 0.0) for n in ex.negatives[:k]]):
                cols["query"].append(q)
                cols["document"].append(text_only(doc, f"example {i}: candidate {j}"))
                cols["label"].append(label)
        loss: Any = ce_losses.BinaryCrossEntropyLoss(model)
    else:
        cols = _columns(examples, k)
        loss = CrossEncoderRerankerLoss(model, cfg.rerank_loss, pair_chunk(cfg))
    ckpt_dir = cfg.out / "checkpoints"
    n_rows = len(cols["query"])
    total = cfg.max_steps or math.ceil(n_rows / max(cfg.batch_size, 1) * cfg.epochs)
    callback = progress_callback(total)
    keep, first = None, None
    if val is not None:
        import torch

        source_spec = resolve(cfg.model)[1]
        first = first_stage_for(cfg, val, source_is_embedder=not is_cross_encoder(source, source_spec,
                                                                                  "sentence_transformers"))

        def score(query: Item, docs: Sequence[Item], instruction: str | None) -> np.ndarray:
            q = text_only(query, "validation query")
            return np.asarray(model.predict([(q, text_only(d, "validation document")) for d in docs],
                                            activation_fn=torch.nn.Identity(), convert_to_numpy=True,
                                            show_progress_bar=False), dtype=np.float64).reshape(-1)

        keep = KeepBest(lambda: reranker_metrics(val, first, score), *module_state(model.model),
                        metric=cfg.eval_metric, min_delta=cfg.eval_min_delta, patience=cfg.patience, log=log)
    callbacks = [callback] + ([hf_callback(keep, eval_interval(cfg.eval_steps, total))] if keep else [])
    args = training_arguments(cfg, ckpt_dir, CrossEncoderTrainingArguments)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(cols), loss=loss,
                                  callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, ckpt_dir))
    if trainer.is_world_process_zero():
        model.save_pretrained(str(cfg.out))
        write_meta(cfg.out, model=cfg.model, stage="rerank", dims=None,
                   losses={type(loss).__name__: {"mode": cfg.rerank_loss}},
                   extra={"steps": int(trainer.state.global_step), "examples": len(examples), "hard_negatives": k,
                          **_run_record(trainer.args, False), **_validation_meta(keep)},
                   inherit_base=False)
        _write_history(cfg.out, callback.history)
    trainer.accelerator.wait_for_everyone()
    validation = keep.report() if keep else {}
    if first is not None and first.metrics:
        validation["first_stage"] = first.metrics
    return {"out": str(cfg.out), "steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "history": callback.history, "validation": validation}


def is_cross_encoder(source: str, spec: ModelSpec | None, arch: str) -> bool:
    """Whether a checkpoint is a pretrained reranker (keeps its own head) rather than an embedding model."""
    if spec is not None:
        return spec.kind == "reranker"
    if arch != "sentence_transformers":
        return True
    from omniret.rerank.cross_encoder import check_cross_encoder_dir

    try:
        check_cross_encoder_dir(source)
    except ModelLoadError:
        return False
    return True


def first_stage_for(cfg: TrainConfig, val: ValidationSet, *, source_is_embedder: bool) -> FirstStage:
    """The candidates a reranker is validated on: the top 20 of ``cfg.retriever`` (else of the model itself
    when it is an embedding model), else each held-out line's own candidates with no first-stage figure."""
    retriever = cfg.retriever or (cfg.model if source_is_embedder else None)
    if retriever is None:
        return FirstStage.of_lines(val, cfg.seed)
    from omniret.embed import load_embedder

    emb = load_embedder(retriever, device=cfg.device)
    return FirstStage.of(val, lambda items, instr: emb.embed(list(items), instruction=instr),
                         instruction=cfg.instruction, depth=cfg.eval_depth)


def _validation_meta(keep: KeepBest | None) -> dict[str, Any]:
    if keep is None or not keep.history:
        return {}
    return {"validation": {k: v for k, v in keep.report().items() if k != "history"}}


def _run_record(args: Any, gather: bool) -> dict[str, Any]:
    """The ``trained`` record's parallelism: Hugging Face's per-device batch times its world size."""
    return {"world_size": int(args.world_size), "per_device_batch": int(args.per_device_train_batch_size),
            "global_batch": int(args.per_device_train_batch_size * args.world_size), "gather_negatives": gather}


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    import json

    (out / "train_history.json").write_text(json.dumps({"step": [h["step"] for h in history],
                                                        "loss": [h["loss"] for h in history]}), encoding="utf-8")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool, list, dict, type(None))) else str(v) for k, v in d.items()}
