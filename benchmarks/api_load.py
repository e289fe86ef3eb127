"""Load test of ``POST /v1/embeddings``: micro-batching on vs off, same model, same run.

The server runs in this process (uvicorn on a loopback port, ``omniret.api.server.BackgroundServer``); the
load comes from a separate process (so client work does not share the server's GIL): ``--clients``
concurrent connections, each sending one request after another with distinct texts, for ``--seconds`` per
setting. Prints requests/s, items/s and p50/p99 latency for each setting and the on/off ratio.

    python benchmarks/api_load.py --clients 16 --seconds 15
    python benchmarks/api_load.py --model /path/to/checkpoint --items-per-request 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time

import numpy as np

WORDS = ["retrieval", "vector", "index", "rerank", "image", "video", "page", "query", "document", "embedding", "model", "search", "batch", "latency", "cosine", "matryoshka", "token", "server", "client", "garden", "river", "market", "protein"]


def _text(client: int, n: int, j: int) -> str:
    rng = np.random.default_rng(client * 1_000_003 + n * 31 + j)
    return " ".join(rng.choice(WORDS, size=int(rng.integers(8, 40))))


async def _client(url: str, cid: int, items: int, stop: float, lat: list[float], counts: list[int]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        n = 0
        while time.perf_counter() < stop:
            body = {"input": [_text(cid, n, j) for j in range(items)], "encoding_format": "base64"}
            t0 = time.perf_counter()
            r = await c.post("/v1/embeddings", json=body)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"client {cid}: HTTP {r.status_code}: {r.text[:200]}")
            lat.append(dt)
            counts[0] += 1
            n += 1


def _load(url: str, clients: int, items: int, seconds: float, out: mp.Queue) -> None:
    async def main() -> tuple[list[float], int, float]:
        lat: list[float] = []
        counts = [0]
        start = time.perf_counter()
        await asyncio.gather(*[_client(url, i, items, start + seconds, lat, counts) for i in range(clients)])
        return lat, counts[0], time.perf_counter() - start

    out.put(asyncio.run(main()))


def run_setting(embedder: object, *, micro_batching: bool, clients: int, items: int, seconds: float,
                wait_ms: float) -> dict[str, float]:
    import httpx

    from omniret.api import create_app
    from omniret.api.server import BackgroundServer
    from omniret.settings import Settings

    settings = Settings(rerank_model="", micro_batching=micro_batching, batch_wait_ms=wait_ms)
    with BackgroundServer(create_app(settings, embedder=embedder)) as srv:
        for _ in range(3):  # warm-up
            httpx.post(f"{srv.url}/v1/embeddings", json={"input": ["warm up"] * items}, timeout=120)
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        p = ctx.Process(target=_load, args=(srv.url, clients, items, seconds, q))
        p.start()
        lat, n, wall = q.get(timeout=seconds + 300)
        p.join()
        batches = _metric(httpx.get(f"{srv.url}/metrics").text, "omniret_batch_size_requests_count")
    lat_ms = np.array(lat) * 1000
    return {"requests": n, "req_s": n / wall, "items_s": n * items / wall, "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99)), "batches": batches}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="embedding model (registry name or path)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0, help="load time per setting")
    ap.add_argument("--items-per-request", type=int, default=1)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from omniret.embed import load_embedder

    embedder = load_embedder(args.model)
    print(f"model {embedder.name}; {args.clients} clients x {args.seconds:g} s per setting; "
          f"{args.items_per_request} item(s) per request; cpu count {os.cpu_count()}")
    rows = {}
    for on in (False, True):
        rows[on] = run_setting(embedder, micro_batching=on, clients=args.clients, items=args.items_per_request,
                               seconds=args.seconds, wait_ms=args.batch_wait_ms)
    print(f"{'micro-batching':<16}{'requests':>10}{'req/s':>10}{'items/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'batches':>10}")
    for on in (False, True):
        r = rows[on]
        print(f"{'on' if on else 'off':<16}{r['requests']:>10.0f}{r['req_s']:>10.1f}{r['items_s']:>10.1f}"
              f"{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['batches']:>10.0f}")
    on, off = rows[True], rows[False]
    print(f"ratio on/off: throughput {on['req_s'] / off['req_s']:.2f}x, p50 {on['p50_ms'] / off['p50_ms']:.2f}x, "
          f"p99 {on['p99_ms'] / off['p99_ms']:.2f}x")


if __name__ == "__main__":
    main()
