"""A few steps on the tiny text Qwen3-Embedding and the tiny Qwen3-VL reranker: the loss falls, and the saved
checkpoint reloads through omniret.embed / omniret.rerank with the in-memory outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from omniret.embed import load_embedder
from omniret.rerank import load_reranker
from omniret.training.config import load_config
from omniret.training.data import load_examples
from omniret.training.runner import train

WORDS = ["apple", "river", "engine", "violin"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def text_data(tmp_path: Path) -> Path:
    rows = [{"query": f"what is a {w}", "positive": f"{w}: a common word about {w}s",
             "negatives": [f"{WORDS[(i + 1) % 4]}: unrelated"], "instruction": "Find the definition"}
            for i, w in enumerate(WORDS)]
    return _write(tmp_path / "text.jsonl", rows)


def test_text_qwen3_embedding_trains_and_reloads(tiny_text_embedding: Path, copy_checkpoint, text_data: Path,
                                                 tmp_path: Path) -> None:
    src = copy_checkpoint(tiny_text_embedding)
    out = tmp_path / "out"
    cfg = load_config(model=str(src), data=text_data, out=out, max_steps=4, batch_size=4, lr=2e-3,
                      warmup_ratio=0.0, hard_negatives=1, matryoshka_dims=[16], temperature=0.1, device="cpu")
    summary = train(cfg)
    assert summary["history"][-1] < summary["history"][0]
    model = summary["model"]
    examples = load_examples(text_data)
    import torch

    with torch.no_grad():
        mem_q = torch.nn.functional.normalize(
            model.forward(model.prepare([ex.query for ex in examples], "Find the definition")), dim=-1).numpy()
        mem_d = torch.nn.functional.normalize(
            model.forward(model.prepare([ex.positive for ex in examples], None)), dim=-1).numpy()
    reloaded = load_embedder(out, device="cpu")
    np.testing.assert_allclose(reloaded.embed([ex.query for ex in examples], instruction="Find the definition"),
                               mem_q, atol=1e-4)
    np.testing.assert_allclose(reloaded.embed([ex.positive for ex in examples]), mem_d, atol=1e-4)
    before = load_embedder(src, device="cpu").embed([ex.positive for ex in examples])
    assert not np.allclose(before, mem_d, atol=1e-3)         # the weights really changed
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["stage"] == "embed" and 16 in meta["dims"]


@pytest.fixture
def rerank_data(tmp_path: Path) -> Path:
    colours = ["red", "green", "blue", "yellow"]
    for c in colours:
        Image.new("RGB", (48, 48), c).save(tmp_path / f"{c}.png")
    rows = [{"query": f"a {c} square", "positive": {"image": f"{c}.png", "text": c},
             "negatives": [f"{colours[(i + 1) % 4]} text", {"image": f"{colours[(i + 2) % 4]}.png"}]}
            for i, c in enumerate(colours)]
    return _write(tmp_path / "rerank.jsonl", rows)


@pytest.mark.parametrize("lora", [False, True])
def test_vl_reranker_trains_and_reloads(tiny_vl_reranker: Path, copy_checkpoint, rerank_data: Path,
                                        tmp_path: Path, lora: bool) -> None:
    src = copy_checkpoint(tiny_vl_reranker)
    out = tmp_path / "out"
    cfg = load_config(stage="rerank", model=str(src), data=rerank_data, out=out, max_steps=4, batch_size=4,
                      lr=5e-3 if lora else 1e-3, warmup_ratio=0.0, hard_negatives=2, lora=lora, device="cpu",
                      gradient_checkpointing=lora, save_steps=2)
    summary = train(cfg)
    hist = summary["history"]
    assert hist[-1] < hist[0]
    model = summary["model"]
    ex = load_examples(rerank_data)[0]
    mem = model.score(ex.query, ex.candidates)
    reloaded = load_reranker(out, device="cpu")
    np.testing.assert_allclose(reloaded.score(ex.query, ex.candidates), mem, atol=1e-5)
    base = load_reranker(src, device="cpu").score(ex.query, ex.candidates)
    assert not np.allclose(base, mem, atol=1e-4)
    with safe_open(str(src / "model.safetensors"), framework="pt") as f:
        head_before = f.get_tensor("lm_head.weight")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        head_after = f.get_tensor("lm_head.weight")
        assert any(k.startswith("model.language_model.") for k in f.keys())  # noqa: SIM118 - safe_open is not iterable
    changed = (head_after != head_before).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted([reloaded.yes_id, reloaded.no_id])  # only the yes/no rows moved
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["stage"] == "rerank" and meta["trained"]["yes_no_rows_trained"]


def test_vl_reranker_resume_and_listwise(tiny_vl_reranker: Path, rerank_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = dict(stage="rerank", model=str(tiny_vl_reranker), data=rerank_data, out=out, batch_size=2, lr=1e-3,
                  warmup_ratio=0.0, hard_negatives=2, save_steps=2, max_steps=3, rerank_loss="both", device="cpu")
    full = train(load_config(**common))["history"]
    resumed = train(load_config(**common, resume=True))
    assert resumed["steps"] == 3 and len(resumed["history"]) == 1
    np.testing.assert_allclose(resumed["history"], full[2:], rtol=1e-4)


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen3_text"])
def test_a_max_length_that_cuts_pairs_before_their_document_is_refused(arch: str, tiny_vl_reranker: Path,
                                                                         tiny_text_reranker: Path, text_data: Path,
                                                                         tmp_path: Path) -> None:
    """Below the smallest workable --max-length a pair's positive and negative are the same tokens; from it on
    they differ. The refusal comes before training and names the prompt's length and that value."""
    from omniret.errors import ConfigError
    from omniret.training.runner import judgement_lengths

    src = str(tiny_vl_reranker if arch == "qwen3_vl" else tiny_text_reranker)
    examples = load_examples(text_data)
    prompt, smallest = judgement_lengths(src, arch, examples)
    longest = max(examples, key=lambda ex: len(ex.query.texts[0]))

    def ids(max_length: int, doc: object) -> list[int]:
        rr = load_reranker(src, device="cpu", max_length=max_length)
        enc = rr.encode_pair(longest.query, doc, instruction=longest.instruction)  # type: ignore[attr-defined]
        return list(enc.input_ids if hasattr(enc, "input_ids") else enc)

    assert ids(smallest - 1, longest.positive) == ids(smallest - 1, longest.negatives[0])
    assert ids(smallest, longest.positive) != ids(smallest, longest.negatives[0])
    cfg = load_config(stage="rerank", model=src, data=text_data, out=tmp_path / "out", max_steps=1,
                      max_length=smallest - 1, device="cpu")
    with pytest.raises(ConfigError, match=rf"--max-length {smallest - 1}: the reranker's judgement prompt alone is "
                                          rf"{prompt} tokens.*use --max-length {smallest} or more"):
        train(cfg)
    assert not (tmp_path / "out" / "omniret.json").exists()
