"""``omniret embed`` and ``omniret models``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from omniret.cli._app import (
    DeviceOpt,
    DevicesOpt,
    DimOpt,
    DtypeOpt,
    InferenceBackendOpt,
    InstructionOpt,
    ModelOpt,
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


def read_items_jsonl(path: Path) -> list[dict[str, Any]]:
    """Items from a JSONL file: each line a reference-style dict or a JSON string; media paths are
    resolved relative to the file."""
    from omniret.errors import ItemError
    from omniret.jsonl import iter_jsonl, resolve_media

    items: list[dict[str, Any]] = []
    for lineno, obj in iter_jsonl(path, strings_as_text=True, error=ItemError):
        for key in ("image", "video"):
            obj[key] = resolve_media(obj.get(key), path.parent)
        obj.setdefault("id", str(lineno))
        items.append(obj)
    return items


def _embed_all(embedder: Any, items: list[dict[str, Any]], *, batch_size: int, instruction: str | None,
               dim: int | None, skip_errors: bool) -> tuple[Any, list[dict[str, Any]], list[Any]]:
    """Embed in chunks with a progress bar (an ``EmbedderPool`` keeps two chunks per device in flight)."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from omniret.embed.protocol import EmbedResult
    from omniret.errors import ItemFailure

    vectors: list[Any] = []
    kept: list[dict[str, Any]] = []
    failures: list[ItemFailure] = []
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("embed", total=len(items))
        chunks = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
        # the next chunk's media decode overlaps this chunk's forward
        results: Iterator[EmbedResult] = embedder.embed_chunks(chunks, instruction=instruction, dim=dim)
        for n, result in enumerate(results):
            start, chunk = n * batch_size, chunks[n]
            if result.failures and not skip_errors:
                f = result.failures[0]
                fail(f"item {start + f.index} (id={f.id!r}): {f.reason}", hint="add --skip-errors to embed the rest")
            for f in result.failures:
                f.index += start
                failures.append(f)
            vectors.append(result.vectors)
            kept.extend(chunk[i] for i in result.indices)
            progress.advance(task, len(chunk))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim or embedder.dim), dtype=np.float32)
    return matrix, kept, failures


@app.command()
@handles_errors
def embed(
    text: Annotated[list[str] | None, typer.Argument(help="Texts to embed (one item each).")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image or PDF file(s), one item each.")] = None,
    video: Annotated[list[Path] | None, typer.Option("--video", help="Video file(s), one item each.")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-f", help="JSONL file of items.")] = None,  # noqa: A002
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write: .npy or .jsonl.")] = Path("embeddings.npy"),
    old_output: Annotated[Path | None, typer.Option("--output", hidden=True)] = None,
    model: ModelOpt = None,
    instruction: InstructionOpt = None,
    dim: DimOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Items per call to the model.")] = 32,
    skip_errors: Annotated[bool, typer.Option("--skip-errors", help="Embed the good items, report the bad.")] = False,
    device: DeviceOpt = None,
    devices: DevicesOpt = None,
    dtype: DtypeOpt = None,
    backend: InferenceBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Embed items (text arguments, --image/--video files, or a JSONL file) to .npy or JSONL."""
    import numpy as np

    from omniret.base.media import pdf_page_items
    from omniret.embed import load_embedder
    from omniret.embed.pool import load_embedder_on, parse_devices

    devs = parse_devices(devices)
    if devs is not None and device is not None:
        fail("--device and --devices: give one (--devices cuda:0,cuda:1 runs a worker per device)")

    items: list[dict[str, Any]] = [{"text": t, "id": f"text:{i}"} for i, t in enumerate(text or [])]
    for p in image or []:
        if p.suffix.lower() == ".pdf":
            items.extend(it.to_dict() for it in pdf_page_items(p))
        else:
            items.append({"image": str(p), "id": str(p)})
    items.extend({"video": str(p), "id": str(p)} for p in video or [])
    if input is not None:
        items.extend(read_items_jsonl(input))
    if not items:
        fail("nothing to embed", hint='omniret embed "some text"  or  omniret embed --input items.jsonl')
    output = renamed(output, old_output, new="--out", old="--output", default=Path("embeddings.npy"))
    if output.suffix not in {".npy", ".jsonl"}:
        fail(f"--out {output}: use a .npy or .jsonl file name")

    settings = cli_settings()
    opts = model_options(settings, backend, quantize)
    embedder: Any = (load_embedder_on(model or settings.embed_model, devs, dtype=dtype or settings.dtype, **opts)
                     if devs is not None
                     else load_embedder(model or settings.embed_model, device=device or settings.device,
                                        dtype=dtype or settings.dtype, **opts))
    report_backend(embedder, "embedding model")
    try:
        matrix, kept, failures = _embed_all(embedder, items, batch_size=batch_size, instruction=instruction, dim=dim,
                                            skip_errors=skip_errors)
    finally:
        close = getattr(embedder, "close", None)
        if callable(close):
            close()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npy":
        np.save(output, matrix)
    else:
        with output.open("w", encoding="utf-8") as f:
            for it, vec in zip(kept, matrix, strict=True):
                f.write(json.dumps({"id": it.get("id"), "embedding": vec.tolist()}) + "\n")
    for fl in failures:
        err_console.print(f"[yellow]skipped[/] item {fl.index} (id={fl.id!r}): {fl.reason}", highlight=False)
    console.print(f"wrote {matrix.shape[0]} x {matrix.shape[1]} vectors to {output}"
                  + (f" ({len(failures)} skipped)" if failures else ""))


@app.command()
def models(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the known models, their modalities and Matryoshka dims."""
    from omniret.registry import list_models

    specs = list_models()
    if json_out:
        console.print_json(json.dumps([
            {"name": s.name, "kind": s.kind, "arch": s.arch, "modalities": list(s.modalities), "dim": s.dim,
             "dims": list(s.dims), "max_length": s.max_length, "aliases": list(s.aliases),
             "local_path": s.path} for s in specs]))
        return
    table = Table(title="omniret models")
    for col in ("name", "kind", "modalities", "dim", "Matryoshka dims", "aliases"):
        table.add_column(col)
    for s in specs:
        table.add_row(s.name, s.kind, ", ".join(s.modalities), str(s.dim or "-"),
                      ", ".join(map(str, s.dims)) if len(s.dims) > 1 else "-", ", ".join(s.aliases))
    console.print(table)
