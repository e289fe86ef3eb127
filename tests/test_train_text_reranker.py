"""A few steps of the reranker stage on the tiny text Qwen3-Reranker: the loss falls, the saved checkpoint
reloads through omniret.rerank with the in-memory scores, only the yes/no LM-head rows move, resume continues,
and ``omniret train rerank`` runs it from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from omniret.cli import app
from omniret.rerank import load_reranker
from omniret.training.config import load_config
from omniret.training.data import load_examples
from omniret.training.runner import train
from omniret.training.vl_trainer import TextRerankModel

WORDS = ["apple", "river", "engine", "violin"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [{"query": f"what is a {w}", "positive": f"{w}: a common word about {w}s",
             "negatives": [f"{WORDS[(i + 1) % 4]}: unrelated", f"{WORDS[(i + 2) % 4]} things"],
             "instruction": "Find the definition"}
            for i, w in enumerate(WORDS)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _tensor(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(name)


def _check_saved(model: TextRerankModel, src: Path, out: Path, data: Path) -> None:
    """The saved checkpoint scores as the in-memory model, the tower changed, and of the LM head only the
    yes/no rows moved."""
    ex = load_examples(data)[0]
    mem = model.score(ex.query, ex.candidates, instruction=ex.instruction)
    reloaded = load_reranker(out, device="cpu")
    np.testing.assert_allclose(reloaded.score(ex.query, ex.candidates, instruction=ex.instruction), mem, atol=1e-5)
    # the trainer fed the model exactly the reranker's own pair encoding
    assert model.prepare(ex.query, ex.candidates[:1], ex.instruction)[0] == \
        reloaded.encode_pair(ex.query, ex.candidates[0], instruction=ex.instruction)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(_tensor(out, q_proj), _tensor(src, q_proj))
    changed = (_tensor(out, "lm_head.weight") != _tensor(src, "lm_head.weight")).any(dim=1)
    assert changed.nonzero().flatten().tolist() == sorted([reloaded.yes_id, reloaded.no_id])


def test_text_reranker_full_pointwise(tiny_text_reranker: Path, copy_checkpoint, data: Path, tmp_path: Path) -> None:
    src = copy_checkpoint(tiny_text_reranker)
    out = tmp_path / "out"
    summary = train(load_config(stage="rerank", model=str(src), data=data, out=out, max_steps=4, batch_size=4,
                                lr=1e-3, warmup_ratio=0.0, hard_negatives=2, device="cpu"))
    hist = summary["history"]
    assert hist[-1] < hist[0]
    assert isinstance(summary["model"], TextRerankModel)
    _check_saved(summary["model"], src, out, data)
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["stage"] == "rerank" and meta["trained"]["yes_no_rows_trained"]
    assert meta["trained"]["losses"]["RerankerLoss"]["mode"] == "pointwise" and not meta["trained"]["lora"]


def test_text_reranker_lora_both_resumes(tiny_text_reranker: Path, copy_checkpoint, data: Path,
                                         tmp_path: Path) -> None:
    src = copy_checkpoint(tiny_text_reranker)
    out = tmp_path / "out"
    common = dict(stage="rerank", model=str(src), data=data, out=out, max_steps=4, batch_size=4, lr=5e-3,
                  warmup_ratio=0.0, hard_negatives=2, lora=True, gradient_checkpointing=True, rerank_loss="both",
                  save_steps=2, device="cpu")
    full = train(load_config(**common))["history"]
    assert full[-1] < full[0]
    resumed = train(load_config(**common, resume=True))   # continues from checkpoint-2
    assert resumed["steps"] == 4 and len(resumed["history"]) == 2
    np.testing.assert_allclose(resumed["history"], full[2:], rtol=1e-4)
    _check_saved(resumed["model"], src, out, data)
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["lora"] and meta["trained"]["losses"]["RerankerLoss"]["mode"] == "both"


def test_train_rerank_cli_text_qwen3(tiny_text_reranker: Path, copy_checkpoint, data: Path, tmp_path: Path) -> None:
    src = copy_checkpoint(tiny_text_reranker)
    out = tmp_path / "cli-out"
    res = CliRunner().invoke(app, ["train", "rerank", "--reranker", str(src), "--data", str(data), "--out", str(out),
                                   "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "trained rerank: 3 steps" in res.output
    scores = load_reranker(out, device="cpu").score("what is a river", ["river: water", "violin things"])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
