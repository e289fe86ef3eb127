"""The snapshot archive: one plain ``.tar`` with a versioned header, a checksummed table of contents last.

Layout (every member a regular file):

- ``snapshot.json``: ``{"format": "omniret-collection-snapshot", "version": 1, ...}`` and the collection's
  manifest (model, dim, funnel dim, analyser, index kind, tuned search setting), first, so a reader refuses
  a newer format before reading anything else;
- ``points/NNNNNNNN.npy`` and ``points/NNNNNNNN.jsonl``: one batch each, the float32 vectors ``(n, dim)``
  and one ``{"id", "payload"}`` line per row (the lexical index and the funnel prefix are rebuilt from
  these with the recorded analyser and ``funnel_dim``, exactly as the stores build them on upsert);
- ``ledger.sqlite``: the ingestion ledger (which files are indexed, with their hashes);
- ``files/...``: the media files the collection keeps in its own folder (uploads);
- ``toc.json``: every other member's size and sha256, and the point count.

``ArchiveWriter`` writes ``NAME.tmp-<pid>`` and renames it to ``NAME`` only after ``toc.json`` is in
and the file is fsynced: a killed snapshot leaves a ``.tmp-`` file, never an archive that looks valid.
``check_archive`` reads the whole file and refuses a truncated or altered one with one line naming the
member; ``read_archive`` then streams it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from omniret.errors import CollectionError
from omniret.index.protocol import Payload, PointBatch

FORMAT = "omniret-collection-snapshot"
#: the archive format this code writes; it reads this version and older ones
VERSION = 1
HEADER, TOC, LEDGER = "snapshot.json", "toc.json", "ledger.sqlite"
POINTS, FILES = "points/", "files/"


class ArchiveError(CollectionError):
    """An archive that cannot be restored: truncated, altered, not a snapshot, or from a newer format."""


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp(final: Path) -> None:
    """Delete ``FINAL.tmp-<pid>`` files whose writer process is gone (a snapshot that was killed)."""
    for tmp in final.parent.glob(final.name + ".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            continue


class ArchiveWriter:
    """Writes one archive member by member (see module docstring); use as a context manager."""

    def __init__(self, final: Path, header: dict[str, Any]) -> None:
        self.final = Path(final)
        self.tmp = self.final.with_name(f"{self.final.name}.tmp-{os.getpid()}")
        remove_stale_temp(self.final)
        self._file: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._toc: dict[str, dict[str, Any]] = {}
        self.points = 0
        self.bytes = 0
        self._batches = 0
        self.add_bytes(HEADER, json.dumps({"format": FORMAT, "version": VERSION, **header}, indent=2).encode())

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        self._tar.addfile(info, io.BytesIO(data))
        self._toc[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.bytes += len(data)

    def add_file(self, name: str, path: Path) -> None:
        """A file from disk, hashed while it is copied in (never read whole into memory)."""
        h = hashlib.sha256()
        size = path.stat().st_size

        class _Hashing(io.RawIOBase):
            def __init__(self, f: IO[bytes]) -> None:
                self.f = f

            def readable(self) -> bool:
                return True

            def read(self, n: int = -1) -> bytes:
                b = self.f.read(n)
                h.update(b)
                return b

        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(path.stat().st_mtime), 0o644
        with open(path, "rb") as f:
            self._tar.addfile(info, _Hashing(f))
        self._toc[name] = {"size": size, "sha256": h.hexdigest()}
        self.bytes += size

    def add_points(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload]) -> None:
        """One batch of points (two members)."""
        stem = f"{POINTS}{self._batches:08d}"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        self.add_bytes(stem + ".npy", buf.getvalue())
        lines = "".join(json.dumps({"id": i, "payload": p}, ensure_ascii=False) + "\n"
                        for i, p in zip(ids, payloads, strict=True))
        self.add_bytes(stem + ".jsonl", lines.encode())
        self._batches += 1
        self.points += len(ids)

    def commit(self) -> Path:
        """Write the table of contents, fsync, and give the archive its final name."""
        toc = json.dumps({"points": self.points, "members": self._toc}, indent=1).encode()
        info = tarfile.TarInfo(TOC)
        info.size, info.mtime, info.mode = len(toc), int(time.time()), 0o644
        self._tar.addfile(info, io.BytesIO(toc))
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._tar.close()
        with contextlib.suppress(Exception):
            self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()


def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such snapshot file")
    try:
        return tarfile.open(path, mode="r:")
    except tarfile.TarError as e:
        raise ArchiveError(f"{path}: not a snapshot archive ({e})") from e


def read_header(path: Path) -> dict[str, Any]:
    """The archive's ``snapshot.json``, after checking its format and version (nothing else is read)."""
    with _open(path) as tar:
        try:
            first = tar.next()
            f = tar.extractfile(first) if first is not None and first.name == HEADER else None
            data: object = json.loads(f.read()) if f is not None else None
        except (tarfile.TarError, ValueError, OSError) as e:
            raise ArchiveError(f"{path}: unreadable snapshot header ({e})") from e
    header = cast("dict[str, Any]", data) if isinstance(data, dict) else None
    if header is None or header.get("format") != FORMAT:
        raise ArchiveError(f"{path}: not an omniret collection snapshot (no {HEADER} first)")
    version: object = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ArchiveError(f"{path}: snapshot format version {version} is newer than this omniret reads "
                           f"({VERSION}); upgrade omniret to restore it")
    return header


def check_archive(path: Path) -> dict[str, Any]:
    """Read the whole archive and compare each member with the table of contents; returns the header.

    Refuses (``ArchiveError``, one line) a newer format, a truncated file (no table of contents, or a member
    cut short), a member whose sha256 or size differs, and a member missing from or added to the contents.
    """
    header = read_header(path)
    seen: dict[str, dict[str, Any]] = {}
    toc: dict[str, Any] | None = None
    try:
        with _open(path) as tar:
            for m in tar:
                f = tar.extractfile(m)
                if f is None:
                    raise ArchiveError(f"{path}: member {m.name!r} is not a regular file")
                if m.name == TOC:
                    toc = json.loads(f.read())
                    continue
                h, size = hashlib.sha256(), 0
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
                seen[m.name] = {"size": size, "sha256": h.hexdigest()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"{path}: truncated or damaged archive ({e})") from e
    except ValueError as e:
        raise ArchiveError(f"{path}: damaged table of contents ({e})") from e
    if toc is None or not isinstance(toc.get("members"), dict):
        raise ArchiveError(f"{path}: truncated archive (no table of contents {TOC}); take the snapshot again")
    members: dict[str, Any] = toc["members"]
    for name, want in members.items():
        got = seen.get(name)
        if got is None:
            raise ArchiveError(f"{path}: member {name!r} listed in the table of contents is missing (truncated?)")
        if got != want:
            raise ArchiveError(f"{path}: member {name!r} is damaged (sha256 {got['sha256'][:12]}..., expected "
                               f"{str(want.get('sha256'))[:12]}...)")
    extra = sorted(set(seen) - set(members))
    if extra:
        raise ArchiveError(f"{path}: member {extra[0]!r} is not in the table of contents")
    return {**header, "points": int(toc.get("points", 0))}


def read_points(path: Path) -> Iterator[PointBatch]:
    """The archive's point batches, in the order they were written (check it first: ``check_archive``)."""
    with _open(path) as tar:
        pending: dict[str, bytes] = {}
        for m in tar:
            if not m.name.startswith(POINTS):
                continue
            f = tar.extractfile(m)
            assert f is not None  # check_archive refused anything but regular files
            pending[m.name] = f.read()
            stem = m.name.rsplit(".", 1)[0]
            if stem + ".npy" in pending and stem + ".jsonl" in pending:
                vectors = np.load(io.BytesIO(pending.pop(stem + ".npy")), allow_pickle=False)
                rows = [json.loads(line) for line in pending.pop(stem + ".jsonl").decode().splitlines()]
                yield [r["id"] for r in rows], vectors, [r["payload"] for r in rows]


def extract_member(path: Path, name: str, dest: Path) -> bool:
    """Copy member ``name`` to ``dest`` (False when the archive has none)."""
    with _open(path) as tar:
        try:
            m = tar.getmember(name)
        except KeyError:
            return False
        f = tar.extractfile(m)
        if f is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            while chunk := f.read(1 << 20):
                out.write(chunk)
    return True


def extract_files(path: Path, dest: Path) -> int:
    """Copy every ``files/`` member under ``dest`` (names that would leave ``dest`` are refused)."""
    n = 0
    with _open(path) as tar:
        for m in tar:
            if not m.name.startswith(FILES):
                continue
            target = (dest / m.name[len(FILES):]).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise ArchiveError(f"{path}: member {m.name!r} points outside the collection folder")
            f = tar.extractfile(m)
            if f is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
            n += 1
    return n
