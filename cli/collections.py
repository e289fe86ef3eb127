"""``omniret collections snapshot|restore|copy|verify``: backups and moves without re-embedding.

Thin commands over ``omniret.index.transfer``; they join the ``collections`` group of ``cli/index.py``.
No model is loaded: the points move as stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from omniret.cli._app import JsonOpt, RootOpt, cli_settings, console, err_console, handles_errors
from omniret.cli.index import BackendOpt, QdrantUrlOpt, collections_app

if TYPE_CHECKING:
    from omniret.index.transfer import TransferReport, VerifyReport

ShardsOpt = Annotated[int | None, typer.Option("--shards", min=1, help="Qdrant server: shards of the new "
                                                                       "collection.")]
ReplicasOpt = Annotated[int | None, typer.Option("--replicas", min=1, help="Qdrant server: copies of each shard.")]
ReplaceOpt = Annotated[bool, typer.Option("--replace", help="Overwrite an existing collection of that name.")]
VerifyOpt = Annotated[bool, typer.Option("--verify/--no-verify", help="Compare counts and a sample of items "
                                                                      "(fetched and searched) at the end.")]
IndexKindOpt = Annotated[str | None, typer.Option("--index-kind", help="FAISS destination: flat, hnsw, ivfpq or sq8 "
                                                                       "(the ANN index is rebuilt and re-tuned).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Points per batch read and written.")]
RecallOpt = Annotated[float | None, typer.Option("--recall", help="Re-tune the destination's index to this "
                                                                  "recall@10 (default: the source's recorded "
                                                                  "target).")]


def _root(root: Path | None) -> Path:
    return root or cli_settings().collections_path


@contextmanager
def _bar(what: str, json_out: bool) -> Generator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr (none with ``--json``); yields the ``progress(done, total)`` callback."""
    if json_out:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("points"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_verify(v: VerifyReport) -> None:
    agree = ", ".join(f"{k} top-10 agreement {x:.3f}" for k, x in (("dense", v.dense_agreement),
                                                                    ("lexical", v.lexical_agreement)) if x is not None)
    state = "[green]verified[/]" if v.ok else "[bold red]differences[/]"
    console.print(f"{state}: counts {v.counts[0]} / {v.counts[1]}, {v.sampled} items compared"
                  + (f", {agree}" if agree else ""), highlight=False)
    for p in v.problems():
        console.print(f"  [red]-[/] {p}", highlight=False)


def _report(r: TransferReport, json_out: bool, line: str) -> None:
    if json_out:
        console.print_json(json.dumps(r.to_dict()))
    else:
        mb = r.bytes / 1e6
        speed = f"{r.points_per_second:,.0f} points/s" + (f", {mb / r.seconds:,.1f} MB/s" if r.bytes and r.seconds
                                                          else "")
        console.print(f"{line} ({r.points} points, {r.files} files, {r.seconds:.1f} s, {speed})", highlight=False)
        if r.tuning and r.tuning.get("skipped"):
            console.print(f"not re-tuned: {r.tuning['skipped']}", highlight=False)
        elif r.tuning:
            console.print(f"re-tuned: {r.tuning.get('param')}={r.tuning.get('value')}, recall@{r.tuning['k']} "
                          f"{r.tuning['recall']} (target {r.tuning['target']})", highlight=False)
        if r.verify is not None:
            _print_verify(r.verify)
    if r.verify is not None and not r.verify.ok:
        raise typer.Exit(2)


@collections_app.command("snapshot")
@handles_errors
def collections_snapshot(
    name: Annotated[str, typer.Argument(help="Collection name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Archive file (default: "
                                                                       "NAME-<UTC time>.omniret.tar here).")] = None,
    batch_size: BatchOpt = 1000,
    server_snapshot: Annotated[bool, typer.Option(
        "--server-snapshot", help="A collection on a Qdrant server: download the server's own point-in-time "
                                  "snapshot (Qdrant's format; restore it with Qdrant's recover API) instead of "
                                  "omniret's archive, which a server does not isolate from live writers.")] = False,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a point-in-time archive of a collection (items, vectors, payloads, ledger, media, manifest)."""
    from omniret.index.transfer import snapshot_collection

    if server_snapshot:
        from omniret.errors import ConfigError
        from omniret.index.catalog import collection_store
        from omniret.index.qdrant_snapshots import download_server_snapshot
        from omniret.index.qdrant_store import QdrantStore

        store = collection_store(name, _root(root))
        try:
            if not isinstance(store, QdrantStore):
                raise ConfigError(f"collection {name!r} is not on Qdrant: --server-snapshot is for a Qdrant "
                                  "server's collections (drop it to write omniret's archive)")
            out = download_server_snapshot(store, output or Path(f"{name}.snapshot"))
        finally:
            store.close()
        if json_out:
            console.print_json(json.dumps({"name": name, "dest": str(out), "kind": "qdrant-server-snapshot"}))
        else:
            console.print(f"wrote {out} (Qdrant server snapshot)")
        return
    with _bar(f"snapshot {name}", json_out) as progress:
        r = snapshot_collection(name, output, root=_root(root), batch_size=batch_size, progress=progress)
    _report(r, json_out, f"wrote {r.dest}")


@collections_app.command("restore")
@handles_errors
def collections_restore(
    archive: Annotated[Path, typer.Argument(help="A snapshot archive.")],
    as_name: Annotated[str | None, typer.Option("--as", help="Restore under this name (default: the "
                                                             "snapshot's).")] = None,
    backend: BackendOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    index_kind: IndexKindOpt = None,
    replace: ReplaceOpt = False,
    verify: VerifyOpt = True,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a collection from a snapshot, in FAISS or Qdrant whichever it came from (checked first)."""
    from omniret.index.transfer import restore_collection

    with _bar(f"restore {archive.name}", json_out) as progress:
        r = restore_collection(archive, name=as_name, root=_root(root), backend=backend, url=qdrant_url,
                               shards=shards, replicas=replicas, index=index_kind,
                               replace=replace, verify=verify, progress=progress)
    _report(r, json_out, f"restored {r.dest}")


@collections_app.command("copy")
@handles_errors
def collections_copy(
    src: Annotated[str, typer.Argument(help="Source collection.")],
    dst: Annotated[str, typer.Argument(help="New collection.")],
    backend: BackendOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    index_kind: IndexKindOpt = None,
    recall: RecallOpt = None,
    replace: ReplaceOpt = False,
    verify: VerifyOpt = True,
    batch_size: BatchOpt = 1000,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy a collection to another backend, server or index kind without re-embedding (resumable: re-run
    the same command after an interruption)."""
    from omniret.index.transfer import copy_collection

    with _bar(f"copy {src} -> {dst}", json_out) as progress:
        r = copy_collection(src, dst, root=_root(root), backend=backend, url=qdrant_url,
                            shards=shards, replicas=replicas, index=index_kind, recall=recall, replace=replace,
                            verify=verify, batch_size=batch_size, progress=progress)
    _report(r, json_out, f"copied {src} -> {dst}" + (f" (resumed after {r.resumed_after})" if r.resumed_after
                                                     else ""))


@collections_app.command("verify")
@handles_errors
def collections_verify(
    a: Annotated[str, typer.Argument(help="Reference collection.")],
    b: Annotated[str, typer.Argument(help="Collection compared with it.")],
    sample: Annotated[int, typer.Option("--sample", min=1, help="Items fetched and searched on both sides.")] = 100,
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare two collections: counts, and a sample of items fetched and searched (dense, lexical) on
    both; exit 2 when they differ."""
    from omniret.index.transfer import verify_collections

    v = verify_collections(a, b, root=_root(root), sample=sample)
    if json_out:
        console.print_json(json.dumps(v.to_dict()))
    else:
        _print_verify(v)
    if not v.ok:
        raise typer.Exit(2)
