"""``omniret serve`` as a real process: it serves a collection indexed by the CLI, with an API key, and the
OpenAI client works against it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from typer.testing import CliRunner

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "docs" / "gardening.txt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_serves_a_cli_indexed_collection(minilm_path: Path, tmp_path: Path) -> None:
    from omniret.cli import app as cli

    root = tmp_path / "cols"
    res = CliRunner().invoke(cli, ["index", str(SAMPLE), "--collection", "garden", "--model", str(minilm_path),
                                   "--root", str(root), "--json"])
    assert res.exit_code == 0, res.output
    port = _free_port()
    cmd = [sys.executable, "-c", "from omniret.cli import main; main()", "serve", "--port", str(port),
           "--model", str(minilm_path), "--no-reranker", "--root", str(root), "--api-key", "s3cret",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "omniret serve did not become ready in 120 s"
            time.sleep(0.3)
        assert httpx.get(f"{url}/v1/collections").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        r = httpx.post(f"{url}/v1/collections/garden/search", json={"text": "when to water tomatoes", "k": 1},
                       headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["payload"]["source"] == "gardening.txt"
        out = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret").embeddings.create(model="minilm",
                                                                                      input=["hello"])
        assert len(out.data[0].embedding) == 384
    finally:
        proc.terminate()
        proc.wait(30)
