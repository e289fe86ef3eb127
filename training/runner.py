"""``train(config)``: run one stage (embed, rerank, distill) on the backbone the checkpoint is.

sentence-transformers embedders and cross-encoders train with sentence-transformers' trainers
(``st_trainer``); Qwen3-VL embedders and rerankers, text Qwen3-Embedding and text Qwen3-Reranker
checkpoints with omniret's own loop (``vl_trainer``), which owns the differentiable forward and GradCache.
Distillation asks the teacher reranker (``load_reranker``) for scores unless the data already carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from omniret.errors import ConfigError
from omniret.training.config import TrainConfig
from omniret.training.data import TrainExample, load_examples
from omniret.training.distributed import DistContext
from omniret.training.negatives import choose_negatives, sampled_negatives


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


def _stderr_log() -> Callable[[str], None]:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    return lambda msg: console.print(msg)


def train(cfg: TrainConfig, examples: Sequence[TrainExample] | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` (or the given examples) and save to ``cfg.out``; returns a summary.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) every rank runs this: it joins the
    process group, the ranks check together that each sees the same data and a usable output folder
    (so a bad launch fails before training, naming the rank), then train data-parallel.

    With ``cfg.eval_data`` or ``cfg.val_split`` the summary's ``validation`` holds the metrics before
    training, of the best evaluation (whose weights are the ones saved) and, for a reranker, of the first
    stage on the same queries. ``log`` gets the progress lines (default: stderr; rank 0 only).
    """
    import torch.distributed as tdist

    from omniret.training import distributed as dist

    joined_here = not tdist.is_initialized()
    ctx = dist.init_distributed(cfg.dist_timeout, cfg.device)
    say = (log or _stderr_log()) if ctx.is_main else (lambda _msg: None)
    try:
        return _train(cfg.model_copy(update={"device": dist.local_device(ctx, cfg.device)}), examples, ctx, say)
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


def _train(cfg: TrainConfig, examples: Sequence[TrainExample] | None, ctx: DistContext,
           say: Callable[[str], None]) -> dict[str, Any]:
    from omniret.registry import detect_arch, resolve
    from omniret.rerank.anchored import is_anchored
    from omniret.training import distributed as dist
    from omniret.training.st_trainer import is_cross_encoder
    from omniret.training.validation import held_out, min_delta_for

    if examples is None:
        examples = dist.agree(ctx, "loading the training data", lambda: load_examples(cfg.data),
                              key=lambda exs: _fingerprint(exs) if ctx.enabled else None)
    # every rank holds out the same queries (the split is seeded) and evaluates the same way
    held = held_out(cfg.eval_data, cfg.val_split, examples, cfg.seed)
    examples, val, check = held.train, held.validation, held.check
    if val is not None:
        if cfg.eval_min_delta is None:
            cfg = cfg.model_copy(update={"eval_min_delta": min_delta_for(len(val), cfg.eval_metric)})
        say(f"validation: {len(val)} held-out queries against a pool of {len(val.pool)} documents; an evaluation "
            f"replaces the best only by more than {cfg.eval_min_delta:.4f} {cfg.eval_metric}"
            + (f"; {len(check)} more held-out queries check the result" if check is not None else ""))
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
    if is_anchored(source):
        raise ConfigError(f"{cfg.model}: is an anchored reranker; train a new one from its retriever "
                          f"({source}/retriever) or distil it with --teacher")
    arch = detect_arch(source, spec)
    if arch in ("qwen3_vl", "qwen3_text") and cfg.deepspeed is not None:
        raise ConfigError(f"--deepspeed {cfg.deepspeed}: DeepSpeed runs through the Hugging Face trainer "
                          "(sentence-transformers models); shard a Qwen3 tower with --fsdp")
    if cfg.stage == "rerank" and cfg.max_length is not None and arch in ("qwen3_vl", "qwen3_text"):
        check_max_length(cfg.max_length, source, arch, examples, cfg.instruction)
    anchored = cfg.stage == "rerank" and cfg.rerank_init != "fresh" and not is_cross_encoder(source, spec, arch)
    if cfg.stage == "rerank" and cfg.rerank_init == "anchored" and not anchored:
        raise ConfigError(f"{cfg.model}: --init anchored builds a reranker from a sentence-transformers embedding "
                          f"model; this {arch} reranker keeps its own head (use --init auto)")
    if anchored:
        if arch != "sentence_transformers":
            raise ConfigError(f"{cfg.model}: the anchored reranker is built from a sentence-transformers embedding "
                              f"model, not a {arch} one; pass --init fresh for a cross-encoder with a new head")
        from omniret.training.anchored import train_anchored_reranker

        say("reranker recipe: anchored (retriever similarity + a zero-initialised cross-encoder correction, "
            "listwise over the retriever's own top candidates)")
        return _summarise(_checked(cfg, train_anchored_reranker(cfg, examples, val, log=say), check, ctx, True),
                          say)
    k, why = choose_negatives(cfg, examples)
    say(f"negatives: {why}")
    if cfg.stage == "rerank" and min(len(ex.negatives) for ex in examples) == 0:
        examples = sampled_negatives(examples, k, cfg.seed)
    cfg = cfg.model_copy(update={"hard_negatives": k})
    embedder_source = not is_cross_encoder(source, spec, arch)
    return _summarise(_checked(cfg, _dispatch(cfg, examples, arch, val, say, ctx, check), check, ctx,
                               embedder_source), say)


def _checked(cfg: TrainConfig, summary: dict[str, Any], check: Any, ctx: DistContext,
             source_is_embedder: bool) -> dict[str, Any]:
    """``summary`` with the trained reranker's figures on the check split beside the first stage's (rank 0;
    also written to ``omniret.json``): queries that chose no checkpoint, so the comparison is not flattered."""
    if check is None or cfg.stage != "rerank" or not ctx.is_main:
        return summary
    from omniret.rerank import load_reranker
    from omniret.training.st_trainer import first_stage_for
    from omniret.training.validation import reranker_metrics

    first = first_stage_for(cfg, check, source_is_embedder=source_is_embedder)
    rr = load_reranker(str(cfg.out), device=cfg.device)
    m = reranker_metrics(check, first, lambda q, docs, instr: rr.score(q, list(docs), instruction=instr),
                         instruction=cfg.instruction)
    figures: dict[str, Any] = {"queries": len(check), "reranker": m}
    if first.metrics:
        figures["first_stage"] = first.metrics
        figures["beats_first_stage"] = m[cfg.eval_metric] > first.metrics[cfg.eval_metric]
    summary.setdefault("validation", {})["check"] = figures
    _record_check(cfg, figures)
    return summary


def _record_check(cfg: TrainConfig, figures: dict[str, Any], key: str = "check") -> None:
    """Add the check split's figures to the trained model's ``omniret.json`` (``trained.validation``)."""
    import json

    path = cfg.out / "omniret.json"
    if not path.is_file():
        return
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.setdefault("trained", {}).setdefault("validation", {})[key] = figures
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def judgement_lengths(source: str, arch: str, examples: Sequence[TrainExample],
                      instruction: str | None = None) -> tuple[int, int]:
    """A Qwen reranker's judgement prompt in tokens (system turn, instruction, ``<Query>:``, ``<Document>:``
    and the closing turn, with an empty query and document; the instruction of the line that needs the
    most), and the smallest ``max_length`` that keeps at least one document token of every pair in
    ``examples`` (their query texts counted; media not).

    Only the tokenizer is read, so a bad ``--max-length`` is refused before the weights load."""
    if arch == "qwen3_text":
        from transformers import AutoTokenizer

        from omniret.rerank.qwen3_text import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, format_pair

        tok = AutoTokenizer.from_pretrained(source)
        frame = len(tok.encode(PREFIX, add_special_tokens=False)) + len(tok.encode(SUFFIX, add_special_tokens=False))

        def text_length(instr: str, query: str) -> int:
            # the middle is cut from its end; the space after "<Document>:" joins the document's first token
            return frame + len(tok.encode(format_pair(instr, query, "").rstrip(), add_special_tokens=False))

        length, default = text_length, DEFAULT_INSTRUCTION
        closing = 0
    else:
        from omniret.base.vl_inputs import Qwen3VLInputBuilder, TextPart, VLOptions
        from omniret.rerank.qwen3_vl import DEFAULT_INSTRUCTION as VL_INSTRUCTION
        from omniret.rerank.qwen3_vl import KEEP_LAST, SYSTEM_PROMPT

        builder = Qwen3VLInputBuilder(source, VLOptions(max_length=1 << 30))

        def vl_length(instr: str, query: str) -> int:
            user = [TextPart("<Instruct>: " + instr), TextPart("<Query>:"), *([TextPart(query)] if query else []),
                    TextPart("\n<Document>:")]
            return len(builder.encode([("system", [TextPart(SYSTEM_PROMPT)]), ("user", user)]).input_ids)

        length, default = vl_length, VL_INSTRUCTION
        closing = KEEP_LAST  # the closing turn is never cut: a pair keeps max_length tokens before it
    instructions = {ex.instruction or instruction or default for ex in examples}
    prompts = {instr: length(instr, "") for instr in instructions}
    need, instr = max((length(ex.instruction or instruction or default, "".join(ex.query.texts)) - closing + 1,
                       ex.instruction or instruction or default) for ex in examples)
    return prompts[instr], need


def check_max_length(max_length: int, source: str, arch: str, examples: Sequence[TrainExample],
                     instruction: str | None = None) -> None:
    """Refuse a ``max_length`` that cuts some pair before its document: its positive and negatives would be
    the same tokens (a loss stuck at ln 2 for a pointwise pair) and training would learn nothing from it."""
    prompt, smallest = judgement_lengths(source, arch, examples, instruction)
    if max_length < smallest:
        raise ConfigError(f"--max-length {max_length}: the reranker's judgement prompt alone is {prompt} tokens, so "
                          f"pairs would be cut before their document and train on identical positives and "
                          f"negatives; use --max-length {smallest} or more (the prompt plus this data's longest "
                          "query plus one document token)")


def _summarise(summary: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    v = summary.get("validation") or {}
    if v.get("before") is not None:
        metric = v["metric"]
        say(f"validation {metric}: before {v['before'][metric]:.4f} -> best {v['best'][metric]:.4f} "
            f"(step {v['best_step']}; last {v['last'][metric]:.4f}); the best weights were saved")
        first = v.get("first_stage")
        check = v.get("check") or {}
        if first:
            beats = v["best"][metric] > first[metric]
            v["beats_first_stage"] = beats
            if check.get("first_stage"):
                # the validation queries chose the checkpoint; the check queries judge it
                beats = bool(check["beats_first_stage"])
                say(f"check split ({check['queries']} queries no choice saw): {metric} "
                    f"{check['reranker'][metric]:.4f} vs the first stage's {check['first_stage'][metric]:.4f} "
                    f"(validation: {v['best'][metric]:.4f} vs {first[metric]:.4f})")
            where = "on the check split" if check.get("first_stage") else "on validation"
            ours, theirs = (check["reranker"], check["first_stage"]) if check.get("first_stage") \
                else (v["best"], first)
            if beats:
                say(f"the reranker beats the first stage {where}: {metric} {ours[metric]:.4f} vs {theirs[metric]:.4f}")
            else:
                say(f"[bold red]WARNING: the trained reranker does NOT beat the first stage {where} "
                    f"({metric} {ours[metric]:.4f} vs {theirs[metric]:.4f}); reranking with it will not "
                    "improve search[/bold red]")
    return summary


def _dispatch(cfg: TrainConfig, examples: Sequence[TrainExample], arch: str, val: Any,
              say: Callable[[str], None], ctx: DistContext, check: Any = None) -> dict[str, Any]:
    if cfg.stage == "rerank":
        if arch == "qwen3_vl":
            from omniret.training.vl_trainer import train_vl_reranker

            return train_vl_reranker(cfg, examples, val=val, log=say)
        if arch == "qwen3_text":
            from omniret.training.vl_trainer import train_text_reranker

            return train_text_reranker(cfg, examples, val=val, log=say)
        if arch in ("cross_encoder", "sentence_transformers"):
            from omniret.training.st_trainer import train_cross_encoder

            return train_cross_encoder(cfg, examples, val=val, log=say)
        raise ConfigError(f"{cfg.model}: cannot train a {arch} checkpoint as a reranker")
    scores = None
    teacher_check: dict[str, Any] = {}
    if cfg.stage == "distill":
        k = min(len(ex.negatives) for ex in examples)
        if k == 0:
            raise ConfigError("distillation needs negatives for every example; mine them first (omniret mine)")
        k = min(k, max(cfg.hard_negatives or 0, 1))
        if all(ex.scores is not None for ex in examples):
            scores = [list(ex.scores[:k + 1]) for ex in examples]  # type: ignore[index]
        else:
            if cfg.teacher is None:
                raise ConfigError("distillation needs --teacher (a reranker) or 'scores' in every data line")
            from omniret.rerank import load_reranker

            teacher = load_reranker(cfg.teacher, device=cfg.device)
            cfg = cfg.model_copy(update={"teacher_temperature": teacher_temperature(cfg, teacher, say)})
            if val is not None and ctx.is_main:
                teacher_check = check_teacher(cfg, teacher, val, say)
                if check is not None:
                    teacher_check["check"] = check_teacher(cfg, teacher, check, say, where="the check split")
            scores = _sharded_teacher_logits(teacher, examples, k, ctx)
    if cfg.stage == "distill" and cfg.teacher_temperature is None:
        cfg = cfg.model_copy(update={"teacher_temperature": 1.0})
    if arch == "sentence_transformers":
        from omniret.training.st_trainer import train_st_embedder

        out = train_st_embedder(cfg, examples, scores, val=val, log=say)
    elif arch == "qwen3_vl":
        from omniret.training.vl_trainer import train_vl_embedder

        out = train_vl_embedder(cfg, examples, scores, val=val, log=say)
    elif arch == "qwen3_text":
        from omniret.training.vl_trainer import train_text_embedder

        out = train_text_embedder(cfg, examples, scores, val=val, log=say)
    else:
        raise ConfigError(f"{cfg.model}: training a {arch} embedder is not supported; use a Qwen3-VL, Qwen3 or "
                          "sentence-transformers checkpoint")
    if teacher_check and out.get("validation"):
        out["validation"]["teacher"] = teacher_check
        if ctx.is_main:
            _record_check(cfg, teacher_check, key="teacher")
    return out


def teacher_temperature(cfg: TrainConfig, teacher: Any, say: Callable[[str], None]) -> float:
    """``cfg.teacher_temperature``, or when unset the one that puts the teacher on the student's scale.

    An anchored reranker's logit is ``scale · cos + bias + correction``: divided by ``scale · T_s`` its
    retriever term is the student's own ``cos / T_s``, so a correction of zero leaves a student that is the
    teacher's retriever where it is. Kept at 1.0, a teacher fitted at a softer scale than ``1 / T_s`` pulls
    the student's similarities together and lowers it (measured on WordNet: 0.601 -> 0.579 nDCG@10 with a
    teacher identical to the student). Other rerankers' logits are used as they are.
    """
    from omniret.rerank.anchored import AnchoredReranker

    if cfg.teacher_temperature is not None:
        return cfg.teacher_temperature
    if isinstance(teacher, AnchoredReranker):
        t = teacher.scale * cfg.student_temperature
        say(f"teacher temperature {t:.3f}: the anchored teacher's scale {teacher.scale:.2f} x the student "
            f"temperature {cfg.student_temperature}, so its retriever term matches the student's scale")
        return t
    return 1.0


def check_teacher(cfg: TrainConfig, teacher: Any, val: Any, say: Callable[[str], None],
                  where: str = "validation") -> dict[str, Any]:
    """The teacher reranking the student's top candidates on held-out queries (``val``: the validation set,
    or the check split, which chose no checkpoint), against the student alone: distillation can only lift
    the student toward a teacher that beats it. Warns when it does not."""
    from omniret.training.st_trainer import first_stage_for
    from omniret.training.validation import reranker_metrics

    first = first_stage_for(cfg.model_copy(update={"retriever": cfg.model}), val, source_is_embedder=True)
    m = reranker_metrics(val, first, lambda q, docs, instr: teacher.score(q, list(docs), instruction=instr),
                         instruction=cfg.instruction)
    metric = cfg.eval_metric
    beats = m[metric] > first.metrics[metric]
    if beats:
        say(f"teacher check: the teacher reranking the student's top {cfg.eval_depth} scores {metric} "
            f"{m[metric]:.4f} vs the student's {first.metrics[metric]:.4f} on {where} ({len(val)} queries)")
    else:
        say(f"[bold red]WARNING: the teacher does NOT beat the student on {where} ({metric} {m[metric]:.4f} vs "
            f"{first.metrics[metric]:.4f}); distilling it will not lift the student[/bold red]")
    return {"teacher": m, "student": first.metrics, "beats_student": beats}
