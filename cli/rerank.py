"""``omniret rerank``: order candidate items by a cross-encoder's relevance to a query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from omniret.cli._app import (
    DeviceOpt,
    DtypeOpt,
    InferenceBackendOpt,
    InstructionOpt,
    JsonOpt,
    QuantizeOpt,
    app,
    cli_settings,
    console,
    err_console,
    fail,
    handles_errors,
    model_options,
    renamed,
    report_backend,
)

RerankModelOpt = Annotated[str | None, typer.Option("--reranker", help="Reranker: registry name, hub id or path "
                                                                       "(default: OMNIRET_RERANK_MODEL).")]
#: before 0.2 this command's --model/-m named the reranker; -m is the embedding model everywhere else
OldModelOpt = Annotated[str | None, typer.Option("--model", "-m", hidden=True)]


def _query_item(text: str | None, image: Path | None, video: Path | None) -> dict[str, Any]:
    """The query as a reference-style dict; a PDF given as the image means its first page."""
    query: dict[str, Any] = {"id": "query"}
    if text is not None:
        query["text"] = text
    if image is not None:
        if image.suffix.lower() == ".pdf":
            from omniret.base.media import pdf_page_items

            query["image"] = pdf_page_items(image, pages=[1])[0].image
        else:
            query["image"] = str(image)
    if video is not None:
        query["video"] = str(video)
    return query


def _snippet(item: dict[str, Any], width: int = 60) -> str:
    """A short description of a document for the table: its text, else what media it holds."""
    text = item.get("text")
    if isinstance(text, list):
        text = "".join(t for t in cast(list[Any], text) if isinstance(t, str))
    parts: list[str] = []
    for key in ("video", "image"):
        value = item.get(key)
        if value:
            names = cast(list[Any], value) if isinstance(value, list) else [value]
            parts.append(f"[{key}: {', '.join(Path(str(n)).name for n in names[:2])}{' …' if len(names) > 2 else ''}]")
    if text:
        flat = " ".join(str(text).split())
        parts.append(flat if len(flat) <= width else flat[:width - 1] + "…")
    return " ".join(parts) or "NULL"


@app.command()
@handles_errors
def rerank(
    docs: Annotated[Path, typer.Option("--docs", "-d", help="JSONL file of candidate items (one per line).")],
    query: Annotated[str | None, typer.Option("--query", "-q", help="Query text.")] = None,
    query_image: Annotated[Path | None, typer.Option("--query-image", help="Query image (or a PDF: its first page).")] = None,
    query_video: Annotated[Path | None, typer.Option("--query-video", help="Query video file.")] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=0, help="Show only the best N.")] = None,
    model: RerankModelOpt = None,
    old_model: OldModelOpt = None,
    instruction: InstructionOpt = None,
    skip_errors: Annotated[bool, typer.Option("--skip-errors", help="Rank the good candidates, report the bad.")] = False,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: InferenceBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Rerank candidates (a JSONL file of items: text, image, video, any mix) against a query."""
    from omniret.cli.embed import read_items_jsonl
    from omniret.rerank import load_reranker

    if query is None and query_image is None and query_video is None:
        fail("no query", hint='omniret rerank --query "a cat" --docs docs.jsonl')
    if not docs.is_file():
        fail(f"--docs {docs}: no such file", hint="write one item per line, e.g. {\"text\": \"...\"}")
    model = renamed(model, old_model, new="--reranker", old="--model/-m", default=None)
    items = read_items_jsonl(docs)
    q = _query_item(query, query_image, query_video)
    settings = cli_settings()
    name = model or settings.rerank_model
    if not name:
        fail("no reranker configured", hint="omniret rerank --reranker Qwen/Qwen3-VL-Reranker-2B ...")
    reranker = load_reranker(name, device=device or settings.device, dtype=dtype or settings.dtype,
                             **model_options(settings, backend, quantize))
    report_backend(reranker, "reranker")
    with err_console.status(f"scoring {len(items)} candidates"):
        result = reranker.rerank(q, items, top_n, instruction=instruction, skip_errors=skip_errors)

    rows: list[dict[str, Any]] = [{"rank": r + 1, "index": i, "id": items[i].get("id"), "score": float(s)}
            for r, (i, s) in enumerate(zip(result.indices, result.scores, strict=True))]
    if json_out:
        console.print_json(json.dumps({"model": reranker.name, "results": rows,
                                       "failures": [f.to_dict() for f in result.failures]}))
        return
    table = Table(title=f"{reranker.name}: {len(items)} candidates")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("rank", "right"), ("index", "right"), ("id", "left"), ("score", "right"), ("document", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(str(row["rank"]), str(row["index"]), escape(str(row["id"])), f"{row['score']:.4f}",
                      escape(_snippet(items[int(row["index"])])))
    console.print(table)
    for fl in result.failures:
        err_console.print(f"[yellow]skipped[/] item {fl.index} (id={fl.id!r}): {fl.reason}", highlight=False)
