"""Ingestion in this process: folders (or a JSONL manifest) of files -> items -> vectors -> a store.

The ``threads`` and ``pool`` executors. A reader thread hashes each source, skips what the ledger holds
with the same content, reads the rest into items (``omniret.index.readers``) and hands them on in
batches; the embedder runs batch i+1 while this thread commits batch i through the one writer
(``omniret.index.commit.Committer``): items upserted, stale ids deleted, ledger rows committed.

- ``threads``: an in-process ``Embedder`` runs each batch in a model thread, the next one queued behind.
- ``pool``: an ``EmbedderPool`` (``omniret.embed.pool``, one worker process per device) takes the batches
  itself, two per device in flight.

Unchanged files are skipped, a changed file's items are replaced, a removed file is left alone unless
``prune``; a killed run is resumed by running it again, with no duplicates (ids are deterministic). One bad
file is reported and skipped. The Ray executor (``omniret.index.ray_ingest``) feeds the same writer.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from omniret.embed.protocol import Embedder, EmbedResult, ItemLike
from omniret.errors import ItemError, ItemFailure
from omniret.index.commit import (
    Committer,
    EmbeddedFile,
    ExecutorInfo,
    IngestReport,
    file_failure,
    reason_of,
)
from omniret.index.ledger import Ledger, Source, changed, sha256_of
from omniret.index.protocol import VectorStore
from omniret.index.readers import Entry, FileReader, IngestOptions, SkipFile, discover
from omniret.types import Item

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ExecutorInfo", "IngestOptions", "IngestReport", "Ledger", "Source", "discover", "ingest", "sha256_of"]


@runtime_checkable
class BatchPool(Protocol):
    """An embedder that takes batches itself on several devices (``EmbedderPool``): the ``pool`` executor."""

    @property
    def devices(self) -> Sequence[str]: ...

    def submit(self, items: Sequence[ItemLike], *, instruction: str | None = None,
               dim: int | None = None) -> Future[EmbedResult]: ...


@dataclass
class ReadFile:
    """A source read into entries, waiting for its vectors."""

    source: Source
    sha256: str
    old_ids: list[str]
    entries: list[Entry]


@dataclass
class _Event:
    """What the reader thread tells the writer: a batch to embed, a skipped/failed/unchanged file, or the end."""

    kind: Literal["batch", "skip", "fail", "unchanged", "end", "error"]
    batch: list[ReadFile] = field(default_factory=list[ReadFile])
    key: str = ""
    reason: str = ""
    error: BaseException | None = None


def ingest(paths: Sequence[str | os.PathLike[str]], *, embedder: Embedder, store: VectorStore, ledger: Ledger,
           dim: int | None = None, options: IngestOptions | None = None, recursive: bool = True,
           progress: bool = True, console: Console | None = None) -> IngestReport:
    """Index files into ``store`` (see module docstring); returns what happened, never raises for one file.

    ``embedder`` is an in-process model (the ``threads`` executor) or an ``EmbedderPool`` (``pool``);
    the report's ``executor`` says which ran. ``dim``: the collection's Matryoshka width.
    """
    from omniret.index.progress import FileProgress

    opts = options or IngestOptions()
    reader = FileReader(embedder, opts, private_tokenizer=True)
    sources = discover(paths, recursive=recursive)
    report = IngestReport()
    t0 = time.perf_counter()
    embed_dim = dim if dim is not None and dim != embedder.dim else None
    known = ledger.snapshot()
    stop = threading.Event()
    events: queue.Queue[_Event] = queue.Queue(maxsize=4)

    def emit(ev: _Event) -> bool:
        while not stop.is_set():
            try:
                events.put(ev, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read_all() -> None:
        batch: list[ReadFile] = []
        n_items = 0
        try:
            for src in sources:
                if stop.is_set():
                    return
                try:
                    todo = changed(src, known)
                    if todo is None:
                        emit(_Event("unchanged"))
                        continue
                    batch.append(ReadFile(src, todo[0], todo[1], reader.read(src, todo[0])))
                    n_items += len(batch[-1].entries)
                except SkipFile as e:
                    emit(_Event("skip", key=src.key, reason=str(e)))
                except (ItemError, OSError, ValueError) as e:
                    emit(_Event("fail", key=src.key, reason=reason_of(e, src.key)))
                if n_items >= opts.batch_items:
                    if not emit(_Event("batch", batch=batch)):
                        return
                    batch, n_items = [], 0
            if batch:
                emit(_Event("batch", batch=batch))
            emit(_Event("end"))
        except BaseException as e:  # noqa: BLE001 - handed to the writer, which raises it
            emit(_Event("error", error=e))

    submit, depth, close_embedder, report.executor = _executor(embedder, embed_dim)
    bar = FileProgress(len(sources), console=console) if progress else None
    writer = Committer(store, ledger, report, bar)
    inflight: deque[tuple[list[ReadFile], Future[EmbedResult]]] = deque()

    def drain_one() -> None:
        batch, fut = inflight.popleft()
        writer.write(embedded_files(batch, fut.result(), writer))

    thread = threading.Thread(target=read_all, name="omniret-ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            ev = events.get()
            if ev.kind == "end":
                break
            if ev.kind == "error" and ev.error is not None:
                raise ev.error
            if ev.kind == "batch":
                inflight.append((ev.batch, submit([e[1] for f in ev.batch for e in f.entries])))
                while len(inflight) >= depth:
                    drain_one()
            elif ev.kind == "unchanged":
                writer.unchanged()
            elif ev.kind == "skip":
                writer.skipped(ev.key, ev.reason)
            elif ev.kind == "fail":
                writer.failed(ev.key, ev.reason)
        while inflight:
            drain_one()
        if opts.prune:
            writer.prune({s.key for s in sources}, paths)
    finally:
        stop.set()
        thread.join(5)
        for _, fut in inflight:
            fut.cancel()
        close_embedder()
        if bar is not None:
            bar.stop()
        report.seconds = time.perf_counter() - t0
    return report


def embedded_files(batch: Sequence[ReadFile], result: EmbedResult, writer: Committer) -> list[EmbeddedFile]:
    """The files of a batch whose items all got vectors; a file with any failed item is reported failed
    (through ``writer``) and left out whole, so the ledger never records half a file."""
    row_of = {i: r for r, i in enumerate(result.indices)}
    bad: dict[int, ItemFailure] = {}
    for f in result.failures:
        bad.setdefault(f.index, f)
    out: list[EmbeddedFile] = []
    start = 0
    for rf in batch:
        span = range(start, start + len(rf.entries))
        start = span.stop
        ids = [e[0] for e in rf.entries]
        failures = [ItemFailure(i - span.start, bad[i].id, bad[i].reason) for i in span if i in bad]
        if failures:
            writer.failed(rf.source.key, file_failure(ids, failures))
            continue
        out.append(EmbeddedFile(rf.source, rf.sha256, rf.old_ids, ids, result.vectors[[row_of[i] for i in span]],
                                [e[2] for e in rf.entries]))
    return out


def _executor(embedder: Embedder, dim: int | None
              ) -> tuple[Callable[[list[Item]], Future[EmbedResult]], int, Callable[[], None], ExecutorInfo]:
    """How batches reach the model, how many may be in flight, how to stop, and what to report: a pool
    takes them itself (two per device in flight); an in-process embedder runs them one at a time in a
    model thread, the next one queued behind."""
    if isinstance(embedder, BatchPool):
        pool = embedder
        devices = tuple(pool.devices)

        def submit_pool(items: list[Item]) -> Future[EmbedResult]:
            return pool.submit(items, dim=dim)

        return submit_pool, 2 * max(1, len(devices)), lambda: None, ExecutorInfo("pool", devices=devices)
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniret-ingest-model")

    def submit_local(items: list[Item]) -> Future[EmbedResult]:
        return model_thread.submit(embedder.embed_partial, items, dim=dim)

    return (submit_local, 2, lambda: model_thread.shutdown(wait=True, cancel_futures=True),
            ExecutorInfo("threads"))
