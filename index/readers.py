"""Reading: which files a run indexes, and how one file becomes items.

- ``discover`` lists the sources under folders or files (hidden ones left out); a ``.jsonl`` file named
  directly is a manifest of items or of files.
- ``FileReader`` turns a source into ``(id, Item, payload)`` entries: text (.txt .md .html .json, code,
  ...) chunked by tokens with overlap; an image, one item; a PDF, one item per page (the page image for
  multimodal models, its text layer for text-only ones); a video, one item per ``segment_seconds`` span.
- Ids come from the source (its path relative to the indexed folder) and the location:
  ``a/b.md#chunk=3``, ``x.pdf#page=2``, ``clip.mp4#t=10-20``, ``img.png``.
- A file that is not for this model raises ``SkipFile``; a broken one (corrupt, truncated, encrypted,
  empty, undecodable) an ``ItemError`` naming it. Every executor reads files with this module.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from omniret.base.models import find_tokenizer
from omniret.errors import ItemError
from omniret.index.chunking import Chunker, html_to_text
from omniret.index.ledger import Source
from omniret.index.protocol import Payload
from omniret.jsonl import iter_jsonl, resolve_media
from omniret.types import IMAGE_SUFFIXES, JSON, Item

#: one item read from a source: its id, the item to embed, and the payload stored beside its vector
Entry = tuple[str, Item, Payload]

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
    """How files become items (chunks, segments, page scale), how many items a batch holds, and whether
    the run prunes the files no longer on disk."""

    chunk_tokens: int = 200
    chunk_overlap: int = 40
    segment_seconds: float = 10.0
    pdf_scale: float = 2.0
    batch_items: int = 64
    prune: bool = False


class ModelTraits(Protocol):
    """What reading needs of the model: its name (for messages), what it embeds, and (looked up by
    ``find_tokenizer``) the tokenizer that chunks text. An ``Embedder`` has them; so has a Ray reading
    actor's stand-in, which holds no weights."""

    @property
    def name(self) -> str: ...

    @property
    def modalities(self) -> frozenset[str]: ...


class SkipFile(Exception):  # noqa: N818 - a signal, not an error: the file is skipped with a reason
    """The file is not for this model (e.g. video with a text-only model); reported as skipped."""


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
                out.extend(read_item_manifest(p))
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


def read_item_manifest(path: Path) -> list[Source]:
    """A JSONL manifest's sources: its item lines as one source (keyed by the manifest's name), and each
    ``{"path": ...}`` line as the file it names (relative to the manifest's folder)."""
    items: list[dict[str, JSON]] = []
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


class FileReader:
    """Turns one source into ``(id, Item, payload)`` entries for a model (what it embeds, its tokenizer)."""

    def __init__(self, model: ModelTraits, options: IngestOptions, *, private_tokenizer: bool = False) -> None:
        self.model = model
        self.modalities = frozenset(model.modalities)
        self.options = options
        tok = find_tokenizer(model)
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

    def read(self, src: Source, sha: str) -> list[Entry]:
        if src.manifest_items is not None:
            return self._manifest(src, sha)
        kind = self.kind_of(src.path)
        if kind is None:
            raise SkipFile(f"unsupported file type {src.path.suffix or '(none)'}")
        if src.path.stat().st_size == 0:
            raise ItemError(f"{src.key}: empty file")
        base: Payload = {"source": src.key, "path": str(src.path), "kind": kind, "sha256": sha}
        if kind == "text":
            return self._text(src, base)
        if kind == "image":
            return self._image(src, base)
        if kind == "pdf":
            return self._pdf(src, base)
        return self._video(src, base)

    def _text(self, src: Source, base: Payload) -> list[Entry]:
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

    def _image(self, src: Source, base: Payload) -> list[Entry]:
        if "image" not in self.modalities:
            raise SkipFile(f"model {self.model.name} cannot embed images (text-only)")
        return [(src.key, Item(image=str(src.path)), {**base, "image": str(src.path)})]

    def _pdf(self, src: Source, base: Payload) -> list[Entry]:
        from omniret.base.media import pdf_page_items

        multimodal = "image" in self.modalities
        pages: list[Item] = []
        if multimodal:
            pages = pdf_page_items(src.path, scale=self.options.pdf_scale)
            texts = [str(p.metadata.get("text", "")) for p in pages]
        else:
            texts = _pdf_texts(src)
        out: list[Entry] = []
        for n, text in enumerate(texts, 1):
            text = text.strip()
            payload = {**base, "page": n, "num_pages": len(texts), "text": text}
            if multimodal:
                out.append((f"{src.key}#page={n}", Item(image=pages[n - 1].image), payload))
            elif text:
                out.append((f"{src.key}#page={n}", Item(text=text), payload))
        if not out:
            raise SkipFile(f"PDF has no text layer and model {self.model.name} is text-only")
        return out

    def _video(self, src: Source, base: Payload) -> list[Entry]:
        if "video" not in self.modalities:
            raise SkipFile(f"model {self.model.name} cannot embed video (text-only)")
        from omniret.base.media import probe_video

        info = probe_video(src.path, item_id=src.key)
        if info.duration <= 0 or info.num_frames <= 0:
            raise ItemError(f"{src.key}: video has no frames")
        seg = self.options.segment_seconds
        out: list[Entry] = []
        start = 0.0
        while start < info.duration - 1e-6:
            end = min(start + seg, info.duration)
            sid = f"{src.key}#t={start:g}-{end:g}"
            out.append((sid, Item(video=str(src.path), video_start=start, video_end=end),
                        {**base, "video": str(src.path), "video_start": start, "video_end": end,
                         "start": start, "end": end}))
            start = end
        return out

    def _manifest(self, src: Source, sha: str) -> list[Entry]:
        out: list[Entry] = []
        for i, d in enumerate(src.manifest_items or []):
            item = Item.from_dict(d, index=i)
            payload: Payload = {**item.metadata, "source": src.key, "path": str(src.path), "kind": "item",
                                "sha256": sha}
            for key in ("text", "image", "video", "video_start", "video_end"):
                v = getattr(item, key)
                if isinstance(v, (str, int, float)):
                    payload[key] = v
            out.append((str(item.id), item, payload))
        return out


def _pdf_texts(src: Source) -> list[str]:
    """The text layer of every page, without rendering (text-only models)."""
    import pypdfium2 as pdfium  # pyright: ignore[reportMissingTypeStubs] - it ships no stubs; its source types it

    try:
        doc = pdfium.PdfDocument(str(src.path))
    except pdfium.PdfiumError as e:
        reason = "encrypted; pass the password" if "password" in str(e).lower() else f"cannot open ({e})"
        raise ItemError(f"{src.key}: PDF {reason}") from e
    try:
        texts: list[str] = []
        for page in doc:
            tp = page.get_textpage()
            try:
                texts.append(str(tp.get_text_range()))
            finally:
                tp.close()
                page.close()
        return texts
    finally:
        doc.close()
