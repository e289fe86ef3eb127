"""``omniret serve --devices cpu,cpu``: one model replica per device behind the micro-batcher, over real
HTTP. Concurrent requests are spread over the replicas and each gets the single-process vectors back; a
replica that dies fails only the requests it held, naming its device, and the service goes on."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from omniret.api import create_app
from omniret.api.server import BackgroundServer
from omniret.embed.pool import EmbedderPool
from omniret.settings import Settings


def test_replicas_serve_concurrent_requests_and_survive_a_dead_one(tmp_path: Path, minilm_path: Path) -> None:
    from omniret.embed import load_embedder

    settings = Settings(home=tmp_path, embed_model=str(minilm_path), rerank_model="", devices="cpu,cpu",
                        batch_wait_ms=2.0, max_batch_items=8)
    texts = [f"request {i} asks about topic {i % 7} and nothing else" for i in range(48)]
    want = load_embedder(minilm_path).embed(texts)
    with BackgroundServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        deadline = time.monotonic() + 300
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.5)
        pool = srv.app.state.omniret.embedder
        assert isinstance(pool, EmbedderPool) and pool.devices == ["cpu", "cpu"]

        def one(i: int) -> np.ndarray:
            r = client.post("/v1/embeddings", json={"input": texts[i], "encoding_format": "float"})
            assert r.status_code == 200, r.text
            return np.array(r.json()["data"][0]["embedding"], np.float32)

        with ThreadPoolExecutor(8) as ex:
            got = np.stack(list(ex.map(one, range(len(texts)))))
        np.testing.assert_allclose(got, want, atol=1e-5)
        os.kill(pool.pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pool.alive == 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.alive == 1
        # the surviving replica answers everything now
        with ThreadPoolExecutor(4) as ex:
            again = np.stack(list(ex.map(one, range(12))))
        np.testing.assert_allclose(again, want[:12], atol=1e-5)
        os.kill(pool.pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pool.alive == 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        r = client.post("/v1/embeddings", json={"input": "anyone there?"})
        assert r.status_code >= 500
        assert "every embedding worker has died" in r.text and "(cpu, pid" in r.text
