"""What probing the service as a user and as an attacker found (issue 12), each over real HTTP.

One server: all-MiniLM-L6-v2 (its registry name) and the tiny text Qwen3-Reranker loaded from its folder
(so a server path could leak through its name), a key, CORS for one origin and a small text cap; real
FAISS collections on disk under a root the responses must never show. The official clients (cohere
ClientV2, openai, LangChain's OpenAIEmbeddings, LlamaIndex's OpenAIEmbedding) are run against it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from omniret import Item
from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.errors import ConfigError
from omniret.settings import Settings, get_settings

KEY = "k-hardening"
ORIGIN = "https://app.example"
MAX_TEXT = 5000


@pytest.fixture(scope="module")
def models(minilm_path: Path, tiny_text_reranker: Path):
    from omniret.embed import load_embedder
    from omniret.rerank import load_reranker

    return load_embedder(minilm_path), load_reranker(tiny_text_reranker)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening-root")


@pytest.fixture(scope="module")
def server(models, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    emb, rr = models
    settings = Settings(home=tmp_path_factory.mktemp("home"), collections_root=root, api_keys=[KEY],
                        cors_origins=[ORIGIN], max_text_chars=MAX_TEXT, max_body_bytes=2_000_000)
    with BackgroundServer(create_app(settings, embedder=emb, reranker=rr)) as srv:
        yield srv


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def notes(server: BackgroundServer) -> str:
    """A collection with three text items."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "notes"}).status_code == 201
        r = c.post("/v1/collections/notes/items", json={"items": [
            {"id": "cat", "text": "The cat sleeps on the warm windowsill.", "metadata": {"lang": "en"}},
            {"id": "bond", "text": "Government bond yields rose sharply on Tuesday."},
            {"id": "katze", "text": "Die Katze schläft auf der Fensterbank.", "metadata": {"lang": "de"}}]})
        assert r.status_code == 200, r.text
    return "notes"


def _files(root: Path, name: str) -> list[str]:
    """Everything under the collection's upload storage (temporary areas included)."""
    base = root / name
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                  if p.is_file() and (p.relative_to(base).parts[0] == "files"
                                      or p.relative_to(base).parts[0].startswith(".incoming")))


# ------------------------------------------------------------------------------------ 1. server paths


def test_no_server_paths_in_hits_infos_models_or_errors(client: httpx.Client, notes: str, root: Path,
                                                        models, tiny_text_reranker: Path) -> None:
    r = client.post(f"/v1/collections/{notes}/files",
                    files=[("files", ("garden.txt", b"Tomatoes need full sun and regular watering.", "text/plain"))])
    assert r.status_code == 200, r.text
    bodies = [r.text]
    hit = client.post(f"/v1/collections/{notes}/search", json={"text": "growing tomatoes", "k": 1, "rerank": False}).json()["hits"][0]
    assert hit["payload"]["source"].endswith("garden.txt") and "path" not in hit["payload"]
    bodies.append(json.dumps(hit))
    assert client.post("/v1/collections", json={"name": "qd", "backend": "qdrant"}).status_code == 201
    info = client.get("/v1/collections/qd").json()
    assert info["store"]["backend"] == "qdrant" and "location" not in info["store"]
    bodies += [json.dumps(info), client.get("/v1/collections").text]
    models_list = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models_list] == ["sentence-transformers/all-MiniLM-L6-v2", tiny_text_reranker.name]
    bodies.append(json.dumps(models_list))
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.json()["model"] == tiny_text_reranker.name
    bodies.append(r.text)
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "other"})
    assert r.status_code == 400 and tiny_text_reranker.name in r.json()["error"]["message"]
    bodies.append(r.text)
    for body in bodies:
        for private in (str(root), str(tiny_text_reranker), str(Path(models[0].name).parent)):
            assert private not in body, (private, body)


# ------------------------------------------------------------------------------- 2. reserved metadata


def test_metadata_cannot_overwrite_the_items_own_fields(client: httpx.Client, notes: str) -> None:
    before = client.get(f"/v1/collections/{notes}").json()["count"]
    spoof = {"id": "x", "text": "real", "metadata": {"text": "spoofed", "kind": "pdf", "image": "/etc/passwd"}}
    r = client.post(f"/v1/collections/{notes}/items", json={"items": [spoof]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["item"]["index"] == 0 and err["item"]["id"] == "x" and err["item"]["field"] == "items"
    assert "metadata key(s) ['image', 'kind', 'text'] are reserved" in err["message"]
    assert client.get(f"/v1/collections/{notes}").json()["count"] == before


# ------------------------------------------------------------------------------------- 3. delete report


def test_delete_reports_what_it_deleted_and_what_was_unknown(client: httpx.Client) -> None:
    assert client.post("/v1/collections", json={"name": "del"}).status_code == 201
    assert client.post("/v1/collections/del/items", json={"items": [{"id": "a", "text": "alpha"},
                                                                    {"id": "b", "text": "beta"}]}).status_code == 200
    r = client.request("DELETE", "/v1/collections/del/items", json={"ids": ["a", "nope", "a"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": 1, "ids": ["a"], "not_found": ["nope"], "count": 1}


# ----------------------------------------------------------------- 4./6. uploads: no leftovers, names


def test_refused_and_skipped_uploads_leave_no_files(client: httpx.Client, root: Path) -> None:
    assert client.post("/v1/collections", json={"name": "up"}).status_code == 201
    long_name = "n" * 300 + ".txt"
    files = [("files", ("tool.exe", b"MZ\x90\x00binary", "application/octet-stream")),   # unsupported type
             ("files", ("photo.png", b"\x89PNG garbage", "image/png")),                   # text-only model
             ("files", ("latin1.txt", "café".encode("latin-1"), "text/plain")),           # not UTF-8
             ("files", ("empty.md", b"", "text/markdown")),                                # empty
             ("files", (long_name, b"A file whose client name is 300 characters long.", "text/plain"))]
    r = client.post("/v1/collections/up/files", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["indexed_files"] == 1 and body["added"] == 1
    assert len(body["skipped"]) == 2 and len(body["failed"]) == 2
    kept = _files(root, "up")
    assert len(kept) == 1 and kept == [f"files/{body['files'][0]}"], kept
    assert len(body["files"][0].encode()) <= 160 and body["files"][0].endswith(".txt")
    hit = client.post("/v1/collections/up/search", json={"text": "a long client name", "k": 1, "rerank": False}).json()["hits"][0]
    assert hit["payload"]["source"] == body["files"][0]


def test_same_upload_twice_is_indexed_once(client: httpx.Client, root: Path) -> None:
    assert client.post("/v1/collections", json={"name": "dedupe"}).status_code == 201
    data = b"Espresso is brewed by forcing hot water through finely ground coffee."
    r1 = client.post("/v1/collections/dedupe/files", files=[("files", ("coffee.txt", data, "text/plain"))])
    assert r1.json()["added"] == 1
    # same bytes: under the same name, under another name, and twice in one request
    r2 = client.post("/v1/collections/dedupe/files", files=[("files", ("coffee.txt", data, "text/plain")),
                                                            ("files", ("copy.txt", data, "text/plain"))])
    assert r2.status_code == 200, r2.text
    assert r2.json()["added"] == 0 and r2.json()["indexed_files"] == 0
    assert [d["file"] for d in r2.json()["duplicates"]] == ["coffee.txt", "copy.txt"]
    assert {d["duplicate_of"] for d in r2.json()["duplicates"]} == set(r1.json()["files"])
    assert client.get("/v1/collections/dedupe").json()["count"] == 1
    assert len(_files(root, "dedupe")) == 1


# ---------------------------------------------------------------------------------- 5. on_error=skip


def test_skip_adds_the_good_items_and_lists_every_bad_one(client: httpx.Client) -> None:
    assert client.post("/v1/collections", json={"name": "skip"}).status_code == 201
    items = [{"id": "g1", "text": "a good item"}, {"id": "e", "text": ""},
             {"id": "r", "text": "ok", "metadata": {"kind": "pdf"}}, {"id": "g2", "text": "another good one"},
             {"id": "g1", "text": "the same id again"}, 17]
    r = client.post("/v1/collections/skip/items", json={"items": items, "on_error": "skip"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == 2 and body["ids"] == ["g1", "g2"]
    assert [(f["index"], f["id"]) for f in body["failures"]] == [(1, "e"), (2, "r"), (4, "g1"), (5, None)]
    reasons = [f["reason"] for f in body["failures"]]
    assert reasons[0] == "empty text" and "reserved" in reasons[1] and "twice" in reasons[2]
    assert "expected a string or an object" in reasons[3]
    assert client.get("/v1/collections/skip").json()["count"] == 2
    # the same request with on_error=raise stores nothing and names every bad item
    r = client.post("/v1/collections/skip/items", json={"items": items[1:3]})
    assert r.status_code == 400 and [f["index"] for f in r.json()["error"]["item"]["failures"]] == [0, 1]


def test_items_without_an_id_get_one_from_their_content(client: httpx.Client) -> None:
    assert client.post("/v1/collections", json={"name": "noid"}).status_code == 201
    r = client.post("/v1/collections/noid/items", json={"items": ["plain string", {"text": "an object"}]})
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    again = client.post("/v1/collections/noid/items", json={"items": [{"text": "an object"}]}).json()
    assert again["ids"] == ids[1:] and client.get("/v1/collections/noid").json()["count"] == 2
    hits = client.post("/v1/collections/noid/search", json={"text": "an object", "k": 2, "rerank": False}).json()["hits"]
    assert hits[0]["id"] == ids[1], (ids, hits)


# ------------------------------------------------------------------------------------ 7. text size


def test_text_over_the_cap_is_refused_naming_the_item(client: httpx.Client, notes: str) -> None:
    long = "word " * (MAX_TEXT // 5 + 1)
    for path, body, field in [("/v1/embeddings", {"input": ["ok", long]}, "input"),
                              (f"/v1/collections/{notes}/items", {"items": [{"id": "l", "text": long}]}, "items"),
                              ("/v1/rerank", {"query": "q", "documents": ["ok", long]}, "documents")]:
        r = client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        err = r.json()["error"]
        assert err["item"]["index"] == 1 - (field == "items") and err["item"]["field"] == field
        assert f"text is {len(long)} characters, over the limit of {MAX_TEXT} (max_text_chars)" in err["message"]


def test_text_beyond_what_the_model_reads_is_cut_without_changing_the_vector(models, tmp_path: Path) -> None:
    emb, _ = models
    settings = Settings(home=tmp_path, rerank_model="")
    text = " ".join(f"token{i}" for i in range(9_000))  # ~88k characters; MiniLM reads 256 tokens
    with BackgroundServer(create_app(settings, embedder=emb)) as srv:
        r = httpx.post(srv.url + "/v1/embeddings", json={"input": text}, timeout=120)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["data"][0]["embedding"], dtype=np.float32),
                               emb.embed([Item(text=text)])[0], atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == 256


# ------------------------------------------------------------------------------- 8. lone surrogates


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/v1/embeddings", '{"input": "\\ud800"}', "input"),
    ("/v1/embeddings", '{"input": ["ok", {"text": "a\\udfffb"}]}', "input[1].text"),
    ("/v1/embeddings", '{"input": "ok", "instruction": "\\ud800"}', "instruction"),
    ("/v1/rerank", '{"query": "\\ud800", "documents": ["a"]}', "query"),
    ("/v1/rerank", '{"query": "q", "documents": ["a", "\\ud800"]}', "documents[1]"),
    ("/v2/rerank", '{"model": "m", "query": "q", "documents": ["\\ud800"]}', "documents[0]"),
    ("/v1/collections/notes/search", '{"text": "\\ud800"}', "text"),
    ("/v1/collections/notes/search", '{"text": "q", "filter": {"lang": "\\ud800"}}', "filter.lang"),
    ("/v1/collections/notes/items", '{"items": [{"id": "s", "text": "\\ud800"}]}', "items[0].text"),
    ("/v1/collections/notes/items", '{"items": [{"id": "s", "text": "t", "metadata": {"n": "\\ud800"}}]}',
     "items[0].metadata.n"),
    ("/v1/collections/notes/items", '{"items": [{"id": "\\ud800", "text": "t"}]}', "items[0].id"),
])
def test_lone_surrogates_are_a_400_naming_the_field(client: httpx.Client, notes: str, path: str, raw: str,
                                                    field: str) -> None:
    count = client.get(f"/v1/collections/{notes}").json()["count"]
    r = client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_text" and err["field"] == field
    assert err["message"].startswith(f"{field}: contains a lone UTF-16 surrogate")
    assert client.get(f"/v1/collections/{notes}").json()["count"] == count


# ---------------------------------------------------------------------------------- clients and gaps


def test_cohere_client_v2_rerank(server: BackgroundServer, models) -> None:
    import cohere

    _, rr = models
    docs = ["a fox in the snow", "tax forms", "the quick brown fox jumps"]
    co = cohere.ClientV2(api_key=KEY, base_url=server.url)
    res = co.rerank(model=Path(rr.name).name, query="fox", documents=docs, top_n=2)
    want = rr.score(Item(text="fox"), [Item(text=d) for d in docs])
    order = [int(i) for i in np.argsort(-want, kind="stable")[:2]]
    assert [x.index for x in res.results] == order
    for x in res.results:
        assert x.relevance_score == pytest.approx(float(want[x.index]), abs=1e-5)
    assert res.meta is not None and res.meta.api_version.version == "2"
    with pytest.raises(cohere.core.ApiError) as e:
        co.rerank(model="rerank-v3.5", query="fox", documents=docs)
    assert e.value.status_code == 400


def test_v2_max_tokens_per_doc_cuts_documents(client: httpx.Client, models) -> None:
    _, rr = models
    doc = "the quick brown fox jumps over the lazy dog " * 20
    r = client.post("/v2/rerank", json={"query": "fox", "documents": [doc], "max_tokens_per_doc": 4})
    assert r.status_code == 200, r.text
    tok = rr.tokenizer
    ids = tok(doc, add_special_tokens=False, return_offsets_mapping=True)
    cut = doc[: ids["offset_mapping"][3][1]]
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(
        float(rr.score(Item(text="fox"), [Item(text=cut)])[0]), abs=1e-5)
    r = client.post("/v2/rerank", json={"query": "fox", "documents": ["x"], "relevant_spans": {"mode": "on"}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "relevant_spans"


def test_openai_models_retrieve_and_token_usage(server: BackgroundServer, models) -> None:
    import openai

    emb, _ = models
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    m = client.models.retrieve("minilm")  # any name the model answers to
    assert m.id == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    res = client.embeddings.create(model="minilm", input=["a cat on a sofa", "dogs"])
    tok = emb.model.tokenizer
    assert res.usage.prompt_tokens == sum(len(tok(t)["input_ids"]) for t in ("a cat on a sofa", "dogs"))


def test_langchain_openai_embeddings(server: BackgroundServer, models) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb, _ = models
    lc = OpenAIEmbeddings(model="minilm", base_url=server.url + "/v1", api_key=KEY,
                          check_embedding_ctx_length=False)
    got = np.array(lc.embed_documents(["a cat", "a dog"]), dtype=np.float32)
    np.testing.assert_allclose(got, emb.embed(["a cat", "a dog"]), atol=1e-5)
    np.testing.assert_allclose(np.array(lc.embed_query("a cat"), dtype=np.float32), got[0], atol=1e-5)


def test_token_id_arrays_say_how_to_configure_langchain(client: httpx.Client) -> None:
    # the wire shape LangChain's OpenAIEmbeddings sends by default (tiktoken ids, one list per text)
    r = client.post("/v1/embeddings", json={"input": [[64, 8415], [64, 5679]], "model": "minilm"})
    assert r.status_code == 400
    assert "check_embedding_ctx_length=False" in r.json()["error"]["message"]


def test_llamaindex_openai_embedding(server: BackgroundServer, models) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    emb, _ = models
    li = OpenAIEmbedding(model_name="minilm", api_base=server.url + "/v1", api_key=KEY)
    got = np.array(li.get_text_embedding_batch(["a cat", "a dog"]), dtype=np.float32)
    np.testing.assert_allclose(got, emb.embed(["a cat", "a dog"]), atol=1e-5)


def test_cors_preflight_and_headers(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.options("/v1/embeddings", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization,content-type"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": ORIGIN,
                                                                    "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        r = c.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": ORIGIN})  # errors carry it too
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
        r = c.options("/v1/embeddings", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "POST"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


def test_cors_is_off_by_default(models, tmp_path: Path) -> None:
    with BackgroundServer(create_app(Settings(home=tmp_path, rerank_model=""), embedder=models[0])) as srv:
        r = httpx.post(srv.url + "/v1/embeddings", json={"input": "x"}, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_the_key_is_checked_before_the_body(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        for content in (b"{not json", b"x" * 3_000_000):
            r = c.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = c.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json",
                                                                    "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_json"


def test_api_key_alias_turns_auth_on(models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIRET_API_KEY", "single")
    monkeypatch.setenv("OMNIRET_RERANK_MODEL", "")
    settings = get_settings(home=tmp_path)
    assert settings.api_keys == ["single"]
    with BackgroundServer(create_app(settings, embedder=models[0])) as srv:
        assert httpx.post(srv.url + "/v1/embeddings", json={"input": "x"}).status_code == 401
        r = httpx.post(srv.url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer single"})
        assert r.status_code == 200
    monkeypatch.setenv("OMNIRET_API_KEYS", '["other"]')
    with pytest.raises(ConfigError, match="OMNIRET_API_KEY and OMNIRET_API_KEYS are both set"):
        get_settings()


def test_unknown_config_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('api_key = "x"\nmax_batch_itmes = 3\nport = 9\n')
    monkeypatch.setenv("OMNIRET_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) 'api_key' \(did you mean 'api_keys'\?\), "
                                          r"'max_batch_itmes' \(did you mean 'max_batch_items'\?\)"):
        get_settings()
    cfg.write_text('[omniret]\nport = 9\ncors_origins = ["https://a.example"]\n')
    s = get_settings()
    assert s.port == 9 and s.cors_origins == ["https://a.example"]


def test_serving_beyond_loopback_without_a_key_warns(models, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert Settings(home=tmp_path, host="127.0.0.1").exposure_warning() is None
    assert Settings(home=tmp_path, host="0.0.0.0", api_keys=["k"]).exposure_warning() is None
    with caplog.at_level(logging.WARNING, logger="omniret.api"):
        create_app(Settings(home=tmp_path, host="0.0.0.0", rerank_model=""), embedder=models[0])
    assert "serving on 0.0.0.0 WITHOUT an API key" in caplog.text


def test_serve_cli_warns_and_takes_cors_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    from omniret.cli.serve import cors_origins_or_none, settings_env

    env = settings_env(host="0.0.0.0", port=None, model=None, reranker=None, no_reranker=True, root=None,
                       api_keys=None, device=None, dtype=None, micro_batching=None,
                       cors_origins=cors_origins_or_none([ORIGIN, "http://localhost:3000"]))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert get_settings().cors_origins == [ORIGIN, "http://localhost:3000"]
    with pytest.raises(ConfigError, match="--cors-origin 'app.example/path': give an origin"):
        cors_origins_or_none(["app.example/path"])
