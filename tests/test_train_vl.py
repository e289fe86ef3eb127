"""A few steps of the Qwen3-VL embedding stages on the tiny checkpoint: loss falls, the saved checkpoint
reloads through omniret.embed with the in-memory vectors, resume continues, LoRA merges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omniret.embed import load_embedder
from omniret.errors import ConfigError
from omniret.training.config import load_config
from omniret.training.data import load_examples
from omniret.training.runner import train


@pytest.fixture
def vl_data(tmp_path: Path) -> Path:
    colours = ["red", "green", "blue", "yellow"]
    for c in colours:
        Image.new("RGB", (64, 64), c).save(tmp_path / f"{c}.png")
    rows = [{"query": f"a {c} square", "positive": {"image": f"{c}.png", "text": c},
             "negatives": [colours[(i + 1) % 4] + " text"], "instruction": "Find the colour"}
            for i, c in enumerate(colours)]
    f = tmp_path / "train.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def _vectors(model, examples) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.nn.functional.normalize(model.forward(model.prepare([ex.positive for ex in examples], None)),
                                             dim=-1).numpy()


@pytest.mark.parametrize("lora", [False, True])
def test_vl_contrastive_steps_lower_loss_and_reload(tiny_vl_embedding: Path, vl_data: Path, tmp_path: Path,
                                                    lora: bool) -> None:
    out = tmp_path / "out"
    cfg = load_config(model=str(tiny_vl_embedding), data=vl_data, out=out, max_steps=6, batch_size=4, lr=1e-3 if not lora else 5e-3,
                      warmup_ratio=0.0, hard_negatives=1, matryoshka_dims=[32], lora=lora, gradcache_chunk=3,
                      temperature=0.1, device="cpu")
    summary = train(cfg)
    hist = summary["history"]
    assert hist[-1] < hist[0]
    examples = load_examples(vl_data)
    model = summary["model"]
    mem = _vectors(model, examples)
    reloaded = load_embedder(out, device="cpu").embed([ex.positive for ex in examples])
    np.testing.assert_allclose(reloaded, mem, atol=1e-4)
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["trained"]["stage"] == "embed" and 32 in meta["dims"]


def test_gradcache_matches_plain_backward(tiny_vl_embedding: Path, vl_data: Path, tmp_path: Path) -> None:
    losses = {}
    for chunk in (None, 2):
        cfg = load_config(model=str(tiny_vl_embedding), data=vl_data, out=tmp_path / f"o{chunk}", max_steps=2,
                          batch_size=4, lr=1e-3, warmup_ratio=0.0, hard_negatives=1, gradcache_chunk=chunk,
                          device="cpu")
        losses[chunk] = train(cfg)["history"]
    np.testing.assert_allclose(losses[None], losses[2], rtol=1e-4)


def test_resume_continues_from_saved_step(tiny_vl_embedding: Path, vl_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = dict(model=str(tiny_vl_embedding), data=vl_data, out=out, batch_size=2, lr=1e-3, warmup_ratio=0.0,
                  hard_negatives=1, save_steps=2, max_steps=4, device="cpu")
    full = train(load_config(**common))["history"]
    assert (out / "checkpoints" / "checkpoint-2" / ".metadata").is_file()   # a DCP checkpoint
    with pytest.raises(ConfigError, match="output directory is not empty"):
        train(load_config(**common))
    resumed = train(load_config(**common, resume=True))      # picks up after step 2, as if interrupted there
    assert resumed["steps"] == 4 and len(resumed["history"]) == 2
    np.testing.assert_allclose(resumed["history"], full[2:], rtol=1e-4)
    # a checkpoint of the full tower holds no LoRA adapters: named, not half-loaded
    with pytest.raises(ConfigError, match=r"--resume: .*checkpoint-2 does not fit this model .*resume with the model, "
                                          r"LoRA settings and stage that wrote it"):
        train(load_config(**common, resume=True, lora=True))
