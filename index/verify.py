"""Verification of a moved collection: counts, and a sample of items fetched and searched on both sides.

``verify_collections`` compares two collections (a copy with its source); ``verify_archive`` a restored
collection with the snapshot it came from. Every difference is listed in the ``VerifyReport``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.index.archive import read_points
from omniret.index.catalog import existing_collection, open_store
from omniret.index.names import collections_root
from omniret.index.points import payload_rewriter
from omniret.index.protocol import LexicalStore, Payload, PointExport, VectorStore
from omniret.types import Hit


@dataclass
class VerifyReport:
    """What ``verify_collections`` compared and every difference it found."""

    source: str
    dest: str
    counts: tuple[int, int]
    sampled: int = 0
    missing: list[str] = field(default_factory=lambda: [])
    payload_differs: list[str] = field(default_factory=lambda: [])
    vector_differs: list[str] = field(default_factory=lambda: [])
    #: mean share of the source's dense top-k ids the destination returns for the same query vector
    dense_agreement: float | None = None
    #: the same for lexical queries (a few words of each sampled item's own text), where both sides have text
    lexical_agreement: float | None = None

    @property
    def ok(self) -> bool:
        return (self.counts[0] == self.counts[1] and not self.missing and not self.payload_differs
                and not self.vector_differs)

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.counts[0] != self.counts[1]:
            out.append(f"counts differ: {self.source} has {self.counts[0]}, {self.dest} has {self.counts[1]}")
        for what, ids in (("missing", self.missing), ("payload differs", self.payload_differs),
                          ("vector differs", self.vector_differs)):
            if ids:
                out.append(f"{what} for {len(ids)} of {self.sampled} sampled items, e.g. {ids[:3]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": list(self.counts), "ok": self.ok, "problems": self.problems()}


def compare_points(rep: VerifyReport, ids: list[str], vectors: np.ndarray, payloads: Sequence[Payload],
                   other: VectorStore) -> None:
    """Fetch ``ids`` from ``other``; record in ``rep`` which are missing or differ in payload or vector."""
    got = other.get(ids)
    rep.sampled += len(ids)
    for i, vec, pay, g in zip(ids, vectors, payloads, got, strict=True):
        if g is None:
            rep.missing.append(i)
            continue
        if g["payload"] != pay:
            rep.payload_differs.append(i)
        if not np.allclose(g["vector"], vec, atol=1e-5):
            rep.vector_differs.append(i)


def verify_archive(file: Path, header: dict[str, Any], name: str, root: Path) -> VerifyReport:
    """The restored collection ``name`` against the archive ``file`` (its checked ``header``): its count,
    and the first batch's items read back."""
    path, manifest = existing_collection(name, root, say_where=True)
    store = open_store(path, manifest, create=False)
    try:
        rep = VerifyReport(str(file), name, (int(header.get("points", 0)), store.count()))
        rewrite = payload_rewriter(header["source"].get("path"), path)
        for ids, vectors, payloads in read_points(file):
            compare_points(rep, ids, vectors, [rewrite(p) for p in payloads], store)
            break
        return rep
    finally:
        store.close()


def verify_collections(a: str, b: str, *, root: str | os.PathLike[str] | None = None, sample: int = 100,
                       k: int = 10, seed: int = 0) -> VerifyReport:
    """Compare collection ``b`` with ``a``: counts, then ``sample`` of ``a``'s items fetched from ``b``
    (payload and vector) and searched on both sides, dense (the item's vector) and lexical (the first words
    of its text, where both stores are ``LexicalStore``s): the mean share of ``a``'s top-``k`` ids that
    ``b`` also returns."""
    base = collections_root(root)
    pa, ma = existing_collection(a, base, say_where=True)
    pb, mb = existing_collection(b, base, say_where=True)
    sa = open_store(pa, ma, create=False)
    try:
        sb = open_store(pb, mb, create=False)
        try:
            return _compare_stores(VerifyReport(a, b, (sa.count(), sb.count())), sa, sb, payload_rewriter(pa, pb),
                                   sample=sample, k=k, seed=seed)
        finally:
            sb.close()
    finally:
        sa.close()


def _compare_stores(rep: VerifyReport, sa: VectorStore, sb: VectorStore, rewrite: Callable[[Payload], Payload], *,
                    sample: int, k: int, seed: int) -> VerifyReport:
    """Fill ``rep`` from ``sample`` of ``sa``'s items, fetched and searched on both sides."""
    all_ids = sa.ids() if isinstance(sa, PointExport) else []
    rng = np.random.default_rng(seed)
    picked: list[str] = sorted(str(i) for i in rng.choice(all_ids, min(sample, len(all_ids)), replace=False)
                               ) if all_ids else []
    recs = [r for r in sa.get(picked) if r is not None]
    if not recs:
        return rep
    ids = [r["id"] for r in recs]
    vectors = np.stack([r["vector"] for r in recs]).astype(np.float32)
    compare_points(rep, ids, vectors, [rewrite(r["payload"]) for r in recs], sb)
    rep.dense_agreement = agreement(sa.search(vectors, k), sb.search(vectors, k))
    from omniret.index.lexical import payload_text

    texts = [" ".join(payload_text(r["payload"]).split()[:8]) for r in recs]
    texts = [t for t in texts if t]
    if texts and isinstance(sa, LexicalStore) and isinstance(sb, LexicalStore):
        rep.lexical_agreement = agreement(sa.lexical_search(texts, k), sb.lexical_search(texts, k))
    return rep


def agreement(a: list[list[Hit]], b: list[list[Hit]]) -> float:
    """The mean share of each of ``a``'s hit lists that the matching list of ``b`` also holds (1.0 when
    ``a`` found nothing)."""
    shares = [len({h.id for h in x} & {h.id for h in y}) / len(x) for x, y in zip(a, b, strict=True) if x]
    return round(float(np.mean(shares)), 4) if shares else 1.0
