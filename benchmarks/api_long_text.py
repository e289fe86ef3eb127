"""One long text through ``POST /v1/embeddings``: cut to what the model reads before tokenising (the
service's default) against tokenising all of it (the baseline, what the server did before), same run.

The figures: the long request's latency, a one-word request's latency while the long one is in flight
(the model thread is shared), and the server's peak resident memory growth. Alternates A, B, A, B on
fresh apps over real HTTP (uvicorn on loopback) with all-MiniLM-L6-v2; vectors of the two paths agree.
Usage: python benchmarks/api_long_text.py [--chars 2000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from omniret.embed.protocol import Embedder


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_once(emb: Embedder, text: str, cut: bool) -> tuple[float, float, float, np.ndarray]:
    """(long request s, one-word request s during it, RSS growth MB, vector) for one fresh app."""
    import omniret.api.inputs as inputs
    from omniret.api import create_app
    from omniret.api.server import BackgroundServer
    from omniret.settings import Settings

    bound = inputs.CHARS_PER_TOKEN_BOUND
    if not cut:  # the baseline: no character bound, the tokenizer sees all of it (as before the fix)
        inputs.CHARS_PER_TOKEN_BOUND = 10**12
    try:
        settings = Settings(home=Path(tempfile.mkdtemp()), rerank_model="", max_text_chars=len(text) + 1,
                            max_body_bytes=len(text) * 2 + 1024)
        with BackgroundServer(create_app(settings, embedder=emb)) as srv:
            rss0 = _rss_mb()
            peak = [rss0]
            long_s: list[float] = []
            vec: list[np.ndarray] = []

            def long_request() -> None:
                t = time.perf_counter()
                r = httpx.post(srv.url + "/v1/embeddings", json={"input": text}, timeout=600)
                long_s.append(time.perf_counter() - t)
                vec.append(np.array(r.json()["data"][0]["embedding"], dtype=np.float32))

            th = threading.Thread(target=long_request)
            th.start()
            time.sleep(0.05)
            t = time.perf_counter()
            httpx.post(srv.url + "/v1/embeddings", json={"input": "hello"}, timeout=600).raise_for_status()
            short_s = time.perf_counter() - t
            while th.is_alive():
                peak.append(_rss_mb())
                th.join(0.02)
            return long_s[0], short_s, max(peak) - rss0, vec[0]
    finally:
        inputs.CHARS_PER_TOKEN_BOUND = bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chars", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from omniret.embed import load_embedder
    from omniret.registry import lookup

    spec = lookup("minilm")
    assert spec is not None and spec.path
    emb = load_embedder(spec.path)
    words = [f"word{i % 997}" for i in range(args.chars // 8)]
    text = " ".join(words)[: args.chars]
    emb.embed(["warm up"])
    rows: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    vecs = {}
    for _ in range(args.rounds):
        for cut in (False, True):  # A (baseline), B (cut), A, B ...
            long_s, short_s, rss, vec = run_once(emb, text, cut)
            rows[cut].append((long_s, short_s, rss))
            vecs[cut] = vec
    cos = float(vecs[True] @ vecs[False])
    print(f"text of {len(text)} characters, all-MiniLM-L6-v2 (reads 256 tokens), {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}; cosine cut vs full {cos:.6f}")
    for cut, label in ((False, "tokenise all (baseline)"), (True, "cut first (omniret)")):
        r = np.array(rows[cut])
        print(f"{label:>24}: long request {np.median(r[:, 0]):6.2f} s, one word behind it "
              f"{np.median(r[:, 1]):6.2f} s, RSS growth {np.median(r[:, 2]):7.1f} MB (medians)")
    print(f"max RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
