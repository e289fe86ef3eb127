"""Helpers for the indexing tests: the corpus they index, how they compare two collections (items, vectors,
payloads and ledgers), and the kill-and-re-run checks (a pool worker, the coordinator, a Ray driver).

A helper module, as ``media_files.py``: plain ``pytest`` puts ``tests/`` on ``sys.path`` (no package
there), so ``from index_runs import ...`` works however the suite is started; ``from tests.index_runs``
would only work under ``python -m pytest``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omniret.index import Collection, open_collection

DOCS = {
    "plants/photosynthesis.txt": "Photosynthesis lets green plants convert sunlight, water and carbon dioxide "
                                 "into glucose and oxygen inside their chloroplasts.",
    "space/mars.md": "# Mars\nMars is the fourth planet from the Sun, a cold desert world with a thin "
                     "atmosphere and the tallest volcano in the solar system, Olympus Mons.",
    "cooking/bread.html": "<html><head><style>p{}</style><script>var x=1;</script></head><body><h1>Bread"
                          "</h1><p>Knead the dough, let the yeast make it rise, then bake the loaf in a hot "
                          "oven until the crust is golden.</p></body></html>",
    "finance/interest.txt": "Compound interest means a bank account earns interest on the interest it has "
                            "already earned, so savings grow exponentially over the years.",
    "code/sort.py": "def quicksort(xs):\n    \"\"\"Sort a list by partitioning around a pivot.\"\"\"\n"
                    "    if len(xs) < 2:\n        return xs\n",
}


def write_text_pdf(path: Path, pages: list[str]) -> None:
    """A minimal valid PDF whose pages carry a text layer (Helvetica text objects)."""
    objs: list[str | None] = ["<< /Type /Catalog /Pages 2 0 R >>", None,
                              "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 14 Tf 20 100 Td ({text}) Tj ET"
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents {len(objs)} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def write_video(path: Path, seconds: int = 3, fps: int = 8) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (i * 10) % 255, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_corpus(root: Path) -> Path:
    """Text, images, a PDF and a video: every kind of item ingestion makes."""
    from PIL import Image

    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "long.md").write_text(" ".join(f"sentence {i} says something about item {i % 13}." for i in range(300)))
    (root / "media").mkdir()
    for name, rgb in {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items():
        Image.new("RGB", (64, 48), rgb).save(root / "media" / f"{name}.png")
    write_text_pdf(root / "media" / "science.pdf", ["Volcanoes erupt molten lava from the mantle",
                                                    "Glaciers carve valleys out of solid rock"])
    write_video(root / "media" / "clip.mp4")
    return root


def collection_vectors(coll: Collection) -> dict[str, np.ndarray]:
    ids = coll.store.ids()
    assert len(ids) == len(set(ids))
    return {g["id"]: g["vector"] for g in coll.get(ids)}


def assert_same_collection(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-5, f"vectors differ by {worst}"


def ledger_rows(coll: Collection) -> list[tuple[str, str, str, str, str]]:
    """The collection's ledger as stored: (source key, root, path, sha256, ids as JSON), by key."""
    with sqlite3.connect(f"file:{coll.path / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        return sorted(db.execute("SELECT source, root, path, sha256, ids FROM sources"))


def assert_same_ledger(a: Collection, b: Collection) -> None:
    """Two runs over the same files recorded the same sources, from the same roots, with the same ids."""
    rows_a, rows_b = ledger_rows(a), ledger_rows(b)
    assert rows_a, "nothing was recorded in the ledger"
    assert rows_a == rows_b


def write_numbered_docs(folder: Path, n: int) -> Path:
    """``n`` small distinct text files ``doc000.txt`` ... in a new ``folder``."""
    folder.mkdir()
    for i in range(n):
        (folder / f"doc{i:03d}.txt").write_text(f"document number {i} talks about topic {i % 17} and item {i}")
    return folder


def indexed_sources(ledger: Path) -> int:
    """Source files the ledger has recorded as indexed; -1 while it cannot be read yet (opened read-only, so
    polling never creates the file before the indexer does)."""
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    except sqlite3.Error:
        return -1


def wait_for_sources(ledger: Path, at_least: int, timeout_s: float, running: Callable[[], bool] = lambda: True,
                     poll_s: float = 0.1) -> None:
    """Return once ``at_least`` sources are indexed, the timeout passes, or ``running()`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running():
        time.sleep(poll_s)
        if indexed_sources(ledger) >= at_least:
            return


def assert_rerun_completes(root: Path, docs: Path, n: int, done: int, batch_items: int, torn: int = 0) -> None:
    """A plain re-run of collection ``c`` skips every file its ledger holds, indexes the rest, and holds every
    id once.

    ``done``: the files the ledger was seen to hold after the first run stopped. ``torn``: how many more a
    run killed with SIGKILL may turn out to have committed. The kill can land inside SQLite's COMMIT of one
    ledger transaction (one ``Committer.write``: at most ``--batch-items`` one-item files), after its WAL
    frames were written but before the shared WAL index was updated. Such a commit was never acknowledged,
    and whether a reader sees it depends on whether that reader rebuilds the WAL index: one reader of the
    killed run's ledger saw 20 files, the re-run then found 24 (1 run in 10 under load). Either answer is
    sound, because the items of that batch were upserted before the ledger row: what the test pins is that
    the re-run skips exactly what its own ledger holds, which is ``done`` plus at most that one batch.
    """
    coll = open_collection("c", root=root)
    held = coll.ledger.count()
    assert done <= held <= done + torn, f"{done} files were seen committed, the re-run's ledger holds {held}"
    report = coll.add_files(docs, progress=False, batch_items=batch_items)
    counts = (report.unchanged, report.indexed_files, report.skipped, report.failed)
    assert counts == (held, n - held, [], []), f"the ledger held {held} of {n} files; the re-run did {report.to_dict()}"
    ids = coll.store.ids()
    assert len(ids) == len(set(ids)) == n == coll.count()
    coll.close()
