"""``omniret train embed|rerank|distill``, ``omniret mine`` and ``omniret merge``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from omniret.cli._app import (
    DeviceOpt,
    RerankerOpt,
    app,
    cli_settings,
    console,
    err_console,
    handles_errors,
    renamed,
)

train_app = typer.Typer(help="Fine-tune embedders and rerankers: contrastive, reranker, distillation stages.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="train.yaml; flags override its values.")]
TrainModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint dir or registry name to train.")]
DataOpt = Annotated[Path | None, typer.Option("--data", help="Training JSONL: query, positive, negatives.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output checkpoint directory.")]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help="Epochs (default 1).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Examples per step (default 16).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate (default 2e-5).")]
HardNegOpt = Annotated[int | None, typer.Option(
    "--hard-negatives", help="Hard negatives per example (default: follow the data; 0 = in-batch only).")]
MrlOpt = Annotated[str | None, typer.Option("--dims", help="Matryoshka dims to train, comma-separated, e.g. "
                                                          "256,128,64.")]
#: the old spelling of --dims (one spelling per idea across commands: eval's sweep is --dims too)
OldMrlOpt = Annotated[str | None, typer.Option("--matryoshka-dims", hidden=True)]
LoraOpt = Annotated[bool | None, typer.Option("--lora/--full", help="LoRA (peft) or full fine-tuning.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", help="InfoNCE temperature (default 0.05).")]
ResumeOpt = Annotated[bool | None, typer.Option(
    "--resume", help="Continue from the last complete checkpoint in --out (on any world size that divides the "
                     "global batch, sharded or not).")]
SaveStepsOpt = Annotated[int | None, typer.Option("--save-steps", help="Save a resumable checkpoint every N steps.")]
CheckpointingOpt = Annotated[bool | None, typer.Option(
    "--gradient-checkpointing", help="Recompute activations in backward to save memory.")]
SaveLimitOpt = Annotated[int | None, typer.Option(
    "--save-total-limit", help="Keep only the newest N resumable checkpoints (default 2).")]
GradCacheOpt = Annotated[int | None, typer.Option("--gradcache-chunk", help="GradCache chunk size (items).")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-length", help="Truncate inputs to this many tokens.")]
EvalDataOpt = Annotated[Path | None, typer.Option(
    "--eval-data", help="Held-out JSONL (query, positive, negatives): evaluated before training and at intervals; "
                        "the best checkpoint is kept.")]
ValSplitOpt = Annotated[float | None, typer.Option(
    "--val-split", help="Hold out this fraction of --data's queries for validation instead of --eval-data.")]
EvalStepsOpt = Annotated[int | None, typer.Option("--eval-steps", help="Validate every N steps (default: 4 times).")]
PatienceOpt = Annotated[int | None, typer.Option(
    "--patience", help="Stop after N validations without improvement (default: never early).")]
GlobalBatchOpt = Annotated[int | None, typer.Option(
    "--global-batch-size", help="Examples per step over all ranks (default: --batch-size x world size); "
                                "fixed across world sizes so --resume works on any number of ranks.")]
GatherOpt = Annotated[bool | None, typer.Option(
    "--gather-negatives/--no-gather-negatives",
    help="Score each query against the whole global batch across ranks (default: on under torchrun).")]
DistTimeoutOpt = Annotated[float | None, typer.Option(
    "--dist-timeout", help="Seconds a rank waits for a silent peer before the run fails (default 1800).")]
FsdpOpt = Annotated[bool | None, typer.Option(
    "--fsdp", help="Shard the tower over the ranks with FSDP2 (bf16 compute over float32 weights on GPU; any mix "
                   "of text, image and video; one process trains unsharded).")]
DeepSpeedOpt = Annotated[Path | None, typer.Option(
    "--deepspeed", help="DeepSpeed JSON config (sentence-transformers models, through the HF trainer).")]


def _dist_flags(global_batch_size: int | None = None, gather_negatives: bool | None = None,
                dist_timeout: float | None = None, fsdp: bool | None = None,
                deepspeed: Path | None = None) -> dict[str, Any]:
    """The data-parallel options every stage takes (see README, "Training on several GPUs")."""
    return dict(global_batch_size=global_batch_size, gather_negatives=gather_negatives, dist_timeout=dist_timeout,
                fsdp=fsdp, deepspeed=deepspeed)


def _dims(value: str | None) -> list[int] | None:
    from omniret.errors import ConfigError

    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--dims {value!r}: expected comma-separated integers like 256,128,64") from e


def _run(stage: str, config: Path | None, **flags: Any) -> None:
    from omniret.training.config import load_config
    from omniret.training.runner import train

    flags["matryoshka_dims"] = _dims(flags.pop("matryoshka_dims"))
    cfg = load_config(config, stage=stage, **flags)
    if cfg.device is None and (device := cli_settings().device):  # flag > config file > OMNIRET_DEVICE
        cfg = cfg.model_copy(update={"device": device})
    summary = train(cfg, log=lambda msg: err_console.print(msg))
    summary.pop("history", None)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun / accelerate, rank 0 reports for the run
    console.print(f"trained {stage}: {summary['steps']} steps, loss {summary['train_loss']:.4f} -> {cfg.out}")
    v: dict[str, Any] = summary.get("validation") or {}
    if v.get("before") is not None:
        m: str = v["metric"]
        console.print(f"validation {m}: before {v['before'][m]:.4f}, after {v['best'][m]:.4f} (best, step "
                      f"{v['best_step']})" + _versus_first_stage(v, m))
        check: dict[str, Any] = v.get("check") or {}
        if check:  # queries that chose no checkpoint: the honest comparison
            console.print(f"check split ({check['queries']} queries): {m} {check['reranker'][m]:.4f}"
                          + _versus_first_stage(check, m))
        teacher: dict[str, Any] = v.get("teacher") or {}
        for name, t in (("validation", teacher), ("check split", teacher.get("check") or {})):
            if t.get("teacher"):
                console.print(f"teacher on {name}: {m} {t['teacher'][m]:.4f} vs the student's {t['student'][m]:.4f}"
                              + ("" if t.get("beats_student") else " [bold red](it does not beat it)[/bold red]"))


def _versus_first_stage(block: dict[str, Any], metric: str) -> str:
    """``; first stage X`` for a validation or check block that measured the first stage, flagged when the
    reranker does not beat it; empty otherwise."""
    if not block.get("first_stage"):
        return ""
    flag = "" if block.get("beats_first_stage") else " [bold red](the reranker does not beat it)[/bold red]"
    return f"; first stage {block['first_stage'][metric]:.4f}{flag}"


def _common(config: ConfigOpt, model: TrainModelOpt, data: DataOpt, out: OutOpt, epochs: EpochsOpt,
            max_steps: MaxStepsOpt, batch_size: BatchOpt, lr: LrOpt, hard_negatives: HardNegOpt,
            matryoshka_dims: MrlOpt, lora: LoraOpt, temperature: TempOpt, resume: ResumeOpt,
            save_steps: SaveStepsOpt, gradcache_chunk: GradCacheOpt, device: DeviceOpt,
            max_length: MaxLenOpt = None, eval_data: EvalDataOpt = None, val_split: ValSplitOpt = None,
            eval_steps: EvalStepsOpt = None, patience: PatienceOpt = None) -> dict[str, Any]:
    return dict(config=config, model=model, data=data, out=out, epochs=epochs, max_steps=max_steps,
                batch_size=batch_size, lr=lr, hard_negatives=hard_negatives, matryoshka_dims=matryoshka_dims,
                lora=lora, temperature=temperature, resume=resume, save_steps=save_steps,
                gradcache_chunk=gradcache_chunk, device=device, max_length=max_length, eval_data=eval_data,
                val_split=val_split, eval_steps=eval_steps, patience=patience)


@train_app.command("embed")
@handles_errors
def train_embed(config: ConfigOpt = None, model: TrainModelOpt = None, data: DataOpt = None, out: OutOpt = None,
                epochs: EpochsOpt = None, max_steps: MaxStepsOpt = None, batch_size: BatchOpt = None,
                lr: LrOpt = None, hard_negatives: HardNegOpt = None, matryoshka_dims: MrlOpt = None,
                old_mrl: OldMrlOpt = None, lora: LoraOpt = None, temperature: TempOpt = None, resume: ResumeOpt = None,
                save_steps: SaveStepsOpt = None, gradcache_chunk: GradCacheOpt = None,
                device: DeviceOpt = None, max_length: MaxLenOpt = None,
                global_batch_size: GlobalBatchOpt = None, gather_negatives: GatherOpt = None,
                dist_timeout: DistTimeoutOpt = None, fsdp: FsdpOpt = None, deepspeed: DeepSpeedOpt = None,
                eval_data: EvalDataOpt = None, val_split: ValSplitOpt = None, eval_steps: EvalStepsOpt = None,
                patience: PatienceOpt = None, save_total_limit: SaveLimitOpt = None,
                gradient_checkpointing: CheckpointingOpt = None) -> None:
    """Contrastive stage: InfoNCE over in-batch and hard negatives (false-negative mask), Matryoshka.

    Without --hard-negatives the data decides: pairs-only lines train on in-batch negatives, lines with
    mined negatives add one per query."""
    matryoshka_dims = renamed(matryoshka_dims, old_mrl, new="--dims", old="--matryoshka-dims", default=None)
    kw = _common(config, model, data, out, epochs, max_steps, batch_size, lr, hard_negatives, matryoshka_dims,
                 lora, temperature, resume, save_steps, gradcache_chunk, device, max_length, eval_data, val_split,
                 eval_steps, patience)
    _run("embed", kw.pop("config"), save_total_limit=save_total_limit, gradient_checkpointing=gradient_checkpointing,
         **kw,
         **_dist_flags(global_batch_size, gather_negatives, dist_timeout, fsdp, deepspeed))


@train_app.command("rerank")
@handles_errors
def train_rerank(config: ConfigOpt = None,
                 model: Annotated[str | None, typer.Option("--reranker", help="Reranker checkpoint dir or registry "
                                                                             "name to train.")] = None,
                 old_model: Annotated[str | None, typer.Option("--model", "-m", hidden=True)] = None,
                 data: DataOpt = None, out: OutOpt = None,
                 epochs: EpochsOpt = None, max_steps: MaxStepsOpt = None, batch_size: BatchOpt = None,
                 lr: LrOpt = None, hard_negatives: HardNegOpt = None, lora: LoraOpt = None,
                 resume: ResumeOpt = None, save_steps: SaveStepsOpt = None, device: DeviceOpt = None,
                 max_length: MaxLenOpt = None,
                 loss: Annotated[str | None, typer.Option("--loss", help="pointwise, listwise or both.")] = None,
                 init: Annotated[str | None, typer.Option(
                     "--init", help="auto (anchored for an embedding model, own head for a reranker), anchored, "
                                    "or fresh (a new random head: the plain cross-encoder recipe).")] = None,
                 retriever: Annotated[str | None, typer.Option(
                     "--retriever", help="First stage the reranker is validated against (default: --reranker "
                                         "when it is an embedding model).")] = None,
                 candidates: Annotated[int | None, typer.Option(
                     "--candidates", help="Anchored: the retriever's top-k per query to train over (default 7).")] = None,
                 head_lr: Annotated[float | None, typer.Option(
                     "--head-lr", help="Anchored: learning rate of the zero-initialised head and its pooler "
                                       "(default 3e-3).")] = None,
                 eval_data: EvalDataOpt = None, val_split: ValSplitOpt = None, eval_steps: EvalStepsOpt = None,
                 patience: PatienceOpt = None, global_batch_size: GlobalBatchOpt = None,
                 dist_timeout: DistTimeoutOpt = None, fsdp: FsdpOpt = None, deepspeed: DeepSpeedOpt = None,
                 save_total_limit: SaveLimitOpt = None, gradient_checkpointing: CheckpointingOpt = None,
                 gradcache_chunk: Annotated[int | None, typer.Option(
                     "--gradcache-chunk", help="Pairs scored per forward under gradient caching (default: 16 for "
                                               "a sentence-transformers cross-encoder; 0 scores a step at once).")] = None,
                 ) -> None:
    """Reranker stage. From an embedding model (--reranker minilm): the anchored reranker (retriever
    similarity + a zero-started cross-encoder correction, listwise over the retriever's own top candidates),
    which starts at the first stage's order. A pretrained reranker (Qwen3-VL, Qwen3-Reranker, CrossEncoder)
    keeps its own head."""
    # -m is the embedding model in every command; this one used to take the reranker under --model/-m
    model = renamed(model, old_model, new="--reranker", old="--model/-m", default=None)
    kw = _common(config, model, data, out, epochs, max_steps, batch_size, lr, hard_negatives, None, lora, None,
                 resume, save_steps, gradcache_chunk, device, max_length, eval_data, val_split, eval_steps, patience)
    _run("rerank", kw.pop("config"), rerank_loss=loss, rerank_init=init, retriever=retriever,
         rerank_candidates=candidates, rerank_head_lr=head_lr, save_total_limit=save_total_limit,
         gradient_checkpointing=gradient_checkpointing, **kw,
         **_dist_flags(global_batch_size, None, dist_timeout, fsdp, deepspeed))


@train_app.command("distill")
@handles_errors
def train_distill(config: ConfigOpt = None, model: TrainModelOpt = None, data: DataOpt = None, out: OutOpt = None,
                  teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher reranker.")] = None,
                  teacher_temperature: Annotated[float | None, typer.Option(
                      "--teacher-temperature", help="Divide the teacher's logits by this (default: follow the "
                      "teacher; an anchored reranker is put on the student's scale).")] = None,
                  student_temperature: Annotated[float | None, typer.Option("--student-temperature")] = None,
                  label_weight: Annotated[float | None, typer.Option(
                      "--label-weight", help="Add this weight times the cross-entropy on each line's labelled "
                      "positive to the KL (default 0).")] = None,
                  epochs: EpochsOpt = None, max_steps: MaxStepsOpt = None, batch_size: BatchOpt = None,
                  lr: LrOpt = None, hard_negatives: HardNegOpt = None, matryoshka_dims: MrlOpt = None,
                  old_mrl: OldMrlOpt = None, lora: LoraOpt = None, resume: ResumeOpt = None,
                  save_steps: SaveStepsOpt = None, device: DeviceOpt = None, max_length: MaxLenOpt = None,
                  global_batch_size: GlobalBatchOpt = None, dist_timeout: DistTimeoutOpt = None,
                  fsdp: FsdpOpt = None, deepspeed: DeepSpeedOpt = None, eval_data: EvalDataOpt = None,
                  val_split: ValSplitOpt = None, eval_steps: EvalStepsOpt = None,
                  patience: PatienceOpt = None, save_total_limit: SaveLimitOpt = None,
                  gradient_checkpointing: CheckpointingOpt = None) -> None:
    """Distillation stage: KL between the teacher reranker's and the embedder's softmax over candidates."""
    matryoshka_dims = renamed(matryoshka_dims, old_mrl, new="--dims", old="--matryoshka-dims", default=None)
    kw = _common(config, model, data, out, epochs, max_steps, batch_size, lr, hard_negatives, matryoshka_dims,
                 lora, None, resume, save_steps, None, device, max_length, eval_data, val_split, eval_steps,
                 patience)
    _run("distill", kw.pop("config"), teacher=teacher, teacher_temperature=teacher_temperature,
         student_temperature=student_temperature, distill_label_weight=label_weight,
         save_total_limit=save_total_limit, gradient_checkpointing=gradient_checkpointing, **kw,
         **_dist_flags(global_batch_size, None, dist_timeout, fsdp, deepspeed))


@app.command()
@handles_errors
def mine(
    model: Annotated[str, typer.Option("--model", "-m", help="Embedder used to search the corpus.")],
    data: Annotated[Path, typer.Option("--data", help="Training JSONL (query, positive).")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus JSONL: one item per line.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the mined JSONL.")],
    num_negatives: Annotated[int, typer.Option("--num-negatives", "-n", help="Negatives per query.")] = 4,
    candidates: Annotated[int, typer.Option("--candidates", help="Search depth per query.")] = 30,
    skip_top: Annotated[int, typer.Option("--skip-top", help="Ignore this many top hits.")] = 0,
    reranker: RerankerOpt = None,
    max_score: Annotated[float | None, typer.Option("--max-score", help="Drop candidates the reranker scores above.")] = None,
    ratio: Annotated[float | None, typer.Option("--ratio", help="Drop candidates scoring above ratio x positive.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Mine hard negatives: search each query in an index over the corpus, skip its positives."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from omniret.embed import load_embedder
    from omniret.training.data import load_corpus, load_examples, write_examples
    from omniret.training.mining import mine_hard_negatives

    examples = load_examples(data)
    items = load_corpus(corpus)
    device = device or cli_settings().device
    embedder = load_embedder(model, device=device)
    rr = None
    if reranker is not None:
        from omniret.rerank import load_reranker

        rr = load_reranker(reranker, device=device)
    with Progress(TextColumn("mining"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("mine", total=len(examples))
        mined = mine_hard_negatives(examples, items, embedder, num_negatives=num_negatives, candidates=candidates,
                                    skip_top=skip_top, reranker=rr, max_score=max_score, ratio=ratio,
                                    progress=lambda n: progress.advance(task, n))
    write_examples(out, mined)
    short = sum(len(ex.negatives) < num_negatives for ex in mined)
    console.print(f"wrote {len(mined)} examples with up to {num_negatives} mined negatives to {out}"
                  + (f" ({short} have fewer)" if short else ""))


@app.command()
@handles_errors
def merge(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint directories of one architecture.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint directory.")],
    method: Annotated[str, typer.Option("--method", help="linear or slerp.")] = "linear",
    weights: Annotated[str | None, typer.Option("--weights", help="Comma-separated, one per checkpoint.")] = None,
) -> None:
    """Merge checkpoints' weights (linear or spherical), as in the Qwen3-Embedding report."""
    from omniret.errors import ConfigError
    from omniret.training.merging import merge_checkpoints

    w = None
    if weights is not None:
        try:
            w = [float(x) for x in weights.split(",")]
        except ValueError as e:
            raise ConfigError(f"--weights {weights!r}: expected comma-separated numbers") from e
    if method not in ("linear", "slerp"):
        raise ConfigError(f"--method {method!r}: use linear or slerp")
    merge_checkpoints(checkpoints, out, method=method, weights=w)
    console.print(json.dumps({"out": str(out), "method": method, "checkpoints": [str(c) for c in checkpoints]}))
