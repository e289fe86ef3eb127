"""``omniret index``, ``omniret search`` and ``omniret collections list|info|delete``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from omniret.cli._app import (
    CollectionOpt,
    DevicesOpt,
    DimOpt,
    InstructionOpt,
    JsonOpt,
    ModelBackendOpt,
    ModelOpt,
    QuantizeOpt,
    RerankerOpt,
    RootOpt,
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

BackendOpt = Annotated[str | None, typer.Option("--backend", help="faiss (embedded, default) or qdrant.")]
ModeOpt = Annotated[str, typer.Option("--mode", help="First stage: dense (vectors), lexical (BM25 over the "
                                                     "text) or hybrid (both, fused).")]
FusionOpt = Annotated[str, typer.Option("--fusion", help="Hybrid fusion: rrf (reciprocal rank, k=60) or weighted "
                                                         "(min-max-normalised scores, --alpha).")]
AlphaOpt = Annotated[float | None, typer.Option("--alpha", help="Weighted fusion: the dense side's weight in [0, 1] "
                                                                "(default 0.7).")]
QdrantUrlOpt = Annotated[str | None, typer.Option("--qdrant-url", help="Qdrant server/cluster URL (implies "
                                                                        "--backend qdrant).")]

collections_app = typer.Typer(help="List, inspect and delete collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")


@app.command("index")
@handles_errors
def index_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to index (a .jsonl file is a manifest).")],
    collection: CollectionOpt,
    backend: BackendOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    model: ModelOpt = None,
    dim: DimOpt = None,
    root: RootOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="FAISS index: flat, hnsw, ivfpq or sq8.")] = None,
    funnel_dim: Annotated[int | None, typer.Option(
        "--funnel-dim", help="Also keep this Matryoshka prefix (one of the model's dims) for funnel search: "
                             "short-prefix candidates re-scored at full dim. Fixed at creation.")] = None,
    funnel_candidates: Annotated[int | None, typer.Option(
        "--funnel-candidates", help="Funnel pool as a multiple of k (default 10).")] = None,
    chunk_tokens: Annotated[int, typer.Option("--chunk-tokens", help="Text chunk size in tokens.")] = 200,
    chunk_overlap: Annotated[int, typer.Option("--chunk-overlap", help="Tokens shared by neighbouring chunks.")] = 40,
    segment_seconds: Annotated[float, typer.Option("--segment-seconds", help="Video segment length.")] = 10.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Items per embedding call.")] = 64,
    old_batch_items: Annotated[int | None, typer.Option("--batch-items", hidden=True)] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove items of files no longer on disk.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when any file failed.")] = False,
    devices: DevicesOpt = None,
    recall: Annotated[float | None, typer.Option(
        "--recall", help="After indexing, pick the index's search setting (HNSW efSearch, IVF nprobe, re-scoring "
                         "pool) whose recall@10 on a sample of the collection's own vectors reaches this target; "
                         "recorded and applied on every open.")] = None,
    shards: Annotated[int | None, typer.Option(
        "--shards", min=1, help="Qdrant: shards of a new collection (spread over the cluster's nodes).")] = None,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", min=1, help="Qdrant: copies of each shard in a new collection (survives a node loss).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Run as a Ray Data job: alone (last, or before another option) or 'local', on a local Ray cluster; "
             "with auto or ray://HOST:10001, on that cluster (several nodes: use a Qdrant collection, --qdrant-url). Needs pip install 'omniret[ray]'.")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        "--ray-actors", min=1, help="Embedding actors (default: one per GPU, else CPUs - 1).")] = None,
    json_out: JsonOpt = False,
    model_backend: ModelBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Index folders of text, images, PDFs and video into a collection (re-running resumes/updates)."""
    from omniret.embed.pool import load_embedder_on, parse_devices
    from omniret.errors import CollectionNotFound
    from omniret.index import open_collection
    from omniret.index.collection import recorded_model
    from omniret.index.readers import IngestOptions
    from omniret.index.tuning import check_recall

    devs = parse_devices(devices)  # these checks come before any model loads or file is read
    check_recall(recall)
    if ray is not None:
        from omniret.index.ray_ingest import check_address, import_ray

        if devs is not None:
            fail("--devices and --ray are two ways to scale out: pick one (Ray places its own actors)")
        import_ray()
        check_address(ray)
        devs = ["cpu"]  # the driver loads the model on CPU only for its tokenizer and modalities
    settings = cli_settings()
    opts = IngestOptions(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                         segment_seconds=segment_seconds, prune=prune,
                         batch_items=renamed(batch_size, old_batch_items, new="--batch-size", old="--batch-items",
                                             default=64))
    extra: dict[str, Any] = {"funnel_candidates": funnel_candidates} if funnel_candidates is not None else {}
    if shards is not None or replicas is not None:
        if backend != "qdrant" and qdrant_url is None:
            fail("--shards/--replicas are Qdrant collection settings: add --qdrant-url (or --backend qdrant)")
        extra.update({k: v for k, v in (("shard_number", shards), ("replication_factor", replicas)) if v is not None})
    root = root or settings.collections_path
    mopts = model_options(settings, model_backend, quantize)
    kw: dict[str, Any] = dict(root=root, backend=backend, url=qdrant_url, dim=dim, index=index, funnel_dim=funnel_dim,
                              device=settings.device, dtype=settings.dtype, model_options=mopts, **extra)
    embedder: Any = model
    if devs is not None:
        # the coordinator holds no model: the workers (or the one device) do
        embedder = load_embedder_on(model or recorded_model(collection, root) or settings.embed_model, devs,
                                    dtype=settings.dtype, **mopts)
    try:
        if embedder is None:  # an existing collection loads its recorded model; a new one the configured default
            try:
                coll = open_collection(collection, create=False, **kw)
            except CollectionNotFound:
                coll = open_collection(collection, embedder=settings.embed_model, **kw)
        else:
            coll = open_collection(collection, embedder=embedder, **kw)
    except BaseException:
        _close(embedder)
        raise
    report_backend(coll.embedder, "embedding model")
    try:
        report = coll.add_files(paths, options=opts, progress=not json_out, console=err_console,
                                ray=ray if ray is not None else False, ray_actors=ray_actors)
        total = coll.count()
        tuned = coll.tune(recall) if recall is not None else None
    finally:
        coll.close()
        _close(embedder)
    if json_out:
        console.print_json(json.dumps({**report.to_dict(), "collection": collection, "count": total,
                                       "recall_tuning": tuned.to_dict() if tuned is not None else None}))
    else:
        for src, reason in report.skipped:
            err_console.print(f"[yellow]skipped[/] {src}: {reason}", highlight=False)
        for src, reason in report.failed:
            err_console.print(f"[red]failed[/] {src}: {reason}", highlight=False)
        console.print(f"{collection}: indexed {report.indexed_items} items from {report.indexed_files} files "
                      f"({report.items_per_second:.1f} items/s); {report.unchanged} unchanged, "
                      f"{len(report.skipped)} skipped, {len(report.failed)} failed"
                      + (f", {report.pruned} pruned" if report.pruned else "") + f"; {total} items in total",
                      highlight=False)
        console.print(f"executor: {report.executor.describe()}", highlight=False)
        if tuned is not None:
            what = (f"{tuned.param}={tuned.value}" if tuned.param else "exact search")
            console.print(f"recall tuning: {what} gives recall@{tuned.k} {tuned.recall:.3f} on {tuned.sample} "
                          f"held-out vectors (target {tuned.target:g}" + ("" if tuned.met else ", NOT met") + ")",
                          highlight=False)
    if strict and report.failed:
        raise typer.Exit(2)


def _close(embedder: Any) -> None:
    """Stop an embedder's worker processes (a pool); in-process models need nothing."""
    close = getattr(embedder, "close", None)
    if callable(close):
        close()


@app.command("search")
@handles_errors
def search_cmd(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(help="Query text.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image (alone or with the text).")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Results to return.")] = 10,
    candidates: Annotated[int, typer.Option("--candidates", help="First-stage candidates.")] = 100,
    rerank_top: Annotated[int | None, typer.Option("--rerank-top", help="Candidates to rerank.")] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Vector search only.")] = False,
    reranker: RerankerOpt = None,
    filter: Annotated[list[str] | None, typer.Option("--filter", help="key=value, key=v1,v2, key>=n "  # noqa: A002
                                                                      "(repeatable).")] = None,
    instruction: InstructionOpt = None,
    funnel: Annotated[bool | None, typer.Option(
        "--funnel/--no-funnel", help="Funnel search (short prefix, then full dim); default: on when the "
                                     "collection has a funnel index.")] = None,
    mode: ModeOpt = "dense",
    fusion: FusionOpt = "rrf",
    alpha: AlphaOpt = None,
    root: RootOpt = None,
    json_out: JsonOpt = False,
    model_backend: ModelBackendOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Search a collection: dense, lexical or hybrid first stage, then reranking (unless --no-rerank)."""
    from omniret.index import open_collection
    from omniret.index.filters import parse_filter_args
    from omniret.index.fusion import check_fusion, check_mode
    from omniret.types import Item

    check_mode(mode, field="--mode")
    check_fusion(fusion, alpha, field="--fusion")
    if not text and image is None:
        fail("give a query text and/or --image", hint='omniret search "a question" --collection docs')
    if image is not None and not image.is_file():
        fail(f"--image {image}: no such file")
    flt = parse_filter_args(filter) or None
    settings = cli_settings()
    rr: Any = None
    if not no_rerank:
        rr = reranker or settings.rerank_model or None
    coll = open_collection(collection, root=root or settings.collections_path, create=False, reranker=rr,
                           device=settings.device, dtype=settings.dtype,
                           model_options=model_options(settings, model_backend, quantize))
    try:
        query = Item(text=text or None, image=str(image) if image is not None else None)
        hits = coll.search(query, k=k, filter=flt, rerank=not no_rerank and rr is not None,
                           candidates=candidates, rerank_top=rerank_top, instruction=instruction, funnel=funnel,
                           mode=mode, fusion=fusion, alpha=alpha)
    finally:
        coll.close()
    if json_out:
        console.print_json(json.dumps([h.to_dict() for h in hits]))
        return
    if not hits:
        console.print("no results")
        return
    table = Table(title=f"{collection}: {len(hits)} results ({mode})")
    sides = ("dense", "lexical") if mode == "hybrid" else ()
    for col in ("#", "score", *sides, "rerank", "id", "snippet"):
        table.add_column(col, overflow="fold")

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for i, h in enumerate(hits, 1):
        snippet = str(h.payload.get("text") or h.payload.get("path") or "")
        snippet = " ".join(snippet.split())[:100]
        side_cols = (num(h.dense_score), num(h.lexical_score)) if sides else ()
        table.add_row(str(i), f"{h.score:.3f}", *side_cols, num(h.rerank_score), h.id, snippet)
    console.print(table)


@collections_app.command("list")
@handles_errors
def collections_list(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """List the collections under the root."""
    from omniret.index import list_collections

    rows = list_collections(root or cli_settings().collections_path)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no collections")
        return
    table = Table(title="collections")
    cols = ("name", "model", "dim", "backend", "index", "created")
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*(None if v is None else str(v) for v in (r.get(c, "?") for c in cols)))
    console.print(table)


def _manifest(name: str, root: Path | None) -> dict[str, Any]:
    from omniret.index import list_collections

    for r in list_collections(root or cli_settings().collections_path):
        if r["name"] == name:
            return r
    from omniret.errors import CollectionNotFound

    raise CollectionNotFound(f"no collection {name!r}; see `omniret collections list`")


@collections_app.command("info")
@handles_errors
def collections_info(name: Annotated[str, typer.Argument(help="Collection name.")], root: RootOpt = None,
                     json_out: JsonOpt = False) -> None:
    """Show a collection's model, dim, backend, index and item count (no model is loaded)."""
    from omniret.index.catalog import collection_store
    from omniret.index.ledger import Ledger

    m = _manifest(name, root)
    store = collection_store(name, root or cli_settings().collections_path)
    try:
        info: dict[str, Any] = {**m, "count": store.count(), "store": store.info()}
    finally:
        store.close()
    ledger = Ledger(Path(m["path"]) / "ledger.sqlite")
    info["sources"] = ledger.count()
    ledger.close()
    if json_out:
        console.print_json(json.dumps(info))
        return
    for key in ("name", "model", "dim", "funnel_dim", "backend", "index", "count", "sources", "lexical", "created",
                "path"):
        console.print(f"[bold]{key}[/]: {info.get(key)}", highlight=False)
    tuned = info.get("recall_tuning")
    if tuned:
        what = f"{tuned['param']}={tuned['value']}" if tuned.get("param") else "exact search"
        console.print(f"[bold]recall tuning[/]: {what}, recall@{tuned['k']} {tuned['recall']} on {tuned['sample']} "
                      f"held-out vectors of {tuned.get('count')} (target {tuned['target']})", highlight=False)


@collections_app.command("build-lexical")
@handles_errors
def collections_build_lexical(name: Annotated[str, typer.Argument(help="Collection name.")],
                              root: RootOpt = None) -> None:
    """Build the lexical (BM25) index of a collection made before it existed (resumable; no model loaded)."""
    from omniret.index.catalog import collection_store
    from omniret.index.protocol import LexicalBackfill

    store = collection_store(name, root or cli_settings().collections_path)
    try:
        if not isinstance(store, LexicalBackfill):
            from omniret.errors import ConfigError

            raise ConfigError(f"collection {name!r} is a Qdrant collection: new ones carry the lexical index from "
                              "creation, and an older one cannot gain a sparse vector; re-index it into a new "
                              "collection")
        if store.lexical_ready:
            console.print(f"{name}: the lexical index is complete ({store.lexical_count()} items with text)")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"lexical index of {name}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("lexical", total=None)
            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            added = store.build_lexical(advance)
        console.print(f"{name}: lexical index built ({added} items with text)")
    finally:
        store.close()


@collections_app.command("delete")
@handles_errors
def collections_delete(name: Annotated[str, typer.Argument(help="Collection name.")], root: RootOpt = None,
                       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete a collection and everything in it."""
    from omniret.index import delete_collection

    m = _manifest(name, root)
    if not yes and not typer.confirm(f"delete collection {name!r} ({m.get('model')}, {m['path']})?"):
        raise typer.Exit(1)
    delete_collection(name, root or cli_settings().collections_path)
    console.print(f"deleted {name}")
