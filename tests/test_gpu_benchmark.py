"""benchmarks/gpu_throughput.py runs end to end on CPU with ``--tiny``, so it cannot rot before a GPU run.

The GPU figures themselves come from a machine with the device tool (benchmarks/RESULTS.md says how);
here the tiny model checks every code path, the JSON layout and that both sides agree in float32.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"


def _load_module():
    if "gpu_throughput" in sys.modules:
        return sys.modules["gpu_throughput"]
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_throughput"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_every_field(tiny_vl_embedding: Path, tmp_path: Path):
    bench = _load_module()
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--checkpoint", str(tiny_vl_embedding), "--workloads", "all",
         "--profile", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # CPU seconds, not wall time: the shared CI machine's load must not decide the outcome
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 60, f"the --tiny run used {cpu:.0f} CPU seconds"

    report = json.loads(out.read_text())
    assert report["ok"] is True
    for key in bench.META_FIELDS:
        assert key in report["meta"], key
    assert report["meta"]["device"] == "cpu" and report["meta"]["dtype"] == "float32"
    assert "re-implementation of the reference's process()" in report["meta"]["reference"]
    assert set(report["workloads"]) == set(bench.ALL_WORKLOADS)
    for name, w in report["workloads"].items():
        for label in ("reference", "omniret"):
            for key in bench.SIDE_FIELDS:
                assert key in w[label], (name, label, key)
            assert w[label]["items_per_s"] > 0
        assert w["speedup"] > 0
        for key in bench.CHECK_FIELDS:
            assert key in w["check"], (name, key)
        assert w["check"]["ok"], (name, w["check"])
    assert report["workloads"]["text"]["check"]["threshold"] == 0.99999
    assert report["workloads"]["rerank"]["reference"]["batches"] == report["workloads"]["rerank"]["items"]
    assert report["profile"]["top_tottime"]
    assert "ours/ref" in proc.stdout


def test_configs_have_the_published_2b_shape():
    bench = _load_module()
    cfg = bench.model_config("2b")
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.head_dim, text.intermediate_size, text.vocab_size) == (2048, 28, 16, 8, 128, 6144, 151936)
    assert cfg.tie_word_embeddings and text.tie_word_embeddings
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.out_hidden_size,
            vision.deepstack_visual_indexes) == (24, 1024, 16, 2048, [5, 11, 17])
    # Qwen3-VL-2B has about 2.13 billion parameters (tied embeddings counted once)
    assert 2.0e9 < bench.count_parameters(cfg) < 2.3e9


def test_built_checkpoint_loads_and_embeds(tmp_path: Path):
    import torch

    from omniret.embed import load_embedder

    bench = _load_module()
    ckpt = bench.build_checkpoint(tmp_path / "ckpt", "tiny", device=torch.device("cpu"), dtype=torch.float32, seed=0)
    emb = load_embedder(str(ckpt), device="cpu")
    vecs = emb.embed([{"text": "a cat"}, {"text": "a dog on a bridge"}])
    assert vecs.shape == (2, 64)
    assert float(vecs[0] @ vecs[1]) < 0.999


def test_unknown_workload_is_refused(capsys: pytest.CaptureFixture[str]):
    bench = _load_module()
    assert bench.main(["--tiny", "--workloads", "text,sound"]) == 2
    assert "unknown workload(s) ['sound']" in capsys.readouterr().err


def test_reference_falls_back_to_chunks_when_one_forward_does_not_fit(tiny_vl_embedding: Path):
    import torch

    from omniret.embed import load_embedder

    bench = _load_module()
    emb = load_embedder(str(tiny_vl_embedding), device="cpu")

    class SmallMemory(torch.nn.Module):
        """The real model, but a forward of more than 2 rows runs out of memory, as a big one would on a GPU."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, **inputs):  # noqa: ANN003, ANN201
            if inputs["input_ids"].shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
            return self.model(**inputs)

    items = [{"text": "short"}, {"text": "a longer text " * 9}, {"text": "mid length text " * 3},
             {"text": "x"}, {"text": "another one " * 5}]
    ref = bench.Reference(SmallMemory(emb.model), emb.inputs, device=torch.device("cpu"), dtype=torch.float32,
                          max_length=8192)
    vecs = ref.forward(ref.prepare(items))
    assert ref.chunk == 2
    np.testing.assert_allclose(vecs, emb.embed(items), atol=2e-5)
