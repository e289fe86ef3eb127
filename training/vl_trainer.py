"""Training the Qwen3-VL embedding tower: a differentiable forward with the embedder's own inputs.

Inputs come from ``Qwen3VLEmbedder`` itself (``prepare_all``: the reference chat prompt with the
instruction in the system turn, pixels, MRoPE positions; ``inputs.collate``), and the pooled vector is
``last_token_pool`` of its ``Qwen3VLModel`` — so the trained weights, saved back in the input
checkpoint's layout (``Qwen3VLForConditionalGeneration`` keys with the ``model.`` prefix, tokenizer and
preprocessor configs copied, ``omniret.json`` with the dims), reload through ``load_embedder`` and give
the vectors the in-memory model gave. LoRA (peft, merged on save) or full fine-tuning; gradient
checkpointing; bf16 on GPU; GradCache (embed every item without grad, take the loss's gradient with
respect to the embeddings, then re-run chunk by chunk with grad and backpropagate the cached gradient),
exact because Qwen3-VL has no dropout; checkpoints with optimizer, scheduler and step for resume.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omniret.errors import ConfigError, ItemError
from omniret.training._meta import write_meta
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample
from omniret.training.losses import DistillationLoss, InfoNCELoss, MatryoshkaLoss
from omniret.training.progress import TrainProgress
from omniret.training.st_trainer import loss_dims, usable_negatives


class VLEmbedModel:
    """A trainable view of a ``Qwen3VLEmbedder``: ``prepare`` items, ``forward`` them to pooled vectors."""

    def __init__(self, cfg: TrainConfig) -> None:
        import torch

        from omniret.embed import load_embedder

        bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available()
        self.embedder = load_embedder(cfg.model, device=cfg.device, dtype=torch.bfloat16 if bf16 else torch.float32,
                                      **({"max_length": cfg.max_length} if cfg.max_length else {}))
        self.source = self.embedder.path
        self.model = self.embedder.model
        self.device = self.embedder.device
        self.lora = cfg.lora
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                               lora_dropout=cfg.lora_dropout,
                                                               target_modules=cfg.lora_targets))
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if cfg.lora:
                self.model.enable_input_require_grads()
        self.model.train()

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def prepare(self, items: Sequence[Any], instruction: str | None) -> list[Any]:
        prepared = self.embedder.prepare_all(list(items), instruction)
        errors = [p for p in prepared if isinstance(p, ItemError)]
        if errors:
            raise ItemError.combine(errors)
        return prepared

    def forward(self, prepared: Sequence[Any]) -> Any:
        """Pooled last-token vectors ``(n, dim)`` (float32, not normalised; the losses normalise)."""
        from omniret.embed.qwen3_vl import last_token_pool

        inputs = self.embedder.inputs.collate(list(prepared), padding_side="right")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.embedder.dtype)
        hidden = self.model(**inputs).last_hidden_state
        return last_token_pool(hidden, inputs["attention_mask"]).float()

    def trainable_state(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()
                if not self.lora or "lora_" in k}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state, strict=not self.lora)

    def save(self, out: Path) -> None:
        """The input checkpoint's layout with the trained tower's weights (LoRA merged)."""
        from safetensors.torch import load_file, save_file

        model = self.model
        if self.lora:
            model = model.merge_and_unload()
            self.model = model
            self.lora = False
        src = Path(self.source)
        shutil.copytree(src, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json", "omniret.json",
                                                      "checkpoints"))
        tower = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        files = sorted(src.glob("*.safetensors"))
        for f in files:
            original = load_file(str(f))
            merged = {k: tower[k].to(v.dtype) if k in tower else v for k, v in original.items()}
            save_file(merged, str(out / f.name), metadata={"format": "pt"})
        index = src / "model.safetensors.index.json"
        if index.is_file():
            shutil.copy(index, out / index.name)
        if not files:
            raise ConfigError(f"{src}: no .safetensors weights to write the trained tower into")


def _batches(n: int, size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def _embed(model: VLEmbedModel, prepared: list[Any], loss_of: Callable[[Any], Any], chunk: int | None) -> float:
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
    for i in range(0, len(prepared), chunk):
        out = model.forward(prepared[i:i + chunk])
        out.backward(grads[i:i + out.shape[0]])
    return float(loss.detach())


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) \
        if ckpt_dir.is_dir() else []
    return found[-1] if found else None


def train_vl_embedder(cfg: TrainConfig, examples: Sequence[TrainExample],
                      teacher_scores: list[list[float]] | None = None) -> dict[str, Any]:
    """Contrastive or distillation training of a Qwen3-VL embedding checkpoint (see module docstring)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    distill = cfg.stage == "distill"
    k = usable_negatives(examples, cfg.hard_negatives if not distill else max(cfg.hard_negatives, 1))
    model = VLEmbedModel(cfg)
    dims = loss_dims(cfg.matryoshka_dims, model.dim)
    base = DistillationLoss(cfg.teacher_temperature, cfg.student_temperature) if distill \
        else InfoNCELoss(cfg.temperature, cfg.fn_margin)
    loss_fn = MatryoshkaLoss(base, dims, cfg.matryoshka_weights) if dims else base
    size = max(cfg.batch_size, 1)
    per_epoch = -(-len(examples) // size)
    total = cfg.max_steps or max(1, int(per_epoch * cfg.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(total * cfg.warmup_ratio), total)
    ckpt_dir = cfg.out / "checkpoints"
    step = 0
    if cfg.resume:
        last = _last_checkpoint(ckpt_dir)
        if last is None:
            raise ConfigError(f"--resume: no checkpoint-* folder under {ckpt_dir}; train with --save-steps first")
        model.load_trainable_state(torch.load(last / "trainable.pt", weights_only=True))
        opt.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
        sched.load_state_dict(torch.load(last / "scheduler.pt", weights_only=True))
        step = int(json.loads((last / "state.json").read_text())["step"])
    history: list[float] = []
    with TrainProgress(total, f"training {cfg.stage}", start=step) as bar:
        while step < total:
            epoch, within = divmod(step, per_epoch)
            idx = _batches(len(examples), size, cfg.seed, epoch)[within]
            batch = [examples[i] for i in idx]
            queries = [p for ex in batch for p in model.prepare([ex.query], ex.instruction or cfg.instruction)]
            docs = model.prepare([c for ex in batch for c in ex.candidates[:k + 1]], None)
            prepared = queries + docs
            n = len(batch)

            def loss_of(reps: Any, n: int = n, batch: list[TrainExample] = batch, idx: list[int] = idx) -> Any:
                q, d = reps[:n], reps[n:].reshape(n, k + 1, -1)
                if distill:
                    t = torch.tensor([teacher_scores[i][:k + 1] for i in idx], device=reps.device)  # type: ignore[index]
                    return loss_fn(q, d, teacher_scores=t)
                return loss_fn(q, d[:, 0], d[:, 1:] if k else None)

            opt.zero_grad(set_to_none=True)
            value = _embed(model, prepared, loss_of, cfg.gradcache_chunk)
            opt.step()
            sched.step()
            step += 1
            history.append(value)
            bar.update(step, loss=value, examples=n)
            if cfg.save_steps and step % cfg.save_steps == 0 and step < total:
                _save_checkpoint(ckpt_dir / f"checkpoint-{step}", model, opt, sched, step)
    model.save(cfg.out)
    write_meta(cfg.out, model=cfg.model, stage=cfg.stage, dims=dims,
               losses={type(loss_fn).__name__: {**loss_fn.config}},
               extra={"steps": step, "examples": len(examples), "hard_negatives": k, "lora": cfg.lora,
                      "gradcache_chunk": cfg.gradcache_chunk})
    return {"out": str(cfg.out), "steps": step, "train_loss": sum(history) / max(len(history), 1),
            "history": history, "model": model}


def _save_checkpoint(path: Path, model: VLEmbedModel, opt: Any, sched: Any, step: int) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.trainable_state(), path / "trainable.pt")
    torch.save(opt.state_dict(), path / "optimizer.pt")
    torch.save(sched.state_dict(), path / "scheduler.pt")
    (path / "state.json").write_text(json.dumps({"step": step}), encoding="utf-8")


def train_vl_reranker(cfg: TrainConfig, examples: Sequence[TrainExample]) -> dict[str, Any]:
    """The Qwen3-VL reranker stage is not wired here yet: fail with a clear message."""
    raise ConfigError(f"{cfg.model}: training a Qwen3-VL reranker is not available in this version; train a "
                      "sentence-transformers CrossEncoder with `omniret train rerank`")
