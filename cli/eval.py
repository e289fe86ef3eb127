"""``omniret eval mteb|beir|mm``: score models and settings; each writes ``OUT/results.json``."""

from __future__ import annotations

import inspect
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from omniret.cli._app import (
    DeviceOpt,
    DtypeOpt,
    ModelBackendOpt,
    ModelOpt,
    QuantizeOpt,
    RerankerOpt,
    app,
    cli_settings,
    console,
    err_console,
    fail,
    handles_errors,
    model_options,
    report_backend,
)

eval_app = typer.Typer(help="Evaluate: MTEB tasks, local BEIR-format folders, MMEB-style multimodal folders.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")

DimsOpt = Annotated[list[str] | None, typer.Option("--dims", help="Matryoshka dims to sweep: a comma list or "
                                                                  "repeated (default: the model's full dim).")]
RerankTopOpt = Annotated[list[str] | None, typer.Option("--rerank-top", help="Rerank depths N to sweep (comma list or "
                                                                             "repeated); 0 is the first stage alone.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Which qrels split to score.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder for results.json, report.md, plot.png.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="First-stage store: faiss or qdrant (local mode).")]
IndexOpt = Annotated[str, typer.Option("--index", help="FAISS index: flat (exact), hnsw, ivfpq, sq8.")]
KOpt = Annotated[int, typer.Option("--k", help="First-stage depth (and the ranking depth metrics see).")]
MetricsOpt = Annotated[str | None, typer.Option("--metrics", help="Comma list, e.g. ndcg@10,recall@100,mrr@10,map.")]
QueryInstrOpt = Annotated[str | None, typer.Option("--instruction", "-i", help="Task instruction for the queries.")]
RerankInstrOpt = Annotated[str | None, typer.Option("--rerank-instruction", help="Instruction for the reranker.")]
ModesOpt = Annotated[list[str] | None, typer.Option("--mode", help="First-stage modes to sweep: dense, lexical, "
                                                                 "hybrid (comma list or repeated; default dense).")]
FusionOpt = Annotated[list[str] | None, typer.Option("--fusion", help="Hybrid fusions to sweep: rrf (k=60), "
                                                                    "weighted (--alpha); default rrf.")]
AlphaOpt = Annotated[list[str] | None, typer.Option("--alpha", help="Weighted fusion: the dense side's weights "
                                                                   "in [0, 1] to sweep (default 0.7).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Items per embedding call.")]


def _ints(values: list[str] | None, option: str) -> list[int] | None:
    """``["64,128", "256"]`` -> ``[64, 128, 256]``; a bad value fails naming the option."""
    if not values:
        return None
    out: list[int] = []
    for v in values:
        for part in v.split(","):
            if not part.strip():
                continue
            try:
                out.append(int(part))
            except ValueError:
                fail(f"{option} {part!r}: not an integer", hint=f"{option} 64,128,256")
    return out


def _floats(values: list[str] | None, option: str) -> list[float] | None:
    """``["0.3,0.5", "0.7"]`` -> ``[0.3, 0.5, 0.7]``; a bad value fails naming the option."""
    out: list[float] = []
    for part in _names(values):
        try:
            out.append(float(part))
        except ValueError:
            fail(f"{option} {part!r}: not a number", hint=f"{option} 0.3,0.5,0.7")
    return out or None


def _names(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def _command() -> str | None:
    """The command line as typed, when run as ``omniret`` (not under a test runner)."""
    if Path(sys.argv[0]).name != "omniret":
        return None
    return shlex.join(["omniret", *sys.argv[1:]])


def _progress() -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    return bars, update


def _load(model: str | None, reranker: str | None, device: str | None, dtype: str | None,
          model_backend: str | None = None, quantize: str | None = None) -> tuple[Any, Any]:
    from omniret.embed import load_embedder

    settings = cli_settings()
    device, dtype = device or settings.device, dtype or settings.dtype
    opts = model_options(settings, model_backend, quantize)
    emb = load_embedder(model or settings.embed_model, device=device, dtype=dtype, **opts)
    report_backend(emb, "embedding model")
    rr = None
    if reranker:
        from omniret.rerank import load_reranker

        rr = load_reranker(reranker, device=device, dtype=dtype, **opts)
        report_backend(rr, "reranker")
    return emb, rr


def _finish(runs: list[Any], out: Path, *, title: str, main_metric: str) -> None:
    from omniret.evaluation.reports import table_rows, write_report

    paths = write_report(out, runs, main_metric=main_metric, title=title, command=_command())
    header, rows = table_rows(runs)
    # the terminal shows what varies and the per-query cost; report.md has every column
    keep = [i for i, col in enumerate(header)
            if col not in {"backend", "index"} and (not col.endswith(("_s", "_ms_per_query"))
                                                    or col in {"search_ms_per_query", "rerank_ms_per_query"})]
    table = Table(title=title)
    for i in keep:
        col = header[i].replace("_ms_per_query", " ms/q")
        table.add_column(col, justify="left" if col == "task" else "right")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def _sweep_config(dims: list[str] | None, rerank_top: list[str] | None, reranker: str | None, k: int,
                  backend: str, index: str, metrics: str | None, instruction: str | None,
                  rerank_instruction: str | None, batch_size: int, default_metrics: Any,
                  modes: list[str] | None = None, fusion: list[str] | None = None,
                  alpha: list[str] | None = None) -> Any:
    from omniret.errors import ConfigError
    from omniret.evaluation.metrics import check_metrics
    from omniret.evaluation.sweeps import BACKENDS, SweepConfig

    tops = _ints(rerank_top, "--rerank-top") or ([0, min(10, k)] if reranker else [0])
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if any(t > 0 for t in tops) and not reranker:
        raise ConfigError(f"--rerank-top {max(tops)} needs a reranker; pass --reranker PATH")
    chosen = check_metrics(_names([metrics])) if metrics else list(default_metrics)
    return SweepConfig(dims=_ints(dims, "--dims"), rerank_tops=tops, k=k, backend=backend, index=index,
                       metrics=chosen, query_instruction=instruction, rerank_instruction=rerank_instruction,
                       batch_size=batch_size, modes=_names(modes) or ["dense"], fusions=_names(fusion) or ["rrf"],
                       alphas=_floats(alpha, "--alpha"))


def _sweep_command(kind: Literal["beir", "mm"], path_help: str, default_batch: int, doc: str
                   ) -> Callable[..., None]:
    """The ``eval beir`` / ``eval mm`` command: one set of options, one flow (check the options and the
    folder, load the models, run the sweep, write the report); only the dataset reader differs, and only
    ``beir`` sweeps first-stage modes (dense, lexical, hybrid)."""
    def command(
        path: Path,
        model: ModelOpt = None,
        reranker: RerankerOpt = None,
        dims: DimsOpt = None,
        rerank_top: RerankTopOpt = None,
        split: SplitOpt = "test",
        out: OutOpt = Path("eval-out"),
        backend: BackendOpt = "faiss",
        index: IndexOpt = "flat",
        k: KOpt = 100,
        metrics: MetricsOpt = None,
        instruction: QueryInstrOpt = None,
        rerank_instruction: RerankInstrOpt = None,
        batch_size: BatchOpt = default_batch,
        mode: ModesOpt = None,
        fusion: FusionOpt = None,
        alpha: AlphaOpt = None,
        device: DeviceOpt = None,
        dtype: DtypeOpt = None,
        model_backend: ModelBackendOpt = None,
        quantize: QuantizeOpt = None,
    ) -> None:
        from omniret.evaluation.beir import load_beir, run_beir
        from omniret.evaluation.metrics import DEFAULT_METRICS
        from omniret.evaluation.mmeb import MMEB_METRICS, load_mmeb, run_mmeb
        from omniret.evaluation.sweeps import check_modes

        config = _sweep_config(dims, rerank_top, reranker, k, backend, index, metrics, instruction,
                               rerank_instruction, batch_size, DEFAULT_METRICS if kind == "beir" else MMEB_METRICS,
                               modes=mode, fusion=fusion, alpha=alpha)
        check_modes(config)  # a bad --mode, --fusion or --alpha fails before the models load
        # a bad folder fails before the models load
        if kind == "beir":
            load_beir(path, split)
            run, title, main_metric = run_beir, f"BEIR {path.name} ({split})", config.metrics[0]
        else:
            task = load_mmeb(path, split)
            run, title, main_metric = run_mmeb, f"{task.name} ({task.category}, {split})", task.main_metric
        emb, rr = _load(model, reranker, device, dtype, model_backend, quantize)
        bars, update = _progress()
        with bars:
            runs = run(path, emb, rr, split=split, config=config, progress=update)
        _finish(runs, out, title=title, main_metric=main_metric)

    # typer reads the positional argument's help from its annotation, which differs per command, and the
    # options from the signature: an MMEB folder has no lexical first stage, so mm leaves out the mode options
    command.__annotations__["path"] = Annotated[Path, typer.Argument(help=path_help)]
    if kind == "mm":
        sig = inspect.signature(command)
        command.__signature__ = sig.replace(
            parameters=[p for p in sig.parameters.values() if p.name not in {"mode", "fusion", "alpha"}])
    command.__doc__ = doc
    command.__name__ = command.__qualname__ = f"eval_{kind}"
    return handles_errors(command)


eval_beir = eval_app.command("beir")(_sweep_command(
    "beir", "BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.", 32,
    "Score a model on a local BEIR-format dataset: first stage (dense, lexical, hybrid), optional rerank,\n"
    "dims sweep."))
eval_mm = eval_app.command("mm")(_sweep_command(
    "mm", "MMEB-style folder: queries.jsonl, candidates.jsonl, qrels.", 8,
    "Score a model on an MMEB-style multimodal folder (Hit@1 / nDCG@5 / Recall@k as MMEB-V2 reports)."))


@eval_app.command("mteb")
@handles_errors
def eval_mteb(
    tasks: Annotated[list[str], typer.Option("--tasks", "-t", help="mteb task names (comma list or repeated); a "
                                             "BEIR-format folder runs as a local mteb task.")],
    model: ModelOpt = None,
    reranker: RerankerOpt = None,
    dims: DimsOpt = None,
    rerank_top: RerankTopOpt = None,
    split: SplitOpt = "test",
    out: OutOpt = Path("eval-out"),
    instruction: Annotated[str | None, typer.Option("--instruction", "-i", help="Replace the tasks' query "
                                                    "instruction (\"\" for none).")] = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    model_backend: ModelBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Run mteb's own evaluation of an omniret embedder; mteb's result files go under OUT/mteb."""
    from omniret.errors import ConfigError

    if reranker or _ints(rerank_top, "--rerank-top"):
        raise ConfigError("eval mteb scores the embedder with mteb's own retrieval; to measure a reranker use "
                          "`omniret eval beir PATH --reranker ...` on the dataset's BEIR-format files")
    names = _names(tasks)
    if not names:
        fail("no task given", hint="omniret eval mteb --tasks SciFact")
    from omniret.evaluation.mteb_runner import load_mteb, run_mteb

    mteb = load_mteb()
    known = [n for n in names if not Path(n).is_dir()]
    if known:
        try:
            mteb.get_tasks(tasks=known)
        except KeyError as e:
            raise ConfigError(f"mteb does not know task(s) {', '.join(known)} ({e})") from e
    emb, _ = _load(model, None, device, dtype, model_backend, quantize)
    runs = run_mteb(emb, names, out, dims=_ints(dims, "--dims"), split=split, batch_size=batch_size,
                    instruction=instruction)
    if not runs:
        fail(f"mteb returned no scores for split {split!r}", hint="check --split against the task's eval splits")
    _finish(runs, out, title=f"MTEB {', '.join(Path(n).name for n in names)} ({split})", main_metric="main_score")
