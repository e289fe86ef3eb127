"""Merging checkpoints (linear, slerp) and the train/merge CLI on real small models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from omniret.cli import app
from omniret.errors import ConfigError
from omniret.training.merging import merge_state_dicts, slerp


def test_slerp_and_linear_on_vectors() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([2 ** -0.5, 2 ** -0.5]), atol=1e-6)
    merged = merge_state_dicts([{"w": a, "n": torch.tensor([3])}, {"w": b, "n": torch.tensor([4])}], method="linear")
    assert torch.allclose(merged["w"], torch.tensor([0.5, 0.5])) and merged["n"].item() == 3
    with pytest.raises(ConfigError, match="give one weight per checkpoint"):
        merge_state_dicts([{"w": a}, {"w": b}], weights=[1.0])


def test_merge_cli_linear_is_mean_and_reloads(tiny_vl_embedding: Path, copy_checkpoint, tmp_path: Path) -> None:
    a = copy_checkpoint(tiny_vl_embedding)
    b = tmp_path / "b"
    b.mkdir()
    for f in a.iterdir():
        (b / f.name).write_bytes(f.read_bytes())
    sa = load_file(str(a / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v * 3 if v.is_floating_point() else v for k, v in sa.items()}, str(b / "model.safetensors"))
    out = tmp_path / "merged"
    res = CliRunner().invoke(app, ["merge", str(a), str(b), "--out", str(out), "--method", "linear",
                                   "--weights", "0.5,0.5"])
    assert res.exit_code == 0, res.output
    merged = load_file(str(out / "model.safetensors"))
    key = "model.language_model.embed_tokens.weight"
    assert torch.allclose(merged[key], 2 * sa[key], atol=1e-6)
    assert json.loads((out / "omniret.json").read_text())["merged_from"]["method"] == "linear"
    from omniret.embed import load_embedder

    assert load_embedder(out, device="cpu").embed(["hi"]).shape[0] == 1
    bad = CliRunner().invoke(app, ["merge", str(a), str(b), "--out", str(tmp_path / "x"), "--method", "cubic"])
    assert bad.exit_code == 1 and "uselinearorslerp" in "".join(bad.output.split())


def test_train_embed_cli_bad_line_names_it(tmp_path: Path, minilm_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["train", "embed", "--model", str(minilm_path), "--data", str(data),
                                   "--out", str(tmp_path / "o")])
    flat = "".join(res.output.split())
    assert res.exit_code == 1 and "train.jsonl:2:missing'positive'" in flat


def test_train_embed_cli_minilm_matryoshka(tmp_path: Path, minilm_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"query": f"definition {i}", "positive": f"word {i}", "negatives": [f"other {i}"]} for i in range(8)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["train", "embed", "--model", str(minilm_path), "--data", str(data),
                                   "--out", str(out), "--max-steps", "2", "--batch-size", "4",
                                   "--dims", "128,64"])
    assert res.exit_code == 0, res.output
    from sentence_transformers import SentenceTransformer

    from omniret.embed import load_embedder

    e = load_embedder(out, device="cpu")
    assert e.dims == (64, 128, 384)
    plain = SentenceTransformer(str(out), device="cpu").encode(["word 1"], normalize_embeddings=True)
    assert abs(float((e.embed(["word 1"]) * plain).sum()) - 1.0) < 1e-5
