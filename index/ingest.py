"""Ingestion: folders (or a JSONL manifest) of files -> items -> vectors -> a store, idempotently.

- Text (.txt .md .html .json, code, ...) is chunked by tokens with overlap; images are one item; a PDF
  gives one item per page (the page image for multimodal models, its text layer for text-only ones);
  a video gives one item per ``segment_seconds`` span.
- Ids come from the source (path relative to the indexed folder) and the location: ``a/b.md#chunk=3``,
  ``x.pdf#page=2``, ``clip.mp4#t=10-20``, ``img.png``.
- A ledger (SQLite, beside the collection) records each source's sha256 and item ids. Unchanged files
  are skipped; a changed file's items are replaced; a removed file is left alone unless ``prune``.
  The ledger row is committed only after the file's items were upserted, so a killed run is resumed
  by running it again, with no duplicates (ids are deterministic).
- One bad file (corrupt, truncated, encrypted, empty, undecodable) is reported and skipped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.models import find_tokenizer
from omniret.errors import ItemError
from omniret.index.chunking import Chunker, html_to_text
from omniret.jsonl import iter_jsonl, resolve_media
from omniret.types import IMAGE_SUFFIXES, Item

TEXT_SUFFIXES = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".json", ".jsonl", ".csv", ".tsv", ".xml", ".yaml",
    ".yml", ".toml", ".ini", ".cfg", ".tex", ".log",
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".cs", ".rb", ".php", ".swift", ".m", ".sh", ".bash", ".sql", ".r", ".lua", ".pl", ".css", ".vue",
})
PDF_SUFFIXES = frozenset({".pdf"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})


@dataclass
class IngestOptions:
    """How files become items."""

    chunk_tokens: int = 200
    chunk_overlap: int = 40
    segment_seconds: float = 10.0
    pdf_scale: float = 2.0
    batch_items: int = 64
    prune: bool = False


@dataclass
class IngestReport:
    """What a run did: counts, and every skipped or failed file with its reason."""

    indexed_files: int = 0
    indexed_items: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pruned: int = 0
    deleted_items: int = 0
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.indexed_items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"indexed_files": self.indexed_files, "indexed_items": self.indexed_items,
                "unchanged": self.unchanged, "pruned": self.pruned, "deleted_items": self.deleted_items,
                "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
                "failed": [{"source": s, "reason": r} for s, r in self.failed],
                "seconds": round(self.seconds, 3), "items_per_second": round(self.items_per_second, 2)}


@dataclass
class Source:
    """One file to ingest: its key (path relative to the indexed folder, ``/``-separated) and location."""

    key: str
    path: Path
    root: Path
    manifest_items: list[dict[str, Any]] | None = None


class SkipFile(Exception):  # noqa: N818 - a signal, not an error: the file is skipped with a reason
    """The file is not for this model (e.g. video with a text-only model); reported as skipped."""


class Ledger:
    """Per-source sha256 and item ids, in SQLite (WAL); the resume point of ingestion."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS sources (source TEXT PRIMARY KEY, root TEXT NOT NULL, "
                         "path TEXT NOT NULL, sha256 TEXT NOT NULL, ids TEXT NOT NULL, indexed_at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS sources_sha256 ON sources (sha256)")

    def snapshot(self) -> dict[str, tuple[str, str]]:
        """Every source's ``(sha256, ids as JSON)``, read once: the reader thread consults it without
        touching the connection the writer commits through."""
        return {k: (sha, ids) for k, sha, ids in self._db.execute("SELECT source, sha256, ids FROM sources")}

    def get(self, key: str) -> tuple[str, list[str]] | None:
        row = self._db.execute("SELECT sha256, ids FROM sources WHERE source = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def commit(self, rows: Sequence[tuple[Source, str, list[str]]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?)",
                             [(s.key, str(s.root), str(s.path), sha, json.dumps(ids), time.time())
                              for s, sha, ids in rows])
        self._db.execute("COMMIT")

    def source_with(self, sha256: str) -> str | None:
        """A source already indexed with exactly this content (sha256), if any: uploads use it to dedupe."""
        row = self._db.execute("SELECT source FROM sources WHERE sha256 = ? ORDER BY source LIMIT 1",
                               (sha256,)).fetchone()
        return str(row[0]) if row else None

    def under(self, root: Path) -> dict[str, list[str]]:
        """Sources indexed from ``root``, with their ids."""
        return {k: json.loads(ids) for k, ids in
                self._db.execute("SELECT source, ids FROM sources WHERE root = ?", (str(root),))}

    def forget(self, keys: Iterable[str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM sources WHERE source = ?", [(k,) for k in keys])
        self._db.execute("COMMIT")

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def discover(paths: Sequence[str | os.PathLike[str]], *, recursive: bool = True) -> list[Source]:
    """Sources under the given folders/files; hidden files and folders are left out. A ``.jsonl`` file
    named directly is a manifest: each line an item dict or ``{"path": ...}`` (relative to the manifest)."""
    out: list[Source] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder")
        p = p.resolve()
        if p.is_file():
            if p.suffix.lower() == ".jsonl":
                out.extend(_read_manifest(p))
            else:
                out.append(Source(p.name, p, p.parent))
            continue
        walker = p.rglob("*") if recursive else p.glob("*")
        for f in sorted(walker):
            rel = f.relative_to(p)
            if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                continue
            out.append(Source(rel.as_posix(), f, p))
    return out


def _read_manifest(path: Path) -> list[Source]:
    items: list[dict[str, Any]] = []
    files: list[Source] = []
    for lineno, obj in iter_jsonl(path, strings_as_text=True, error=ItemError):
        if set(obj) == {"path"}:
            f = (path.parent / obj["path"]).resolve()
            files.append(Source(Path(obj["path"]).as_posix(), f, path.parent))
        else:
            obj.setdefault("id", f"{path.name}#line={lineno}")
            for key in ("image", "video"):
                obj[key] = resolve_media(obj.get(key), path.parent)
            items.append(obj)
    if items:
        files.insert(0, Source(path.name, path, path.parent, manifest_items=items))
    return files


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileReader:
    """Turns one source into ``(id, Item, payload)`` triples for a given embedder."""

    def __init__(self, embedder: Any, options: IngestOptions, *, private_tokenizer: bool = False) -> None:
        self.embedder = embedder
        self.modalities = frozenset(embedder.modalities)
        self.options = options
        tok = find_tokenizer(embedder)
        if tok is not None and private_tokenizer:
            # a fast tokenizer must not be used from two threads at once; the model thread has its own
            tok = copy.deepcopy(tok)
        self.chunker = Chunker(options.chunk_tokens, options.chunk_overlap, tok)

    def kind_of(self, path: Path) -> str | None:
        s = path.suffix.lower()
        for kind, suffixes in (("text", TEXT_SUFFIXES), ("image", IMAGE_SUFFIXES), ("pdf", PDF_SUFFIXES),
                               ("video", VIDEO_SUFFIXES)):
            if s in suffixes:
                return kind
        return None

    def read(self, src: Source, sha: str) -> list[tuple[str, Item, dict[str, Any]]]:
        if src.manifest_items is not None:
            return self._manifest(src, sha)
        kind = self.kind_of(src.path)
        if kind is None:
            raise SkipFile(f"unsupported file type {src.path.suffix or '(none)'}")
        if src.path.stat().st_size == 0:
            raise ItemError(f"{src.key}: empty file")
        base = {"source": src.key, "path": str(src.path), "kind": kind, "sha256": sha}
        return getattr(self, f"_{kind}")(src, base)

    def _text(self, src: Source, base: dict[str, Any]) -> list[tuple[str, Item, dict[str, Any]]]:
        try:
            text = src.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ItemError(f"{src.key}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        if src.path.suffix.lower() in {".html", ".htm"}:
            text = html_to_text(text)
        chunks = self.chunker.chunks(text)
        if not chunks:
            raise ItemError(f"{src.key}: no text in the file")
        return [(f"{src.key}#chunk={i}", Item(text=c), {**base, "chunk": i, "text": c})
                for i, c in enumerate(chunks)]

    def _image(self, src: Source, base: dict[str, Any]) -> list[tuple[str, Item, dict[str, Any]]]:
        if "image" not in self.modalities:
            raise SkipFile(f"model {self.embedder.name} cannot embed images (text-only)")
        return [(src.key, Item(image=str(src.path)), {**base, "image": str(src.path)})]

    def _pdf(self, src: Source, base: dict[str, Any]) -> list[tuple[str, Item, dict[str, Any]]]:
        from omniret.base.media import pdf_page_items

        multimodal = "image" in self.modalities
        if multimodal:
            pages = pdf_page_items(src.path, scale=self.options.pdf_scale)
            texts = [p.metadata.get("text", "") for p in pages]
        else:
            texts = _pdf_texts(src)
        out = []
        for n, text in enumerate(texts, 1):
            text = text.strip()
            payload = {**base, "page": n, "num_pages": len(texts), "text": text}
            if multimodal:
                out.append((f"{src.key}#page={n}", Item(image=pages[n - 1].image), payload))
            elif text:
                out.append((f"{src.key}#page={n}", Item(text=text), payload))
        if not out:
            raise SkipFile(f"PDF has no text layer and model {self.embedder.name} is text-only")
        return out

    def _video(self, src: Source, base: dict[str, Any]) -> list[tuple[str, Item, dict[str, Any]]]:
        if "video" not in self.modalities:
            raise SkipFile(f"model {self.embedder.name} cannot embed video (text-only)")
        from omniret.base.media import probe_video

        info = probe_video(src.path, item_id=src.key)
        if info.duration <= 0 or info.num_frames <= 0:
            raise ItemError(f"{src.key}: video has no frames")
        seg = self.options.segment_seconds
        out = []
        start = 0.0
        while start < info.duration - 1e-6:
            end = min(start + seg, info.duration)
            sid = f"{src.key}#t={start:g}-{end:g}"
            out.append((sid, Item(video=str(src.path), video_start=start, video_end=end),
                        {**base, "video": str(src.path), "video_start": start, "video_end": end,
                         "start": start, "end": end}))
            start = end
        return out

    def _manifest(self, src: Source, sha: str) -> list[tuple[str, Item, dict[str, Any]]]:
        out = []
        for i, d in enumerate(src.manifest_items or []):
            item = Item.from_dict(d, index=i)
            payload: dict[str, Any] = {**item.metadata, "source": src.key, "path": str(src.path), "kind": "item",
                                       "sha256": sha}
            for key in ("text", "image", "video", "video_start", "video_end"):
                v = getattr(item, key)
                if isinstance(v, (str, int, float)):
                    payload[key] = v
            out.append((str(item.id), item, payload))
        return out


def _pdf_texts(src: Source) -> list[str]:
    """The text layer of every page, without rendering (text-only models)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(src.path))
    except pdfium.PdfiumError as e:
        reason = "encrypted; pass the password" if "password" in str(e).lower() else f"cannot open ({e})"
        raise ItemError(f"{src.key}: PDF {reason}") from e
    try:
        texts = []
        for page in doc:
            tp = page.get_textpage()
            try:
                texts.append(tp.get_text_range())
            finally:
                tp.close()
                page.close()
        return texts
    finally:
        doc.close()


@dataclass
class _Pending:
    src: Source
    sha: str
    old_ids: list[str]
    entries: list[tuple[str, Item, dict[str, Any]]]


@dataclass
class _Event:
    """What the reader thread tells the writer: a batch to embed, a skipped/failed/unchanged file, or the end."""

    kind: str  # "batch" | "skip" | "fail" | "unchanged" | "end" | "error"
    batch: list[_Pending] = field(default_factory=list)
    key: str = ""
    reason: str = ""
    files: int = 0
    error: BaseException | None = None


def ingest(paths: Sequence[str | os.PathLike[str]], *, embedder: Any, store: Any, ledger: Ledger,
           dim: int | None = None, options: IngestOptions | None = None, recursive: bool = True,
           progress: bool = True, console: Any = None) -> IngestReport:
    """Index files into ``store`` (see module docstring); returns what happened, never raises for one file.

    Three stages overlap: a reader thread hashes, reads, chunks and decodes files into batches; the
    embedder runs batch i+1 (in a model thread, or on an ``EmbedderPool``'s device workers, several at
    once) while this thread writes batch i. This thread is the only writer: items are upserted, then the
    ledger row committed, batch by batch in file order, so a kill at any moment loses nothing acknowledged
    and a re-run skips exactly what was committed.
    """
    opts = options or IngestOptions()
    reader = FileReader(embedder, opts, private_tokenizer=True)
    sources = discover(paths, recursive=recursive)
    report = IngestReport()
    t0 = time.perf_counter()
    embed_dim = dim if dim is not None and dim != getattr(embedder, "dim", dim) else None
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
        batch: list[_Pending] = []
        n_items = files = 0
        try:
            for src in sources:
                if stop.is_set():
                    return
                files += 1
                try:
                    sha = sha256_of(src.path)
                    prev = known.get(src.key)
                    if prev is not None and prev[0] == sha:
                        emit(_Event("unchanged", files=1))
                        files -= 1
                        continue
                    entries = reader.read(src, sha)
                    batch.append(_Pending(src, sha, json.loads(prev[1]) if prev else [], entries))
                    n_items += len(entries)
                except SkipFile as e:
                    emit(_Event("skip", key=src.key, reason=str(e), files=1))
                    files -= 1
                except (ItemError, OSError, ValueError) as e:
                    emit(_Event("fail", key=src.key, reason=_reason(e, src.key), files=1))
                    files -= 1
                if n_items >= opts.batch_items:
                    if not emit(_Event("batch", batch=batch, files=files)):
                        return
                    batch, n_items, files = [], 0, 0
            if batch:
                emit(_Event("batch", batch=batch, files=files))
            emit(_Event("end"))
        except BaseException as e:  # noqa: BLE001 - handed to the writer, which raises it
            emit(_Event("error", error=e))

    def write(batch: list[_Pending], result: Any) -> None:
        bad: dict[int, str] = {}
        for f in result.failures:
            bad.setdefault(f.index, f.reason)
        rows = dict(zip(result.indices, range(len(result.indices)), strict=True))
        ids, vecs, payloads, done = [], [], [], []
        pos = 0
        for p in batch:
            span = range(pos, pos + len(p.entries))
            pos += len(p.entries)
            errs = [(i - span.start, bad[i]) for i in span if i in bad]
            if errs:
                where, reason = errs[0]
                loc = p.entries[where][0]
                more = f" (and {len(errs) - 1} more items)" if len(errs) > 1 else ""
                report.failed.append((p.src.key, f"{loc}: {reason}{more}"))
                continue
            for i, (item_id, _, payload) in zip(span, p.entries, strict=True):
                ids.append(item_id)
                vecs.append(result.vectors[rows[i]])
                payloads.append(payload)
            done.append(p)
        if ids:
            store.upsert(ids, np.stack(vecs), payloads)
        stale = [i for p in done for i in set(p.old_ids) - {e[0] for e in p.entries}]
        if stale:
            store.delete(stale)
            report.deleted_items += len(stale)
        if done:
            ledger.commit([(p.src, p.sha, [e[0] for e in p.entries]) for p in done])
        report.indexed_files += len(done)
        report.indexed_items += sum(len(p.entries) for p in done)

    submit, depth, close_embedder = _submitter(embedder, embed_dim)
    bar = _progress(console) if progress else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("indexing", total=len(sources), items=0)
    inflight: deque[tuple[list[_Pending], int, Future[Any]]] = deque()

    def drain_one() -> None:
        batch, files, fut = inflight.popleft()
        write(batch, fut.result())
        if bar is not None:
            bar.update(task, advance=files, items=report.indexed_items)

    thread = threading.Thread(target=read_all, name="omniret-ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            ev = events.get()
            if ev.kind == "end":
                break
            if ev.kind == "error":
                assert ev.error is not None
                raise ev.error
            if ev.kind == "batch":
                items = [e[1] for p in ev.batch for e in p.entries]
                inflight.append((ev.batch, ev.files, submit(items)))
                while len(inflight) >= depth:
                    drain_one()
                continue
            if ev.kind == "unchanged":
                report.unchanged += 1
            elif ev.kind == "skip":
                report.skipped.append((ev.key, ev.reason))
            elif ev.kind == "fail":
                report.failed.append((ev.key, ev.reason))
            if bar is not None:
                bar.update(task, advance=ev.files)
        while inflight:
            drain_one()
        if opts.prune:
            _prune(sources, paths, store, ledger, report)
    finally:
        stop.set()
        thread.join(5)
        for _, _, fut in inflight:
            fut.cancel()
        close_embedder()
        if bar is not None:
            bar.stop()
        report.seconds = time.perf_counter() - t0
    return report


def _submitter(embedder: Any, dim: int | None) -> tuple[Callable[[list[Item]], Future[Any]], int, Callable[[], None]]:
    """How batches reach the model: an ``EmbedderPool`` takes them itself (two per device in flight);
    an in-process embedder runs them one at a time in a model thread, the next one queued behind."""
    from omniret.embed.protocol import SubmitsBatches

    if isinstance(embedder, SubmitsBatches):
        def submit_pool(items: list[Item]) -> Future[Any]:
            return embedder.submit(items, dim=dim)

        return submit_pool, 2 * max(1, len(getattr(embedder, "devices", [1]))), lambda: None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniret-ingest-model")

    def submit_local(items: list[Item]) -> Future[Any]:
        return pool.submit(embedder.embed_partial, items, dim=dim)

    return submit_local, 2, lambda: pool.shutdown(wait=True, cancel_futures=True)


def _reason(e: Exception, key: str) -> str:
    msg = str(e)
    return msg[len(key) + 2:] if msg.startswith(f"{key}: ") else msg


def _prune(sources: list[Source], paths: Sequence[Any], store: Any, ledger: Ledger, report: IngestReport) -> None:
    seen = {s.key for s in sources}
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        if not root.is_dir():
            continue
        gone = {k: ids for k, ids in ledger.under(root).items() if k not in seen}
        if gone:
            ids = [i for v in gone.values() for i in v]
            store.delete(ids)
            ledger.forget(gone)
            report.pruned += len(gone)
            report.deleted_items += len(ids)


def _progress(console: Any) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _Rate(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            el = task.elapsed or 0.0
            items = task.fields.get("items", 0)
            return Text(f"{items} items, {items / el:.1f} items/s" if el > 0 else f"{items} items")

    return Progress(TextColumn("[bold]indexing[/] files"), BarColumn(), MofNCompleteColumn(), _Rate(""),
                    TimeElapsedColumn(), console=console or Console(stderr=True), transient=False)
