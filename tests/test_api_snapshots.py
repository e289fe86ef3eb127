"""``POST /v1/collections/{name}/snapshot`` over real HTTP: key required, the archive restores, and the
service keeps answering searches and adds on the collection while the snapshot is taken."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.index import open_collection
from omniret.index.transfer import restore_collection
from omniret.settings import Settings

KEY = "snap-key"


def test_snapshot_endpoint_streams_a_restorable_archive_while_serving(minilm_path: Path, tmp_path: Path) -> None:
    from omniret.embed import load_embedder

    emb = load_embedder(str(minilm_path))
    root = tmp_path / "cols"
    n = 20_000  # a snapshot long enough (about a second here) for requests to land inside it
    coll = open_collection("big", root=root, embedder=emb)
    x = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    coll.add_vectors([f"v{i:05d}" for i in range(n)], x / np.linalg.norm(x, axis=1, keepdims=True),
                     [{"text": f"stored note {i}"} for i in range(n)])
    coll.close()
    settings = Settings(home=tmp_path / "home", collections_root=root, rerank_model="", api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    with BackgroundServer(create_app(settings, embedder=emb)) as srv, \
            httpx.Client(base_url=srv.url, timeout=300) as client:
        assert client.post("/v1/collections/big/snapshot").status_code == 401
        assert client.post("/v1/collections/nope/snapshot", headers=auth).status_code == 404
        archive = tmp_path / "big.tar"
        done = threading.Event()
        result: dict[str, int] = {}

        def take() -> None:
            with httpx.Client(base_url=srv.url, timeout=300) as c, \
                    c.stream("POST", "/v1/collections/big/snapshot", headers=auth) as r:
                result["status"] = r.status_code
                with open(archive, "wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
            done.set()

        # warm the query and add paths first, so the first request's model warm-up cannot outlast the snapshot
        assert client.post("/v1/collections/big/search", json={"text": "warm", "k": 1}, headers=auth).status_code == 200
        assert client.post("/v1/collections/big/items", json={"items": [{"id": "warm", "text": "warm"}]},
                           headers=auth).status_code in (200, 201)
        t = threading.Thread(target=take)
        t.start()
        answered_during = 0
        k = 0
        while not done.is_set() and k < 200:
            s = client.post("/v1/collections/big/search", json={"text": "stored note 7", "k": 3}, headers=auth)
            a = client.post("/v1/collections/big/items", json={"items": [{"id": f"new{k}", "text": f"added {k}"}]},
                            headers=auth)
            assert s.status_code == 200 and a.status_code in (200, 201), (s.text, a.text)
            answered_during += not done.is_set()
            k += 1
            time.sleep(0.01)
        t.join()
        assert result["status"] == 200
        assert answered_during >= 1, "no search or add was answered while the snapshot ran"
    report = restore_collection(archive, name="back", root=root)
    assert n <= report.points <= n + k and report.verify is not None and report.verify.ok
