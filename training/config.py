"""``TrainConfig``: every knob of the three training stages, from YAML and/or flags (flags win)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from omniret.errors import ConfigError

Stage = Literal["embed", "rerank", "distill"]


class TrainConfig(BaseModel):
    """One training run. ``model`` is a registry name or a checkpoint directory; ``out`` gets the result,
    loadable with ``load_embedder(out)`` (embed, distill) or ``load_reranker(out)`` (rerank)."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage = "embed"
    model: str
    data: Path
    out: Path
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    #: clip the gradient's global norm to this before each step (None: no clipping), as Hugging Face's trainer
    max_grad_norm: float | None = 1.0
    seed: int = 42
    #: hard negatives per example taken from the data (0: in-batch negatives only; None: follow the data,
    #: 1 when every line has negatives, else 0 for embedders; the reranker stage mines when lines have none)
    hard_negatives: int | None = None
    temperature: float = 0.05
    #: InfoNCE false-negative margin (Qwen3-Embedding: 0.1); None turns the mask off
    fn_margin: float | None = 0.1
    matryoshka_dims: list[int] | None = None
    #: one weight per Matryoshka dim, largest first, the full dim included (default 1 each)
    matryoshka_weights: list[float] | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    gradient_checkpointing: bool = False
    #: GradCache: embed in chunks of this many items so big contrastive batches fit (None: off); a
    #: sentence-transformers cross-encoder's listwise step scores this many pairs per forward (None: 16, 0: all)
    gradcache_chunk: int | None = None
    #: bf16 autocast/weights: None = on when CUDA is available
    bf16: bool | None = None
    max_length: int | None = None
    instruction: str | None = None
    save_steps: int | None = None
    #: keep only the newest this many resumable checkpoints (None: keep every one)
    save_total_limit: int | None = 2
    log_steps: int = 10
    resume: bool = False
    #: reranker stage
    rerank_loss: Literal["pointwise", "listwise", "both"] = "pointwise"
    #: how a reranker starts: "anchored" (retriever similarity + a zero-initialised correction; the default
    #: for an embedding model), "fresh" (the plain cross-encoder recipe: the body plus a new random head),
    #: "auto" (anchored for an embedding model, the checkpoint's own head for a pretrained reranker)
    rerank_init: Literal["auto", "anchored", "fresh"] = "auto"
    #: anchored reranker: the retriever's top-k candidates per query the listwise softmax runs over
    rerank_candidates: int = 7
    #: anchored reranker: skip candidates the retriever scores above the positive by more than this
    #: (probable unlabelled positives); None keeps every candidate
    rerank_fn_margin: float | None = 0.05
    #: anchored reranker: the learning rate of the zero-initialised head (the body trains at ``lr``); a
    #: zero head passes no gradient to the body until it has grown, so it needs a faster rate
    rerank_head_lr: float = 3e-3
    #: the first stage a reranker is validated against (default: the model itself when it is an embedder)
    retriever: str | None = None
    #: validation: a held-out JSONL (same format as ``data``) or a fraction of ``data`` held out
    eval_data: Path | None = None
    val_split: float | None = None
    #: evaluate every this many steps (None: four times per run, plus before training)
    eval_steps: int | None = None
    #: a reranker is validated on the first stage's top this many candidates per held-out query
    eval_depth: int = 20
    #: the validation metric the best checkpoint is chosen by
    eval_metric: Literal["ndcg@10", "mrr@10"] = "ndcg@10"
    #: an evaluation improves on the best only by more than this, so noise on a small validation set does not
    #: replace the untouched weights with ones that are no better. None (the default): the change one query
    #: makes when its relevant document moves between ranks 1 and 2, ``(1 - 1/log2 3) / n`` nDCG@10 or
    #: ``0.5 / n`` MRR@10 for ``n`` validation queries (0.0037 nDCG@10 on 100 queries); 0 takes any gain
    eval_min_delta: float | None = None
    #: stop after this many evaluations without improvement (None: never stop early)
    patience: int | None = None
    #: distillation stage: the teacher reranker and the temperatures
    teacher: str | None = None
    #: None: follow the teacher. An anchored reranker's logit is ``scale · cos + correction``, so its logits
    #: are divided by ``scale · student_temperature`` (its retriever term lands on the student's own scale and
    #: only the correction moves the student); any other teacher's logits are used as they are (1.0)
    teacher_temperature: float | None = None
    student_temperature: float = 0.05
    #: distillation: weight of the cross-entropy on each line's labelled positive added to the KL (0: KL only)
    distill_label_weight: float = 0.0
    device: str | None = None
    #: data-parallel runs (torchrun / accelerate launch): the examples per optimiser step over all ranks;
    #: None = batch_size per rank. Fixed across world sizes, so a run resumes on any number of ranks.
    global_batch_size: int | None = None
    #: score each query against the whole global batch's positives and negatives (None: on when distributed)
    gather_negatives: bool | None = None
    #: seconds a collective may wait for a silent rank before the run fails
    dist_timeout: float = 1800.0
    #: FSDP2 full sharding of the tower (bf16 mixed precision on GPU)
    fsdp: bool = False
    #: DeepSpeed JSON config for the sentence-transformers (Hugging Face) trainer
    deepspeed: Path | None = None

    @field_validator("batch_size", "hard_negatives", "lora_r", "log_steps")
    @classmethod
    def _non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("rerank_candidates", "eval_steps", "patience", "eval_depth", "save_total_limit")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("val_split")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError("must be a fraction between 0 and 1 (exclusive), e.g. 0.1")
        return v

    @field_validator("teacher_temperature", "student_temperature", "max_grad_norm")
    @classmethod
    def _positive_or_none(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("distill_label_weight", "eval_min_delta")
    @classmethod
    def _non_negative_weight(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("dist_timeout")
    @classmethod
    def _positive_timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0 seconds")
        return v

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError("matryoshka dims must be positive integers")
        return v


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A config from a YAML file (optional) with ``overrides`` applied; ``None`` overrides are ignored."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of option: value")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}invalid training config: {errs}") from e
