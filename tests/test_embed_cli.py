"""``omniret embed`` on text, an image, a PDF and a video (tiny Qwen3-VL) and on text (MiniLM)."""

from __future__ import annotations

import json

import numpy as np
from media_files import write_video
from PIL import Image
from typer.testing import CliRunner

from omniret.cli import app

runner = CliRunner()


def test_embed_text_image_pdf_video(tiny_vl_embedding, tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(img)
    pdf = tmp_path / "d.pdf"
    Image.new("RGB", (60, 80), "white").save(pdf, save_all=True, append_images=[Image.new("RGB", (60, 80))])
    video = write_video(tmp_path / "v.mp4", n=8, fps=4)
    out = tmp_path / "vecs.jsonl"
    r = runner.invoke(app, ["embed", "hello", "--image", str(img), "--image", str(pdf), "--video", str(video),
                            "--model", str(tiny_vl_embedding), "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["text:0", str(img), f"{pdf}#page=1", f"{pdf}#page=2", str(video)]
    vecs = np.array([row["embedding"] for row in rows])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert "wrote 5 x 64 vectors" in r.output


def test_embed_jsonl_with_bad_item(tiny_vl_embedding, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"text": "one"}\n{"image": "missing.png", "id": "bad"}\n"two"\n')
    out = tmp_path / "v.npy"
    args = ["embed", "-f", str(items), "--model", str(tiny_vl_embedding), "--device", "cpu", "-o", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    said = " ".join(r.output.split())  # rich wraps long lines
    assert "item 1 (id='bad')" in said and "missing.png: no such file" in said
    r = runner.invoke(app, [*args, "--skip-errors"])
    assert r.exit_code == 0, r.output
    assert np.load(out).shape == (2, 64)


def test_embed_minilm_text(minilm_path, tmp_path):
    out = tmp_path / "m.npy"
    r = runner.invoke(app, ["embed", "a cat sits on the mat", "a kitten rests on a rug", "stock prices fell",
                            "--model", "minilm", "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 0, r.output
    v = np.load(out)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2]
