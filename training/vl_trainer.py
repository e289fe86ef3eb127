"""Training Qwen3-VL (and text Qwen3) towers: a differentiable forward with the inference model's own inputs.

Inputs come from ``Qwen3VLEmbedder`` itself (``prepare_all``: the reference chat prompt with the
instruction in the system turn, pixels, MRoPE positions; ``inputs.collate``), and the pooled vector is
``last_token_pool`` of its ``Qwen3VLModel`` — so the trained weights, saved back in the input
checkpoint's layout (``Qwen3VLForConditionalGeneration`` keys with the ``model.`` prefix, tokenizer and
preprocessor configs copied, ``omniret.json`` with the dims), reload through ``load_embedder`` and give
the vectors the in-memory model gave. LoRA (peft, merged on save) or full fine-tuning; gradient
checkpointing; bf16 on GPU; GradCache (embed every item without grad, take the loss's gradient with
respect to the embeddings, then re-run chunk by chunk with grad and backpropagate the cached gradient),
exact because Qwen3-VL has no dropout; resumable checkpoints (``training.checkpoint``: DCP, any world size,
sharded or not).

FSDP2 (``--fsdp``) shards every decoder layer and vision block; each sharded module all-gathers its weights
when it runs forward (and again in backward) and reduce-scatters its gradients, and every rank must take part.
A rank whose slice has no image would skip the vision blocks' collectives while the others wait in them, so a
sharded Qwen3-VL tower runs the vision tower for each media kind of the run's data (``in_step``) on every
forward call of every rank: a slice without one gets a stand-in item appended to its batch, whose output row is
dropped. The stand-in's row never reaches the loss, so the gradients it sends back are exact zeros, while its
forward and backward (and gradient checkpointing's recomputation, and each of GradCache's passes) run the
same collectives, in the same order, as on a rank with real images.

The same loop trains a text Qwen3-Embedding (``TextEmbedModel``: ``Qwen3TextEmbedder``'s token ids and
last-token pooling), the Qwen3-VL reranker (``VLRerankModel``: ``Qwen3VLReranker``'s pair encoding,
the yes−no logit, ``RerankerLoss``; the ``yes``/``no`` LM-head rows written back into ``lm_head.weight``)
and the text Qwen3-Reranker the same way (``TextRerankModel``: ``Qwen3TextReranker``'s card prompt and
left-padded token ids over its base ``Qwen3Model``).
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omniret.errors import ConfigError, ItemError
from omniret.training import checkpoint
from omniret.training._meta import write_meta
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample
from omniret.training.distributed import gather_default
from omniret.training.losses import DistillationLoss, InfoNCELoss, MatryoshkaLoss, RerankerLoss
from omniret.training.progress import TrainProgress
from omniret.training.st_trainer import first_stage_for, loss_dims, usable_negatives
from omniret.training.validation import (
    KeepBest,
    ValidationSet,
    embedding_metrics,
    eval_interval,
    reranker_metrics,
)


class TrainableTower(ABC):
    """A trainable transformer tower of an omniret model: LoRA or full, gradient checkpointing, saving.

    Subclasses set ``self.model`` (the backbone), ``self.source`` (the input checkpoint directory) and
    ``self.device`` before calling ``_setup``, and implement ``prepare`` / ``forward``.
    """

    model: Any
    source: str
    device: Any
    lora: bool = False
    #: FSDP2-sharded (``--fsdp``): saving gathers the full weights on every rank, rank 0 writes them
    sharded: bool = False
    lora_scaling: float = 1.0
    #: sharded Qwen3-VL tower: the media kinds (``image``, ``video``) of the run's data, which every forward
    #: call on every rank feeds to the vision tower, with a stand-in item where its inputs hold none
    in_step: frozenset[str] = frozenset()
    #: the prepared stand-in per media kind, built on first use
    standins: dict[str, Any]
    #: whether this rank fed the vision tower a real image or video since ``_fit`` last reset it
    fed_media: bool = False

    def _load(self, loader: Callable[..., Any], cfg: TrainConfig) -> Any:
        """The backend ``loader`` gives for ``cfg`` (bf16 on a GPU unless told), whose model this tower
        trains: a concrete Qwen backend, since training drives its model and input builder directly."""
        import torch

        from omniret.training import distributed as dist

        bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available()
        # FSDP keeps float32 master weights and computes in bf16 through its mixed-precision policy
        dtype = torch.bfloat16 if bf16 and not (cfg.fsdp and dist.is_distributed()) else torch.float32
        backend = loader(cfg.model, device=cfg.device, dtype=dtype,
                         **({"max_length": cfg.max_length} if cfg.max_length else {}))
        self.source, self.model, self.device = backend.path, backend.model, backend.device
        return backend

    def _setup(self, cfg: TrainConfig) -> None:
        self.lora = cfg.lora
        self.standins = {}
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                               lora_dropout=cfg.lora_dropout,
                                                               target_modules=cfg.lora_targets))
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.lora:
                self.model.enable_input_require_grads()
        from omniret.training import distributed as dist

        # one process has nothing to shard over (a run resumed on one GPU with the launch's flags)
        if cfg.fsdp and dist.is_distributed():
            self._shard(cfg)
        self.model.train()

    def _shard(self, cfg: TrainConfig) -> None:
        """FSDP2 ``fully_shard`` on every decoder layer and vision block (the model's ``_no_split_modules``),
        then the root; bf16 compute with float32 master weights and gradient reduction on GPU."""
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        base = self.model.get_base_model() if self.lora else self.model
        blocks = set(getattr(base, "_no_split_modules", None) or [])
        bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available()
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
            else MixedPrecisionPolicy()
        for module in self.model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module, mp_policy=policy)
        fully_shard(self.model, mp_policy=policy)
        self.sharded = True
        self.lora_scaling = cfg.lora_alpha / max(cfg.lora_r, 1)

    @abstractmethod
    def forward(self, prepared: Sequence[Any]) -> Any:
        """The differentiable output for prepared inputs (pooled vectors, or yes-no logits)."""

    def parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def state_module(self) -> Any:
        """The module whose trainable parameters a resumable checkpoint holds (the tower; a reranker adds its
        yes/no head)."""
        return self.model

    def keep_in_step(self, media: set[str]) -> None:
        """Feed the vision tower every media kind of ``media`` on every forward call when sharded (see the
        module docstring); a no-op for an unsharded tower, whose ranks share no per-module collectives."""
        if self.sharded:
            self.in_step = frozenset(media & {"image", "video"})

    def standin(self, kind: str) -> Any:
        """A prepared input holding one small ``kind`` medium. The Qwen3-VL towers override this; a tower
        without a vision tower reads no media, so asking it to keep a vision tower in step is a config error."""
        raise ConfigError(f"{type(self).__name__} has no vision tower: it cannot train on {kind} items")

    def with_standins(self, prepared: Sequence[Any]) -> list[Any]:
        """``prepared`` plus a stand-in for each kind of ``in_step`` that none of its inputs holds."""
        out = list(prepared)
        self.fed_media = self.fed_media or any(p.images or p.videos for p in prepared)
        for kind in sorted(self.in_step):
            if not any(getattr(p, f"{kind}s", None) for p in prepared):
                if kind not in self.standins:
                    self.standins[kind] = self.standin(kind)
                out.append(self.standins[kind])
        return out

    def drop_vision_gradients(self) -> None:
        """Forget the vision tower's gradients: after a step in which it saw only stand-ins, they are exact
        zeros, and the optimiser must skip its weights as an unsharded process (where they got none) does."""
        for name, p in self.model.named_parameters():
            if "visual" in name.split("."):
                p.grad = None

    def trainable_state(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()
                if not self.lora or "lora_" in k}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state, strict=not self.lora)

    def extra_weights(self) -> dict[str, Any]:
        """Checkpoint tensors besides the tower's, by their name in the input's safetensors (none here)."""
        return {}

    def save(self, out: Path) -> None:
        """The input checkpoint's layout with the trained tower's weights (LoRA merged).

        Sharded: every rank must call it (gathering the weights is a collective); rank 0 writes.
        """
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            from omniret.training import distributed as dist

            full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            extra = self.extra_weights()
            if dist.current_context().is_main:
                tower = merge_lora_state(full, self.lora_scaling) if self.lora else full
                write_checkpoint(Path(self.source), out, tower, extra)
            return
        if self.lora:
            self.model = self.model.merge_and_unload()
            self.lora = False
        tower = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        write_checkpoint(Path(self.source), out, tower, self.extra_weights())


def media_of(examples: Sequence[TrainExample]) -> set[str]:
    """The modalities the examples' queries and candidates hold (the same on every rank: they read the same
    data)."""
    return {m for ex in examples for item in (ex.query, *ex.candidates) for m in item.modalities}


def standin_item(kind: str) -> Any:
    """The smallest item of a media ``kind`` the Qwen3-VL input builder takes: one black image at its minimum
    size, or a video of two such frames (one temporal group)."""
    from PIL import Image

    from omniret import Item

    frame = Image.new("RGB", (64, 64))
    return Item(image=frame) if kind == "image" else Item(video=[frame, frame.copy()])


def merge_lora_state(state: dict[str, Any], scaling: float) -> dict[str, Any]:
    """A peft LoRA model's full state dict as the base model's: ``W + scaling · B @ A`` per adapted layer.

    What ``merge_and_unload`` computes, done on the gathered tensors because a sharded model cannot merge
    in place.
    """
    import torch

    out: dict[str, Any] = {}
    for key, value in state.items():
        if "lora_" in key:
            continue
        name = key.removeprefix("base_model.model.")
        if ".base_layer." in name:
            stem = key.removesuffix(".weight").removesuffix(".base_layer") if key.endswith("base_layer.weight") \
                else None
            name = name.replace(".base_layer.", ".")
            if stem is not None and f"{stem}.lora_A.default.weight" in state:
                a = state[f"{stem}.lora_A.default.weight"].to(torch.float32)
                b = state[f"{stem}.lora_B.default.weight"].to(torch.float32)
                value = (value.to(torch.float32) + scaling * (b @ a)).to(value.dtype)
        out[name] = value.detach().cpu().contiguous()
    return out


def write_checkpoint(src: Path, out: Path, tower: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Copy ``src`` to ``out`` with its safetensors' tensors replaced by ``tower`` and ``extra``.

    A file tensor ``name`` takes ``extra[name]``, else ``tower[name]``, else ``tower[name without "model."]``
    (a ``Qwen3VLModel``'s keys lack the ``model.`` prefix of the ``ForConditionalGeneration`` file);
    every tower tensor must land somewhere, or the checkpoint would silently keep stale weights.
    """
    from safetensors.torch import load_file, save_file

    extra = extra or {}
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{src}: no .safetensors weights to write the trained tower into")
    shutil.copytree(src, out, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json", "omniret.json",
                                                  "checkpoints"))
    used: set[str] = set()
    for f in files:
        merged = {}
        for name, value in load_file(str(f)).items():
            key = name if name in tower else name.removeprefix("model.")
            if name in extra:
                merged[name] = extra[name].to(value.dtype).contiguous()
            elif key in tower:
                merged[name] = tower[key].to(value.dtype)
                used.add(key)
            else:
                merged[name] = value
        save_file(merged, str(out / f.name), metadata={"format": "pt"})
    index = src / "model.safetensors.index.json"
    if index.is_file():
        shutil.copy(index, out / index.name)
    missing = sorted(set(tower) - used)
    if missing:
        raise ConfigError(f"{src}: the checkpoint has no tensor for {len(missing)} trained weights "
                          f"(first: {missing[0]}); cannot save in its layout")


class VLEmbedModel(TrainableTower):
    """A trainable view of a ``Qwen3VLEmbedder``: ``prepare`` items, ``forward`` them to pooled vectors."""

    def __init__(self, cfg: TrainConfig) -> None:
        from omniret.embed import load_embedder

        self.embedder = self._load(load_embedder, cfg)
        self._setup(cfg)

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def prepare(self, items: Sequence[Any], instruction: str | None) -> list[Any]:
        prepared = self.embedder.prepare_all(list(items), instruction)
        errors = [p for p in prepared if isinstance(p, ItemError)]
        if errors:
            raise ItemError.combine(errors)
        return prepared

    def forward(self, prepared: Sequence[Any]) -> Any:
        """Pooled last-token vectors ``(n, dim)`` (float32, not normalised; the losses normalise)."""
        from omniret.base.models import last_token_pool

        inputs = self.embedder.inputs.collate(self.with_standins(prepared), padding_side="right")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.embedder.dtype)
        hidden = self.model(**inputs).last_hidden_state
        return last_token_pool(hidden, inputs["attention_mask"])[:len(prepared)].float()

    def standin(self, kind: str) -> Any:
        return self.prepare([standin_item(kind)], None)[0]


class TextEmbedModel(VLEmbedModel):
    """A trainable view of a text ``Qwen3TextEmbedder`` (Qwen3-Embedding): the embedder's own token ids
    (``Instruct: …\nQuery:`` queries, ``<|endoftext|>`` appended), right padding, last-token pooling."""

    def forward(self, prepared: Sequence[Any]) -> Any:
        import torch

        from omniret.base.models import last_token_pool

        length = max(len(ids) for ids in prepared)
        input_ids = torch.full((len(prepared), length), self.embedder.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prepared), length), dtype=torch.long)
        for i, ids in enumerate(prepared):
            input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, :len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return last_token_pool(hidden, mask).float()


def _embed(model: TrainableTower, prepared: list[Any], loss_of: Callable[[Any], Any], chunk: int | None) -> float:
    """Forward + backward of one batch; with ``chunk``, GradCache-style so memory holds one chunk."""
    import torch

    if not chunk or chunk >= len(prepared):
        reps = model.forward(prepared)
        loss = loss_of(reps)
        loss.backward()
        return float(loss.detach())
    with torch.no_grad():
        reps = torch.cat([model.forward(prepared[i:i + chunk]) for i in range(0, len(prepared), chunk)])
    reps = reps.detach().requires_grad_()
    loss = loss_of(reps)
    loss.backward()
    grads = reps.grad
    assert grads is not None  # reps requires grad and the loss depends on it
    for i in range(0, len(prepared), chunk):
        out = model.forward(prepared[i:i + chunk])
        out.backward(grads[i:i + out.shape[0]])
    return float(loss.detach())


def _fit(cfg: TrainConfig, model: TrainableTower, n_examples: int,
         batch_loss: Callable[[list[int]], tuple[list[Any], Callable[[Any], Any]]],
         gather: bool = False, keep: KeepBest | None = None) -> Fit:
    """The shared loop: AdamW with linear warmup/decay, resumable checkpoints in ``out/checkpoints``
    (``training.checkpoint``, every ``cfg.save_steps``, the newest ``cfg.save_total_limit`` kept), progress, saving.

    ``batch_loss(indices)`` gives the batch's prepared inputs and the loss of the model's outputs on them.
    Under ``torch.distributed`` each rank takes its slice of the global batch (``distributed.rank_slice``),
    gradients are averaged over the ranks, the logged loss is the ranks' mean (the global batch's loss), and
    rank 0 alone draws the progress bar. A checkpoint holds the global step and the batch plan (global batch,
    seed, example count), so it resumes on any number of ranks that divides that batch, sharded or not.
    ``keep`` validates before the first step, every ``cfg.eval_steps`` and after the last, stops early
    when its patience runs out, and puts the best weights back at the end (every rank evaluates the same
    held-out queries with the same weights, so they agree on the best step and on stopping).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    from omniret.training import distributed as dist

    ctx = dist.current_context()
    ckpt_dir = cfg.out / "checkpoints"
    last = None
    global_batch = cfg.global_batch_size
    if cfg.resume:
        last = checkpoint.latest(ckpt_dir)
        if last is None:
            raise ConfigError(f"--resume: no complete checkpoint-* folder under {ckpt_dir}; train with --save-steps "
                              "first")
        saved = checkpoint.read_state(last)
        saved_global = saved.get("global_batch")
        if saved_global is not None:
            if global_batch is not None and global_batch != saved_global:
                raise ConfigError(f"--resume: {last} was trained with global batch {saved_global}, not "
                                  f"{global_batch}; drop --global-batch-size or pass {saved_global}")
            global_batch = int(saved_global)
        for key, now in (("examples", n_examples), ("seed", cfg.seed)):
            if saved.get(key, now) != now:
                raise ConfigError(f"--resume: {last} was trained with {key} {saved[key]}, this run has {now}; "
                                  "the batch plan would differ (resume with the same data and --seed)")
    per_device, global_batch = dist.global_batch_plan(max(cfg.batch_size, 1), ctx.world_size, global_batch)
    per_epoch = -(-n_examples // global_batch)
    total = cfg.max_steps or max(1, int(per_epoch * cfg.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(total * cfg.warmup_ratio), total)
    step = 0
    if last is not None:
        with dist.collective_errors(ctx, f"loading {last}"):
            step = checkpoint.load(last, model.state_module(), opt, sched)
    if ctx.is_main:
        dist.log_line(dist.announce(ctx, per_device, global_batch, gather))
    history: list[float] = []
    seconds: list[float] = []
    batches: list[list[int]] = []
    batches_epoch = -1
    interval = eval_interval(cfg.eval_steps, total)
    if keep is not None and step not in keep.evaluated_steps:
        keep.evaluate(step)
    with TrainProgress(total, f"training {cfg.stage}", start=step, enabled=ctx.is_main) as bar:
        while step < total:
            t0 = time.perf_counter()
            epoch, within = divmod(step, per_epoch)
            if epoch != batches_epoch:
                batches, batches_epoch = dist.epoch_batches(n_examples, global_batch, cfg.seed, epoch), epoch
            idx = dist.rank_slice(batches[within], ctx, batches[0])
            prepared, loss_of = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            model.fed_media = False
            with dist.collective_errors(ctx, f"step {step + 1}"):
                value = _embed(model, prepared, loss_of, cfg.gradcache_chunk)
                dist.allreduce_gradients(model.parameters())
                if model.in_step and not dist.any_rank(model.fed_media):
                    model.drop_vision_gradients()
                value = dist.mean_over_ranks(value)
            if cfg.max_grad_norm is not None:
                dist.clip_grad_norm(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            history.append(value)
            seconds.append(time.perf_counter() - t0)
            bar.update(step, loss=value, examples=len(idx) * ctx.world_size)
            if cfg.save_steps and step % cfg.save_steps == 0 and step < total:
                with dist.collective_errors(ctx, f"the checkpoint at step {step}"):
                    checkpoint.save(ckpt_dir, step, model.state_module(), opt, sched,
                                    {"global_batch": global_batch, "world_size": ctx.world_size,
                                     "examples": n_examples, "seed": cfg.seed, "fsdp": model.sharded},
                                    keep=cfg.save_total_limit)
            if keep is not None and step % interval == 0 and keep.evaluate(step):
                break
    if keep is not None:
        if step not in keep.evaluated_steps:
            keep.evaluate(step)
        keep.restore()
    run = {"world_size": ctx.world_size, "per_device_batch": per_device, "global_batch": global_batch,
           "gather_negatives": gather, "fsdp": model.sharded}
    return Fit(step, history, seconds, run)


@dataclass
class Fit:
    """What ``_fit`` did: the last global step, the loss and wall seconds of each step it took, the run's
    parallelism (for the ``trained`` record)."""

    step: int
    losses: list[float]
    seconds: list[float]
    run: dict[str, Any]


def write_history(out: Path, fit: Fit) -> None:
    """``out/train_history.json``: the global-batch loss and wall seconds of each optimiser step this run took
    (a resumed run's first step is the one after its checkpoint)."""
    first = fit.step - len(fit.losses) + 1
    (out / "train_history.json").write_text(
        json.dumps({"step": list(range(first, fit.step + 1)), "loss": fit.losses, "seconds": fit.seconds,
                    "global_batch": fit.run["global_batch"], "world_size": fit.run["world_size"]}),
        encoding="utf-8")


def _finish(cfg: TrainConfig, model: TrainableTower, write: Callable[[], None], fit: Fit) -> None:
    """Rank 0 saves the model, its ``omniret.json`` and the loss per step; the other ranks wait until it has."""
    from omniret.training import distributed as dist

    ctx = dist.current_context()
    if model.sharded:
        with dist.collective_errors(ctx, "gathering the sharded weights"):
            model.save(cfg.out)
    elif ctx.is_main:
        model.save(cfg.out)
    if ctx.is_main:
        write()
        write_history(cfg.out, fit)
    with dist.collective_errors(ctx, "saving the trained model"):
        dist.barrier()


def _validation_record(validation: dict[str, Any]) -> dict[str, Any]:
    """The ``trained`` record's validation summary (without the per-evaluation history)."""
    return {"validation": {k: v for k, v in validation.items() if k != "history"}} if validation else {}


def _evaluating(model: TrainableTower, fn: Callable[[], dict[str, float]]) -> Callable[[], dict[str, float]]:
    """``fn`` run with the tower in eval mode and without gradients, then back to training."""
    def run() -> dict[str, float]:
        import torch

        model.model.eval()
        try:
            with torch.no_grad():
                return fn()
        finally:
            model.model.train()

    return run


def train_vl_embedder(cfg: TrainConfig, examples: Sequence[TrainExample],
                      teacher_scores: list[list[float]] | None = None,
                      model_cls: type[VLEmbedModel] = VLEmbedModel, *, val: ValidationSet | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Contrastive or distillation training of a Qwen3-VL (or, with ``TextEmbedModel``, a text
    Qwen3-Embedding) checkpoint (see module docstring)."""
    import torch

    torch.manual_seed(cfg.seed)
    distill = cfg.stage == "distill"
    k = usable_negatives(examples, cfg.hard_negatives if not distill else max(cfg.hard_negatives or 0, 1))
    model = model_cls(cfg)
    model.keep_in_step(media_of(examples))
    dims = loss_dims(cfg.matryoshka_dims, model.dim)
    # distillation's KL is per query over its own candidates: nothing to gather, the gradient average
    # alone makes the ranks' step the global batch's step
    gather = not distill and gather_default(cfg.gather_negatives)
    base = DistillationLoss(cfg.teacher_temperature or 1.0, cfg.student_temperature, cfg.distill_label_weight) \
        if distill \
        else InfoNCELoss(cfg.temperature, cfg.fn_margin, gather_across_devices=gather)
    loss_fn = MatryoshkaLoss(base, dims, cfg.matryoshka_weights) if dims else base

    def batch_loss(idx: list[int]) -> tuple[list[Any], Callable[[Any], Any]]:
        batch = [examples[i] for i in idx]
        queries = [p for ex in batch for p in model.prepare([ex.query], ex.instruction or cfg.instruction)]
        docs = model.prepare([c for ex in batch for c in ex.candidates[:k + 1]], None)
        n = len(batch)

        def loss_of(reps: Any) -> Any:
            q, d = reps[:n], reps[n:].reshape(n, k + 1, -1)
            if distill:
                t = torch.tensor([teacher_scores[i][:k + 1] for i in idx], device=reps.device)  # type: ignore[index]
                return loss_fn(q, d, teacher_scores=t)
            return loss_fn(q, d[:, 0], d[:, 1:] if k else None)

        return queries + docs, loss_of

    keep = None
    if val is not None:
        def encode(items: Sequence[Any], instruction: str | None) -> Any:
            return model.embedder.embed(list(items), instruction=instruction)

        keep = KeepBest(_evaluating(model, lambda: embedding_metrics(val, encode, instruction=cfg.instruction)),
                        model.trainable_state, model.load_trainable_state, metric=cfg.eval_metric, min_delta=cfg.eval_min_delta,
                        patience=cfg.patience, log=log)
    fit = _fit(cfg, model, len(examples), batch_loss, gather, keep)
    step, history = fit.step, fit.losses
    validation = keep.report() if keep is not None else {}
    _finish(cfg, model, lambda: write_meta(
        cfg.out, model=cfg.model, stage=cfg.stage, dims=dims, losses={type(loss_fn).__name__: {**loss_fn.config}},
        extra={"steps": step, "examples": len(examples), "hard_negatives": k, "lora": cfg.lora,
               "gradcache_chunk": cfg.gradcache_chunk, **fit.run, **_validation_record(validation)}), fit)
    return {"out": str(cfg.out), "steps": step, "train_loss": sum(history) / max(len(history), 1),
            "history": history, "model": model, "validation": validation}


def train_text_embedder(cfg: TrainConfig, examples: Sequence[TrainExample],
                        teacher_scores: list[list[float]] | None = None, *, val: ValidationSet | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Contrastive or distillation training of a text Qwen3-Embedding checkpoint (same loop and losses)."""
    return train_vl_embedder(cfg, examples, teacher_scores, model_cls=TextEmbedModel, val=val, log=log)


class VLRerankModel(TrainableTower):
    """A trainable ``Qwen3VLReranker``: its base ``Qwen3VLModel`` plus the LM head's ``yes`` and ``no`` rows.

    Pairs are encoded by the reranker itself (``prepare_pairs``: judgement system turn, ``<Instruct>``,
    ``<Query>``, ``<Document>``, generation prompt, truncation), left-padded as at inference, and scored
    by the logit ``h_last · (w_yes − w_no)`` whose sigmoid is the reranker's score. The two rows train with
    the tower and are written back into ``lm_head.weight`` (the other rows untouched). A checkpoint that
    ties its head to the input embeddings keeps the rows frozen: changing them would change how ``yes``
    and ``no`` read in the prompt too.
    """

    HEAD_KEY = "__yes_no_head__"

    def __init__(self, cfg: TrainConfig) -> None:
        import torch

        from omniret.rerank import load_reranker
        from omniret.rerank.yes_no import LM_HEAD_KEY, ties_word_embeddings, yes_no_rows

        self.reranker = self._load(load_reranker, cfg)
        config = json.loads((Path(self.source) / "config.json").read_text(encoding="utf-8"))
        self.tied = ties_word_embeddings(config) or self.reranker.head_source != LM_HEAD_KEY
        w_yes, w_no, _ = yes_no_rows(self.source, self.reranker.yes_id, self.reranker.no_id)
        self.head = torch.nn.Parameter(torch.stack([w_yes, w_no]).to(self.device, torch.float32),
                                       requires_grad=not self.tied)
        self._setup(cfg)

    def parameters(self) -> list[Any]:
        return super().parameters() + ([self.head] if self.head.requires_grad else [])

    def trainable_state(self) -> dict[str, Any]:
        return {**super().trainable_state(), self.HEAD_KEY: self.head.detach().cpu()}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        import torch

        state = dict(state)
        with torch.no_grad():
            self.head.copy_(state.pop(self.HEAD_KEY))
        super().load_trainable_state(state)

    def prepare(self, query: Any, documents: Sequence[Any], instruction: str | None) -> list[Any]:
        prepared = self.reranker.prepare_pairs(query, list(documents), instruction=instruction)
        errors = [p for p in prepared if isinstance(p, ItemError)]
        if errors:
            raise ItemError.combine(errors)
        return prepared

    def forward(self, prepared: Sequence[Any]) -> Any:
        """The yes−no logit per pair ``(n,)``, float32."""
        import torch

        inputs = self.reranker.inputs.collate(self.with_standins(prepared), padding_side="left",
                                              pad_token_id=self.reranker.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.reranker.dtype)
        hidden = self.model(**inputs, use_cache=False).last_hidden_state[:len(prepared), -1]
        return hidden.to(torch.float32) @ (self.head[0] - self.head[1])

    def standin(self, kind: str) -> Any:
        from omniret import Item

        return self.prepare(Item(text="stand-in"), [standin_item(kind)], None)[0]

    def state_module(self) -> Any:
        import torch

        holder = torch.nn.Module()
        holder.tower = self.model
        holder.head = self.head
        return holder

    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = None) -> Any:
        """P(yes) per document from the weights in memory (what the saved checkpoint must reproduce)."""
        import torch

        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return torch.sigmoid(self.forward(self.prepare(query, documents, instruction))).cpu().numpy()
        finally:
            self.model.train(was)

    def extra_weights(self) -> dict[str, Any]:
        if self.tied:
            return {}
        from safetensors import safe_open

        from omniret.rerank.yes_no import LM_HEAD_KEY, weight_files

        with safe_open(str(weight_files(Path(self.source))[LM_HEAD_KEY]), framework="pt") as f:
            head = f.get_tensor(LM_HEAD_KEY).clone()
        head[self.reranker.yes_id] = self.head[0].detach().cpu().to(head.dtype)
        head[self.reranker.no_id] = self.head[1].detach().cpu().to(head.dtype)
        return {LM_HEAD_KEY: head}


class TextRerankModel(VLRerankModel):
    """A trainable text ``Qwen3TextReranker`` (Qwen3-Reranker): the same head and saving as
    ``VLRerankModel``; pairs are the reranker's own card-prompt token ids (``prepare_pairs``), left-padded
    by its ``collate``, through its base ``Qwen3Model``."""

    def forward(self, prepared: Sequence[Any]) -> Any:
        """The yes−no logit per pair ``(n,)``, float32."""
        import torch

        ids, mask = self.reranker.collate(list(prepared))
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            use_cache=False).last_hidden_state[:, -1]
        return hidden.to(torch.float32) @ (self.head[0] - self.head[1])


def train_vl_reranker(cfg: TrainConfig, examples: Sequence[TrainExample],
                      model_cls: type[VLRerankModel] = VLRerankModel, *, val: ValidationSet | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reranker stage on a Qwen3-VL (or, with ``TextRerankModel``, a text Qwen3-Reranker) checkpoint: each
    example's positive (label 1) and first ``hard_negatives`` negatives (label 0) scored as pairs with its
    query; ``RerankerLoss`` pointwise (BCE on the yes−no logit), listwise (softmax over the query's
    candidates) or both."""
    import torch

    torch.manual_seed(cfg.seed)
    k = usable_negatives(examples, max(cfg.hard_negatives or 0, 1))
    model = model_cls(cfg)
    model.keep_in_step(media_of(examples))
    loss_fn = RerankerLoss(cfg.rerank_loss)

    def batch_loss(idx: list[int]) -> tuple[list[Any], Callable[[Any], Any]]:
        batch = [examples[i] for i in idx]
        prepared = [p for ex in batch
                    for p in model.prepare(ex.query, ex.candidates[:k + 1], ex.instruction or cfg.instruction)]
        n = len(batch)

        def loss_of(logits: Any) -> Any:
            if cfg.rerank_loss == "pointwise":
                labels = torch.zeros(n, k + 1, device=logits.device)
                labels[:, 0] = 1.0
                return loss_fn(logits, labels.reshape(-1))
            return loss_fn(logits.reshape(n, k + 1))

        return prepared, loss_of

    keep, first = None, None
    if val is not None:
        first = first_stage_for(cfg, val, source_is_embedder=False)

        def score(query: Any, docs: Sequence[Any], instruction: str | None) -> Any:
            return model.score(query, docs, instruction=instruction)

        keep = KeepBest(_evaluating(model, lambda: reranker_metrics(val, first, score, instruction=cfg.instruction)),
                        model.trainable_state, model.load_trainable_state, metric=cfg.eval_metric, min_delta=cfg.eval_min_delta,
                        patience=cfg.patience, log=log)
    fit = _fit(cfg, model, len(examples), batch_loss, keep=keep)
    step, history = fit.step, fit.losses
    validation = keep.report() if keep is not None else {}
    if first is not None and first.metrics:
        validation["first_stage"] = first.metrics
    _finish(cfg, model, lambda: write_meta(
        cfg.out, model=cfg.model, stage="rerank", dims=None, losses={type(loss_fn).__name__: {**loss_fn.config}},
        extra={"steps": step, "examples": len(examples), "hard_negatives": k, "lora": cfg.lora,
               "yes_no_rows_trained": not model.tied, **fit.run, **_validation_record(validation)}), fit)
    return {"out": str(cfg.out), "steps": step, "train_loss": sum(history) / max(len(history), 1),
            "history": history, "model": model, "validation": validation}


def train_text_reranker(cfg: TrainConfig, examples: Sequence[TrainExample], *, val: ValidationSet | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Reranker stage on a text Qwen3-Reranker checkpoint (same loop, losses and saving)."""
    return train_vl_reranker(cfg, examples, model_cls=TextRerankModel, val=val, log=log)
