"""Ingestion of real generated files (text, HTML, images, PDFs, video, and broken ones) into collections."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from index_runs import DOCS, ledger_rows, write_text_pdf, write_video

from omniret import Item
from omniret.errors import CollectionError, ConfigError, DimensionError, ItemError
from omniret.index import list_collections, open_collection
from omniret.index.chunking import Chunker, html_to_text


def make_mixed_folder(root: Path) -> Path:
    """Good files of every kind plus one of each kind of bad file."""
    from PIL import Image

    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "media").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "media" / "red.png")
    write_text_pdf(root / "media" / "science.pdf", ["Volcanoes erupt molten lava from the mantle",
                                                    "Glaciers carve valleys out of solid rock"])
    write_video(root / "media" / "clip.mp4")
    # the bad ones
    (root / "bad").mkdir()
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good = (root / "media" / "clip.mp4").read_bytes()
    (root / "bad" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    import pypdf

    w = pypdf.PdfWriter(clone_from=str(root / "media" / "science.pdf"))
    w.encrypt("secret", algorithm="RC4-128")
    with (root / "bad" / "locked.pdf").open("wb") as f:
        w.write(f)
    (root / "bad" / "empty.txt").write_bytes(b"")
    (root / "bad" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("never indexed")
    (root / "notes.xyz").write_text("unknown type")
    return root


@pytest.fixture(scope="module")
def minilm(minilm_path: Path):  # noqa: ANN201
    from omniret.embed import load_embedder

    return load_embedder(str(minilm_path))


def test_mixed_folder_text_model(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    folder = make_mixed_folder(tmp_path / "corpus")
    coll = open_collection("mixed", root=tmp_path / "cols", embedder=minilm)
    report = coll.add_files(folder, progress=False)
    failed = dict(report.failed)
    skipped = dict(report.skipped)
    assert set(failed) == {"bad/locked.pdf", "bad/empty.txt", "bad/latin1.txt"}
    assert "encrypted" in failed["bad/locked.pdf"]
    assert failed["bad/empty.txt"] == "empty file"
    assert "not UTF-8" in failed["bad/latin1.txt"]
    assert "cannot embed images" in skipped["media/red.png"] and "cannot embed video" in skipped["media/clip.mp4"]
    assert "unsupported file type .xyz" in skipped["notes.xyz"]
    assert not any(k.startswith(".hidden") for k in [*failed, *skipped])
    assert report.indexed_files == len(DOCS) + 1
    assert coll.count() == report.indexed_items == len(DOCS) + 2
    # the PDF text layer is searchable with a text-only model, page by page
    hit = coll.search("lava coming out of a mountain", k=1)[0]
    assert hit.id == "media/science.pdf#page=1" and hit.payload["page"] == 1
    # HTML tags and scripts are gone from the indexed text
    bread = coll.get(["cooking/bread.html#chunk=0"])[0]["payload"]["text"]
    assert "Knead the dough" in bread and "<p>" not in bread and "var x" not in bread
    # paraphrased queries find their document first
    for query, expected in [("how do leaves make food from light", "plants/photosynthesis.txt#chunk=0"),
                            ("a frozen desert planet with hardly any air", "space/mars.md#chunk=0"),
                            ("earning returns on returns in a savings account", "finance/interest.txt#chunk=0")]:
        assert coll.search(query, k=3)[0].id == expected
    # filters work through the collection
    hits = coll.search("rock", k=5, filter={"kind": "pdf", "page": {"gte": 2}})
    assert [h.id for h in hits] == ["media/science.pdf#page=2"]
    coll.close()


def test_reindex_is_idempotent_and_tracks_changes(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    folder = tmp_path / "docs"
    folder.mkdir()
    for rel, text in list(DOCS.items())[:3]:
        (folder / Path(rel).name).write_text(text)
    coll = open_collection("c", root=tmp_path, embedder=minilm)
    first = coll.add_files(folder, progress=False, chunk_tokens=8, chunk_overlap=2)
    n = coll.count()
    assert first.indexed_files == 3 and n > 3
    again = coll.add_files(folder, progress=False, chunk_tokens=8, chunk_overlap=2)
    assert again.unchanged == 3 and again.indexed_items == 0 and coll.count() == n
    # a changed file replaces its items (fewer chunks now: the stale ones go)
    (folder / "mars.md").write_text("Mars is red.")
    changed = coll.add_files(folder, progress=False, chunk_tokens=8, chunk_overlap=2)
    assert changed.indexed_files == 1 and changed.unchanged == 2 and changed.deleted_items > 0
    mars = [i for i in coll.store.ids() if i.startswith("mars.md")]
    assert mars == ["mars.md#chunk=0"]
    # a removed file stays unless pruned
    (folder / "bread.html").unlink()
    kept = coll.add_files(folder, progress=False, chunk_tokens=8, chunk_overlap=2)
    assert kept.pruned == 0 and any(i.startswith("bread.html") for i in coll.store.ids())
    pruned = coll.add_files(folder, progress=False, chunk_tokens=8, chunk_overlap=2, prune=True)
    assert pruned.pruned == 1 and not any(i.startswith("bread.html") for i in coll.store.ids())
    coll.close()


def test_chunker_windows_and_html() -> None:
    ch = Chunker(size=4, overlap=1)
    text = "one two three four five six seven eight nine"
    chunks = ch.chunks(text)
    assert chunks == ["one two three four", "four five six seven", "seven eight nine"]
    assert all(c in text for c in chunks)
    assert html_to_text("<p>a &amp; b</p><script>x()</script><p>c</p>") == "a & b\nc"
    with pytest.raises(ConfigError, match=r"overlap must be in \[0, 4\)"):
        Chunker(size=4, overlap=4)


def test_collection_guards(tmp_path: Path, minilm, tiny_text_embedding: Path) -> None:  # noqa: ANN001
    coll = open_collection("g", root=tmp_path, embedder=minilm)
    rep = coll.add([Item(text="alpha", id="a"), {"text": "beta", "id": "b"}])
    assert rep.added == 2
    with pytest.raises(ItemError, match="needs an id"):
        coll.add(["no id here"])
    with pytest.raises(ItemError, match="cannot embed image"):
        coll.add([Item(image=str(tmp_path / "x.png"), id="img")])
    skip = coll.add([Item(text="gamma", id="c"), Item(text="   ", id="d")], on_error="skip")
    assert skip.ids == ["c"] and skip.failures[0].id == "d"
    coll.close()
    assert [c["name"] for c in list_collections(tmp_path)] == ["g"]
    with pytest.raises(CollectionError, match="built with model .*minilm.*; opening it with .*qwen3-text-embedding"):
        open_collection("g", root=tmp_path, embedder=str(tiny_text_embedding))
    with pytest.raises(CollectionError, match="stores dim 384, not 128"):
        open_collection("g", root=tmp_path, dim=128)
    with pytest.raises(CollectionError, match="no collection 'nope'"):
        open_collection("nope", root=tmp_path, create=False)
    with pytest.raises(ConfigError, match="url= is for a Qdrant server"):
        open_collection("x", root=tmp_path, backend="faiss", url="http://localhost:6333", embedder=minilm)
    with pytest.raises(ConfigError, match="collection name"):
        open_collection("../escape", root=tmp_path, embedder=minilm)
    with pytest.raises(DimensionError, match="dim=100 is not one of"):
        open_collection("d", root=tmp_path, embedder=minilm, dim=100)
    # without an embedder the recorded model is loaded
    again = open_collection("g", root=tmp_path)
    assert again.embedder.name == minilm.name and again.count() == 3
    assert again.search("alpha", k=1)[0].id == "a"
    again.close()


def test_qdrant_backend_collection(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    folder = tmp_path / "docs"
    folder.mkdir()
    for rel, text in DOCS.items():
        (folder / Path(rel).name).write_text(text)
    coll = open_collection("q", root=tmp_path / "cols", backend="qdrant", embedder=minilm)
    report = coll.add_files(folder, progress=False)
    assert report.indexed_files == len(DOCS) and not report.failed
    assert coll.search("how do leaves make food from light", k=1)[0].id == "photosynthesis.txt#chunk=0"
    assert coll.info()["store"]["backend"] == "qdrant"
    coll.close()
    assert open_collection("q", root=tmp_path / "cols").count() == len(DOCS)


def test_mixed_folder_multimodal_model(tmp_path: Path, tiny_vl_embedding: Path) -> None:
    """With the tiny Qwen3-VL embedder images, PDF pages and video segments are items; broken files fail."""
    folder = make_mixed_folder(tmp_path / "corpus")
    shutil.rmtree(folder / "code")
    coll = open_collection("vl", root=tmp_path / "cols", embedder=str(tiny_vl_embedding))
    report = coll.add_files(folder, progress=False, segment_seconds=2.0)
    failed = dict(report.failed)
    assert set(failed) == {"bad/locked.pdf", "bad/empty.txt", "bad/latin1.txt", "bad/broken.png",
                           "bad/truncated.mp4"}
    assert "encrypted" in failed["bad/locked.pdf"] and "decode" in failed["bad/truncated.mp4"]
    assert "broken.png" in failed["bad/broken.png"] or "image" in failed["bad/broken.png"]
    ids = set(coll.store.ids())
    assert {"media/red.png", "media/science.pdf#page=1", "media/science.pdf#page=2",
            "media/clip.mp4#t=0-2", "media/clip.mp4#t=2-3"} <= ids
    seg = coll.get(["media/clip.mp4#t=2-3"])[0]["payload"]
    assert (seg["start"], seg["end"], seg["kind"]) == (2.0, 3.0, "video")
    page = coll.get(["media/science.pdf#page=2"])[0]["payload"]
    assert "Glaciers" in page["text"]
    # an image query finds the image item first (same input -> same vector)
    assert coll.search(Item(image=str(folder / "media" / "red.png")), k=1)[0].id == "media/red.png"
    coll.close()


def test_ledger_of_an_old_ray_run_is_repaired_so_prune_finds_its_files(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    """Ray runs before one commit path stored every ledger row under root ``.``; opening the collection gives
    them their folder back (from the items' payload paths), so ``prune`` removes a file deleted since."""
    import sqlite3

    folder = tmp_path / "docs"
    folder.mkdir()
    for rel, text in list(DOCS.items())[:3]:
        (folder / Path(rel).name).write_text(text)
    coll = open_collection("c", root=tmp_path / "cols", embedder=minilm)
    coll.add_files(folder, progress=False)
    coll.close()
    expected = ledger_rows(coll)
    assert {r[1] for r in expected} == {str(folder.resolve())}
    # the ledger as the old Ray writer left it: Source(key, Path(""), Path("")) for every row
    with sqlite3.connect(tmp_path / "cols" / "c" / "ledger.sqlite") as db:
        db.execute("UPDATE sources SET root = '.', path = '.'")
    (folder / "mars.md").unlink()
    coll = open_collection("c", root=tmp_path / "cols", embedder=minilm)
    assert ledger_rows(coll) != expected
    report = coll.add_files(folder, progress=False, prune=True)
    assert (report.pruned, report.deleted_items, report.unchanged) == (1, 1, 2)
    assert sorted(coll.store.ids()) == ["bread.html#chunk=0", "photosynthesis.txt#chunk=0"]
    assert ledger_rows(coll) == [r for r in expected if r[0] != "mars.md"]
    coll.close()
