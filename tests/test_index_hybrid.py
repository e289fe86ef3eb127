"""Hybrid first stage on both backends: the analyser, the lexical index beside the vectors, fusion, errors.

Real parts only: FAISS stores on disk (SQLite FTS5), Qdrant in local mode, all-MiniLM-L6-v2 for the
collection tests, a child process killed with SIGKILL for crash safety.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from omniret import Item
from omniret.errors import CollectionError, ConfigError, StoreError
from omniret.index import open_collection
from omniret.index.faiss_store import FaissStore
from omniret.index.fusion import rrf, weighted
from omniret.index.lexical import Analyzer, AnalyzerConfig, analyzer
from omniret.index.qdrant_store import QdrantStore
from omniret.index.searcher import first_stage

BACKENDS = ["faiss", "qdrant"]
#: Qdrant twice: RRF fused from the two lists (local mode's default) and by the Query API (a server's)
FUSING = ["faiss", "qdrant", "qdrant-server-fusion"]


def _store(backend: str, tmp_path: Path, dim: int = 8, **kw: Any) -> Any:
    if backend == "faiss":
        return FaissStore(tmp_path / "faiss", dim=dim, **kw)
    options = {"server_fusion": True} if backend == "qdrant-server-fusion" else {}
    return QdrantStore("t", dim=dim, path=":memory:", options=options, **kw)


def _unit(rows: list[list[float]]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------- analyser


def test_analyser_splits_identifiers_folds_case_drops_stop_words_and_stems() -> None:
    a = analyzer()
    assert a.tokens("Calling os.path.join raised E404 in getHTTPResponse") == [
        "call", "os", "path", "join", "ospathjoin", "rais", "e404", "get", "http", "respons", "gethttpresponse"]
    assert a.tokens("snake_case_name") == ["snake", "case", "name", "snakecasename"]
    assert a.tokens("ERR-4012") == ["err", "4012", "err4012"]
    # Unicode: NFKC (the ligature), case folding (ß -> ss), letters of any script
    assert a.tokens("ﬁle STRASSE Straße Ελληνικά") == ["file", "strass", "strass", "ελληνικά"]
    assert a.query_terms("the index indexes indexing") == ["index"]
    plain = Analyzer(AnalyzerConfig(language=None, stopwords=False, split_identifiers=False))
    assert plain.tokens("The getUserId of snake_case") == ["the", "getuserid", "of", "snake", "case"]
    assert AnalyzerConfig.from_dict(a.config.to_dict()) == a.config
    with pytest.raises(ConfigError, match=r"lexical.language='klingon': not a Snowball language"):
        AnalyzerConfig.from_dict({"language": "klingon"})
    with pytest.raises(ConfigError, match=r"lexical: unknown analyser setting\(s\) \['stemmer'\]"):
        AnalyzerConfig.from_dict({"stemmer": "porter"})
    with pytest.raises(ConfigError, match=r"lexical.b=2.0: must be between 0 and 1"):
        AnalyzerConfig.from_dict({"b": 2.0})
    with pytest.raises(ConfigError, match=r"lexical.split_identifiers='yes': must be true or false"):
        AnalyzerConfig.from_dict({"split_identifiers": "yes"})
    with pytest.raises(ConfigError, match=r"lexical.version=1.5: must be an int"):
        AnalyzerConfig.from_dict({"version": 1.5})
    with pytest.raises(ConfigError, match=r"lexical.language=3: not a Snowball language"):
        AnalyzerConfig.from_dict({"language": 3})


# ------------------------------------------------------------------------------------ fusion, by hand

# dense order for the query e0: a > b > c > d > e; lexical order for "zebra": c > a > e (b, d: no zebra)
DOCS = {"a": ([1.0, 0.2, 0, 0, 0, 0, 0, 0], "zebra stripes"),
        "b": ([1.0, 0.5, 0, 0, 0, 0, 0, 0], "a horse in a field"),
        "c": ([1.0, 1.0, 0, 0, 0, 0, 0, 0], "zebra zebra zebra"),
        "d": ([1.0, 2.0, 0, 0, 0, 0, 0, 0], "grass and trees"),
        "e": ([1.0, 4.0, 0, 0, 0, 0, 0, 0], "one zebra among many other animals at the water hole today")}
QUERY = _unit([[1, 0, 0, 0, 0, 0, 0, 0]])


def _filled(backend: str, tmp_path: Path) -> Any:
    store = _store(backend, tmp_path)
    ids = list(DOCS)
    store.upsert(ids, _unit([DOCS[i][0] for i in ids]),
                 [{"text": DOCS[i][1], "even": n % 2 == 0} for n, i in enumerate(ids)])
    return store


@pytest.mark.parametrize("backend", FUSING)
def test_hybrid_is_the_rrf_of_both_lists_computed_by_hand(backend: str, tmp_path: Path) -> None:
    store = _filled(backend, tmp_path)
    dense = first_stage(store, QUERY, ["zebra"], 5, mode="dense")[0]
    lexical = first_stage(store, QUERY, ["zebra"], 5, mode="lexical")[0]
    assert [h.id for h in dense] == ["a", "b", "c", "d", "e"]
    assert [h.id for h in lexical] == ["c", "a", "e"]
    assert all(h.dense_score == h.score for h in dense) and all(h.lexical_score == h.score for h in lexical)
    hybrid = first_stage(store, QUERY, ["zebra"], 5, mode="hybrid")[0]
    # RRF, k = 60, ranks from 1: a 1/61 + 1/62, c 1/63 + 1/61, b 1/62, e 1/65 + 1/63, d 1/64
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "e": 1 / 65 + 1 / 63, "b": 1 / 62, "d": 1 / 64}
    assert [h.id for h in hybrid] == ["a", "c", "e", "b", "d"]
    for h in hybrid:
        assert h.score == pytest.approx(expected[h.id], abs=1e-9) and h.fused_score == h.score
    by_id = {h.id: h for h in hybrid}
    assert by_id["b"].lexical_score is None and by_id["c"].lexical_score == pytest.approx(lexical[0].score, rel=1e-6)
    assert by_id["e"].dense_score == pytest.approx(dense[4].score, abs=1e-6)
    # k cuts the fused list, the sides still go deep
    assert [h.id for h in first_stage(store, QUERY, ["zebra"], 2, mode="hybrid", depth=5)[0]] == ["a", "c"]
    # weighted: alpha * minmax(dense) + (1 - alpha) * minmax(lexical), missing = 0
    d = {h.id: h.score for h in dense}
    lx = {h.id: h.score for h in lexical}

    def mm(s: dict[str, float], i: str) -> float:
        return (s[i] - min(s.values())) / (max(s.values()) - min(s.values())) if i in s else 0.0

    for alpha in (0.0, 0.3, 1.0):
        got = first_stage(store, QUERY, ["zebra"], 5, mode="hybrid", fusion="weighted", alpha=alpha)[0]
        want = {i: alpha * mm(d, i) + (1 - alpha) * mm(lx, i) for i in DOCS}
        assert [h.id for h in got] == sorted(want, key=lambda i: -want[i])
        assert all(h.score == pytest.approx(want[h.id], abs=1e-6) for h in got)
    store.close()


def test_fusion_functions_on_plain_lists() -> None:
    from omniret.types import Hit

    dense = [Hit("x", 0.9), Hit("y", 0.8)]
    lexical = [Hit("y", 7.0), Hit("z", 3.0)]
    assert [(h.id, round(h.score, 6)) for h in rrf(dense, lexical, 3)] == [
        ("y", round(1 / 62 + 1 / 61, 6)), ("x", round(1 / 61, 6)), ("z", round(1 / 62, 6))]
    assert [h.id for h in weighted(dense, lexical, 3, alpha=1.0)][:1] == ["x"]
    assert [h.id for h in weighted(dense, lexical, 3, alpha=0.0)][:1] == ["y"]


@pytest.mark.parametrize("backend", FUSING)
def test_filters_apply_to_both_sides(backend: str, tmp_path: Path) -> None:
    store = _filled(backend, tmp_path)
    flt = {"even": True}  # a, c, e
    for mode in ("dense", "lexical", "hybrid"):
        hits = first_stage(store, QUERY, ["zebra"], 5, mode=mode, filter=flt)[0]
        assert hits and all(h.payload["even"] is True for h in hits), mode
    dense = first_stage(store, QUERY, ["zebra"], 5, mode="dense", filter=flt)[0]
    lexical = first_stage(store, QUERY, ["zebra"], 5, mode="lexical", filter=flt)[0]
    assert [h.id for h in dense] == ["a", "c", "e"] and [h.id for h in lexical] == ["c", "a", "e"]
    hybrid = first_stage(store, QUERY, ["zebra"], 5, mode="hybrid", filter=flt)[0]
    assert [(h.id, pytest.approx(h.score)) for h in hybrid] == [(h.id, h.score) for h in rrf(dense, lexical, 5)]
    assert first_stage(store, QUERY, ["zebra"], 5, mode="lexical", filter={"even": False})[0] == []
    store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_and_reupsert_update_both_sides(backend: str, tmp_path: Path) -> None:
    store = _filled(backend, tmp_path)
    assert store.lexical_count() == 5
    # re-upsert c with other words: the old terms are gone, the new ones found, the vector replaced too
    store.upsert(["c"], _unit([[0, 0, 1, 0, 0, 0, 0, 0]]), [{"text": "giraffe neck"}])
    assert [h.id for h in store.lexical_search(["zebra"], 5)[0]] == ["a", "e"]
    assert [h.id for h in store.lexical_search(["giraffe"], 5)[0]] == ["c"]
    assert "c" not in [h.id for h in store.search(QUERY, 4)[0]]
    # an item re-upserted without text leaves the lexical index; deleting removes both sides
    store.upsert(["a"], _unit([DOCS["a"][0]]), [{"image": "a.png"}])
    store.delete(["e"])
    assert [h.id for h in store.lexical_search(["zebra"], 5)[0]] == []
    assert sorted(store.lexical_ids()) == ["b", "c", "d"] and store.lexical_count() == 3
    assert store.get(["e"]) == [None] and store.count() == 4
    store.close()


def test_faiss_lexical_index_survives_reopen_and_the_analyser_is_recorded(tmp_path: Path) -> None:
    store = FaissStore(tmp_path / "s", dim=8, lexical={"language": None})
    store.upsert(["x"], QUERY, [{"text": "Indexes", "title": "getUserId"}])
    store.close()
    store = FaissStore(tmp_path / "s")
    assert store.analyzer.config.language is None and store.info()["lexical"]["language"] is None
    assert [h.id for h in store.lexical_search(["indexes"], 3)[0]] == ["x"]
    assert store.lexical_search(["index"], 3)[0] == []  # not stemmed: the recorded analyser is used
    assert [h.id for h in store.lexical_search(["user"], 3)[0]] == ["x"]  # the title is indexed too
    store.close()
    with pytest.raises(ConfigError, match=r"lexical: the store was created with analyser .* fixed at creation"):
        FaissStore(tmp_path / "s", lexical={"language": "english"})


# -------------------------------------------------------------------------------- crash safety


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from omniret.index.faiss_store import FaissStore
    from omniret.index.qdrant_store import QdrantStore

    backend, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 16)).astype("float32")
    if backend == "faiss":
        store = FaissStore(path, dim=16, options={"save_every": 300})
    else:
        store = QdrantStore("crash", dim=16, path=path, options={"batch_size": 20})
    done = set(store.ids())
    for s in range(0, n, 20):
        ids = [f"v{i}" for i in range(s, min(s + 20, n)) if f"v{i}" not in done]
        # every third item has no text (an image): it has no lexical entry
        payloads = [{"image": "p.png"} if int(i[1:]) % 3 == 0 else {"text": f"item number {i} word{int(i[1:]) % 7}"}
                    for i in ids]
        store.upsert(ids, vecs[[int(i[1:]) for i in ids]], payloads)
        print(" ".join(ids), flush=True)
    store.close()
    print("DONE", flush=True)
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill9_during_indexing_leaves_the_same_ids_on_both_sides(backend: str, tmp_path: Path) -> None:
    n, kill_after = (3000, 40) if backend == "faiss" else (600, 8)
    path = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, backend, str(path), str(n)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    acked: list[str] = []
    lines = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.extend(line.split())
        lines += 1
        if lines >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    acked.extend(w for w in proc.stdout.read().split() if w != "DONE")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    store = FaissStore(path) if backend == "faiss" else QdrantStore("crash", path=path)
    try:
        ids = set(store.ids())
        assert set(acked) <= ids, "an acknowledged item was lost"
        with_text = {i for i in ids if int(i[1:]) % 3}
        assert set(store.lexical_ids()) == with_text and store.lexical_count() == len(with_text)
        last_text = max((i for i in acked if int(i[1:]) % 3), key=lambda i: int(i[1:]))
        assert store.lexical_search([f"{last_text}"], 1)[0][0].id == last_text
    finally:
        store.close()


# ----------------------------------------------------------------------------- collections, MiniLM


@pytest.fixture(scope="module")
def minilm(minilm_path: Path):  # noqa: ANN201
    from omniret.embed import load_embedder

    return load_embedder(str(minilm_path))


NOTES = [
    ("n0", "How to read a stack trace when a program crashes with an exception."),
    ("n1", "Common error messages in web servers and what they usually mean."),
    ("n2", "Debugging network failures: timeouts, refused connections and resets."),
    ("n3", "Troubleshooting guide for failed software installs and broken packages."),
    ("n4", "Gardening diary: the tomatoes were planted late this year, tray label QZX-8841."),
    ("n5", "Understanding HTTP status codes such as 404 and 500 and their causes."),
    ("n6", "Web servers crash under load; here is how to read their error logs."),
]
RARE = "why did my web server crash with error QZX-8841"


@pytest.fixture
def notes(tmp_path: Path, minilm, request: pytest.FixtureRequest) -> Iterator[Any]:  # noqa: ANN001
    coll = open_collection("notes", root=tmp_path, backend=request.param, embedder=minilm)
    coll.add([Item(text=t, id=i, metadata={"lang": "en" if i != "n2" else "de"}) for i, t in NOTES])
    yield coll
    coll.close()


@pytest.mark.parametrize("notes", BACKENDS, indirect=True)
def test_lexical_finds_a_rare_exact_term_the_dense_model_misses(notes: Any) -> None:
    dense = [h.id for h in notes.search(RARE, k=7, mode="dense")]
    assert dense[-1] == "n4"  # MiniLM reads a server-crash question: the gardening note with the code is last
    lexical = notes.search(RARE, k=3, mode="lexical")
    assert lexical[0].id == "n4" and lexical[0].lexical_score is not None and lexical[0].dense_score is None
    hybrid = notes.search(RARE, k=4, mode="hybrid")
    assert "n4" in [h.id for h in hybrid]
    assert all(h.fused_score == h.score for h in hybrid)
    # filters reach both sides through the collection too
    assert [h.id for h in notes.search(RARE, k=7, mode="hybrid", filter={"lang": "de"})] == ["n2"]
    assert notes.manifest["lexical"] == AnalyzerConfig().to_dict()


@pytest.mark.parametrize("notes", ["faiss"], indirect=True)
def test_bad_mode_fusion_alpha_and_textless_collections_fail_naming_the_field(notes: Any, tmp_path: Path,
                                                                            minilm) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=r"mode='fuzzy': choose one of dense, lexical, hybrid"):
        notes.search("x", mode="fuzzy")
    with pytest.raises(ConfigError, match=r"fusion='max': choose one of rrf, weighted"):
        notes.search("x", mode="hybrid", fusion="max")
    with pytest.raises(ConfigError, match=r"alpha=1.5: must be a number in \[0, 1\]"):
        notes.search("x", mode="hybrid", fusion="weighted", alpha=1.5)
    with pytest.raises(ConfigError, match=r"alpha=0.2 is the weight of fusion='weighted'"):
        notes.search("x", mode="hybrid", alpha=0.2)
    with pytest.raises(ConfigError, match=r"mode='lexical' needs query text"):
        notes.search(Item(image="nothing.png"), mode="lexical")
    # a collection whose items carry no text has no lexical index to search
    bare = open_collection("bare", root=tmp_path, embedder=minilm)
    bare.add_vectors(["v1", "v2"], minilm.embed([Item(text="a"), Item(text="b")]), [{"kind": "x"}, {"kind": "y"}])
    for mode in ("lexical", "hybrid"):
        with pytest.raises(ConfigError, match=rf"mode='{mode}': no item in this collection has text"):
            bare.search("anything", mode=mode)
    assert len(bare.search("anything", k=2)) == 2  # dense still works
    bare.close()
    with pytest.raises(CollectionError, match=r"created with lexical analyser"):
        open_collection("notes", root=tmp_path, lexical={"language": None})


def _make_pre_lexical(path: Path) -> None:
    """Turn a collection into one made before the lexical index (no FTS rows, no analyser recorded)."""
    db = sqlite3.connect(str(path / "faiss" / "store.sqlite"))
    db.execute("DROP TABLE lex")
    db.execute("DELETE FROM meta WHERE key LIKE 'lexical%'")
    db.commit()
    db.close()
    manifest = json.loads((path / "collection.json").read_text())
    manifest.pop("lexical", None)
    (path / "collection.json").write_text(json.dumps(manifest))


def test_a_collection_made_before_gets_its_lexical_index_on_open(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    coll = open_collection("old", root=tmp_path, embedder=minilm)
    coll.add([Item(text=t, id=i) for i, t in NOTES])
    coll.close()
    _make_pre_lexical(tmp_path / "old")
    # the bare store knows its lexical index is missing and says how to build it
    store = FaissStore(tmp_path / "old" / "faiss")
    assert not store.lexical_ready
    with pytest.raises(StoreError, match=r"lexical index .* is not built yet .* build-lexical"):
        store.lexical_search(["QZX-8841"], 1)
    # resumable: a build that stopped after the first batch continues from the position it committed
    import omniret.index.faiss_store as fs

    calls: list[tuple[int, int]] = []
    old_batch, fs.LEXICAL_BUILD_BATCH = fs.LEXICAL_BUILD_BATCH, 2
    try:
        class Stop(Exception):
            pass

        def stop_after_first(done: int, total: int) -> None:
            calls.append((done, total))
            raise Stop

        with pytest.raises(Stop):
            store.build_lexical(stop_after_first)
        assert store.lexical_count() == 2 and calls == [(2, 7)]
        store.close()
        store = FaissStore(tmp_path / "old" / "faiss")
        assert store.build_lexical(lambda d, t: calls.append((d, t))) == 5
        assert calls[1:] == [(2, 5), (4, 5), (5, 5)] and store.lexical_count() == 7
    finally:
        fs.LEXICAL_BUILD_BATCH = old_batch
        store.close()
    # open_collection builds it for an old collection and records the analyser in the manifest
    _make_pre_lexical(tmp_path / "old")
    coll = open_collection("old", root=tmp_path, progress=False)
    assert coll.search(RARE, k=1, mode="lexical")[0].id == "n4"
    assert json.loads((tmp_path / "old" / "collection.json").read_text())["lexical"] == AnalyzerConfig().to_dict()
    coll.close()


def test_cli_search_modes_and_build_lexical(tmp_path: Path, minilm_path: Path) -> None:
    from omniret.cli import app as cli

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, t in NOTES:
        (docs / f"{i}.txt").write_text(t)
    root = str(tmp_path / "root")
    run = CliRunner().invoke
    res = run(cli, ["index", str(docs), "--collection", "c", "--model", str(minilm_path), "--root", root])
    assert res.exit_code == 0, res.output
    res = run(cli, ["search", RARE, "-c", "c", "--root", root, "--no-rerank", "--mode", "hybrid", "--k", "4",
                    "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert any(h["id"].startswith("n4.txt") for h in hits)
    assert all({"dense_score", "lexical_score", "fused_score"} <= set(h) for h in hits)
    res = run(cli, ["search", "QZX-8841", "-c", "c", "--root", root, "--no-rerank", "--mode", "lexical"])
    assert res.exit_code == 0 and "n4.txt" in res.output and "(lexical)" in res.output
    for args, msg in ((["--mode", "fuzzy"], "--mode='fuzzy': choose one of dense, lexical, hybrid"),
                      (["--mode", "hybrid", "--fusion", "weighted", "--alpha", "2"], "alpha=2.0: must be a number"),
                      (["--mode", "hybrid", "--fusion", "max"], "--fusion='max': choose one of rrf, weighted")):
        res = run(cli, ["search", "x", "-c", "c", "--root", root, "--no-rerank", *args])
        assert res.exit_code == 1 and msg in res.output, res.output
    _make_pre_lexical(Path(root) / "c")
    res = run(cli, ["collections", "build-lexical", "c", "--root", root])
    assert res.exit_code == 0 and "lexical index built (7 items with text)" in res.output, res.output
    res = run(cli, ["collections", "build-lexical", "c", "--root", root])
    assert "the lexical index is complete (7 items with text)" in res.output


def test_a_qdrant_collection_made_before_keeps_dense_and_says_how_to_get_lexical(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    from omniret.index.qdrant_store import point_id

    raw = QdrantClient(path=str(tmp_path / "q"))
    raw.create_collection("old", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    raw.upsert("old", points=[models.PointStruct(id=point_id("a"), vector=QUERY[0].tolist(),
                                                 payload={"text": "zebra", "_omniret_id": "a"})])
    raw.close()
    store = QdrantStore("old", path=tmp_path / "q")
    assert not store.lexical_ready and store.lexical_count() == 0
    assert [h.id for h in first_stage(store, QUERY, ["zebra"], 1, mode="dense")[0]] == ["a"]
    store.upsert(["b"], QUERY, [{"text": "zebra"}])  # still writable: dense only
    for mode in ("lexical", "hybrid"):
        with pytest.raises(ConfigError, match=r"Qdrant collection 'old' was made before .* re-index"):
            first_stage(store, QUERY, ["zebra"], 1, mode=mode)
    store.close()
