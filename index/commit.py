"""The one commit path of ingestion: embedded files in, upserted items and committed ledger rows out.

Every executor (``threads``: a reader thread and a model thread in this process; ``pool``: an
``EmbedderPool``'s device workers; ``ray``: a Ray Data job) ends in the same ``Committer``, in the one
process that writes. For each batch of complete, fully embedded files it

1. upserts their items (ids, vectors, payloads) into the store,
2. deletes the ids a re-indexed file no longer has (fewer chunks, pages or segments than before),
3. commits one ledger row per file, with the folder it was found under (``Source.root``) and its path,
4. counts the report.

Items go in before the ledger rows, so a kill at any moment loses nothing acknowledged and a re-run
skips exactly what was committed (ids are deterministic: nothing is duplicated). ``prune`` deletes the
items of files the ledger holds under an indexed folder that are no longer there.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from omniret.errors import ItemFailure
from omniret.index.ledger import Ledger, LedgerRow, Source
from omniret.index.protocol import Payload, VectorStore
from omniret.types import JSON

if TYPE_CHECKING:
    from omniret.index.progress import FileProgress

ExecutorKind = Literal["threads", "pool", "ray"]


@dataclass(frozen=True)
class ExecutorInfo:
    """Which executor embedded a run's items: ``threads`` (this process), ``pool`` (one worker process per
    device, ``devices``) or ``ray`` (a Ray Data job with ``actors`` embedding actors)."""

    kind: ExecutorKind
    devices: tuple[str, ...] = ()
    actors: int = 0

    def to_dict(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"kind": self.kind}
        if self.kind == "pool":
            out["devices"] = list(self.devices)
        if self.kind == "ray":
            out["actors"] = self.actors
        return out

    def describe(self) -> str:
        """One line for people: ``threads (this process)``, ``pool of 2 workers (cpu, cpu)``, ``ray (1 actor)``."""
        if self.kind == "pool":
            return f"pool of {len(self.devices)} workers ({', '.join(self.devices)})"
        if self.kind == "ray":
            return f"ray ({self.actors} embedding actor{'s' if self.actors != 1 else ''})"
        return "threads (this process)"


@dataclass
class IngestReport:
    """What a run did: counts, every skipped or failed file with its reason, and the executor that ran."""

    indexed_files: int = 0
    indexed_items: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    failed: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])
    pruned: int = 0
    deleted_items: int = 0
    seconds: float = 0.0
    executor: ExecutorInfo = field(default_factory=lambda: ExecutorInfo("threads"))

    @property
    def items_per_second(self) -> float:
        return self.indexed_items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, JSON]:
        return {"indexed_files": self.indexed_files, "indexed_items": self.indexed_items,
                "unchanged": self.unchanged, "pruned": self.pruned, "deleted_items": self.deleted_items,
                "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
                "failed": [{"source": s, "reason": r} for s, r in self.failed],
                "seconds": round(self.seconds, 3), "items_per_second": round(self.items_per_second, 2),
                "executor": self.executor.to_dict()}


@dataclass
class EmbeddedFile:
    """One source file, read and embedded whole: what the committer writes for it.

    ``old_ids``: the ids the ledger held for it before (a changed file's stale ones are deleted).
    """

    source: Source
    sha256: str
    old_ids: Sequence[str]
    ids: list[str]
    vectors: np.ndarray
    payloads: list[Payload]


def file_failure(ids: Sequence[str], failures: Sequence[ItemFailure]) -> str:
    """The reason a file fails when some of its items could not be embedded: the first one, named, and how
    many more (indices of ``failures`` are positions in ``ids``)."""
    first = min(failures, key=lambda f: f.index)
    more = f" (and {len(failures) - 1} more items)" if len(failures) > 1 else ""
    return f"{ids[first.index]}: {first.reason}{more}"


def reason_of(e: Exception, key: str) -> str:
    """An error's text without the ``key: `` prefix a report line already carries."""
    msg = str(e)
    return msg[len(key) + 2:] if msg.startswith(f"{key}: ") else msg


class Committer:
    """The single writer of a run (see module docstring); counts into ``report``."""

    def __init__(self, store: VectorStore, ledger: Ledger, report: IngestReport,
                 progress: FileProgress | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.report = report
        self.progress = progress

    def write(self, files: Sequence[EmbeddedFile]) -> None:
        """Upsert, delete stale ids, commit the ledger rows, count; in that order."""
        if not files:
            return
        ids = [i for f in files for i in f.ids]
        if ids:
            self.store.upsert(ids, np.concatenate([f.vectors for f in files]),
                              [p for f in files for p in f.payloads])
        stale = [i for f in files for i in sorted(set(f.old_ids) - set(f.ids))]
        if stale:
            self.store.delete(stale)
            self.report.deleted_items += len(stale)
        self.ledger.commit([LedgerRow(f.source, f.sha256, f.ids) for f in files])
        self.report.indexed_files += len(files)
        self.report.indexed_items += len(ids)
        self._advance(len(files))

    def unchanged(self) -> None:
        self.report.unchanged += 1
        self._advance(1)

    def skipped(self, key: str, reason: str) -> None:
        self.report.skipped.append((key, reason))
        self._advance(1)

    def failed(self, key: str, reason: str) -> None:
        self.report.failed.append((key, reason))
        self._advance(1)

    def prune(self, seen: Collection[str], paths: Sequence[str | os.PathLike[str]]) -> None:
        """Delete the items of every source recorded under one of the folders ``paths`` whose key was not
        ``seen`` in this run (the file is gone), then forget their rows."""
        for raw in paths:
            root = Path(raw).expanduser().resolve()
            if not root.is_dir():
                continue
            gone = {k: ids for k, ids in self.ledger.under(root).items() if k not in seen}
            if gone:
                ids = [i for v in gone.values() for i in v]
                self.store.delete(ids)
                self.ledger.forget(gone)
                self.report.pruned += len(gone)
                self.report.deleted_items += len(ids)

    def _advance(self, files: int) -> None:
        if self.progress is not None:
            self.progress.advance(files, self.report.indexed_items)
