"""Core shared parts: Item, errors, settings, registry, CLI skeleton."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from omniret import Item, ItemError
from omniret.cli import app
from omniret.registry import list_models, lookup, resolve
from omniret.settings import Settings, get_settings


def test_item_from_reference_dict_keeps_every_key():
    d = {"text": ["a", "b"], "image": "x.png", "video": "v.mp4", "fps": 2, "max_frames": 8,
         "instruction": "Find it", "id": 7, "metadata": {"k": 1}}
    item = Item.from_dict(d)
    assert item.texts == ["a", "b"] and item.images == ["x.png"] and item.videos == ["v.mp4"]
    assert item.id == "7" and item.fps == 2 and item.max_frames == 8 and item.metadata == {"k": 1}
    assert item.modalities == {"text", "image", "video"}
    assert Item.from_dict(item.to_dict()) == item


def test_item_video_frame_list_is_one_video():
    assert Item(video=["f1.jpg", "f2.jpg"]).videos == [["f1.jpg", "f2.jpg"]]
    assert Item(video=["a.mp4", "b.mp4"]).videos == ["a.mp4", "b.mp4"]


def test_item_unknown_key_names_the_item():
    with pytest.raises(ItemError, match=r"item 3: unknown key\(s\) \['caption'\]"):
        Item.from_dict({"caption": "x"}, index=3)


def test_empty_item():
    assert Item().is_empty and Item(text="").modalities == {"text"}


def test_settings_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('embed_model = "from-file"\nmax_batch_items = 7\nport = 9\n')
    monkeypatch.setenv("OMNIRET_CONFIG", str(cfg))
    monkeypatch.setenv("OMNIRET_MAX_BATCH_ITEMS", "11")
    s = get_settings(port=1234)
    assert s.embed_model == "from-file" and s.max_batch_items == 11 and s.port == 1234


def test_settings_bad_value_names_field(monkeypatch):
    monkeypatch.setenv("OMNIRET_MAX_BATCH_ITEMS", "-3")
    with pytest.raises(ValueError, match="max_batch_items"):
        get_settings()


def test_import_reads_nothing():
    code = "import sys, omniret, omniret.embed, omniret.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_registry_records():
    spec = lookup("Qwen/Qwen3-VL-Embedding-2B")
    assert spec is not None and spec.dim == 2048 and 64 in spec.dims and "video" in spec.modalities
    assert lookup("minilm").dims == (384,)
    assert {s.kind for s in list_models()} == {"embedding", "reranker"}
    assert resolve("no/such-model")[1] is None


def test_cli_models_json():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    names = [m["name"] for m in json.loads(result.output)]
    assert "Qwen/Qwen3-VL-Reranker-2B" in names


def test_settings_defaults_isolated_home(_isolated_home):
    assert Settings().home == _isolated_home


def test_jsonl_reader_names_file_and_line(tmp_path):
    from omniret.jsonl import iter_jsonl, resolve_media

    p = tmp_path / "items.jsonl"
    p.write_text('{"text": "a", "image": "img/x.png"}\n\n"plain"\n[1, 2]\n', encoding="utf-8")
    rows = iter_jsonl(p, strings_as_text=True, error=ItemError)
    assert next(rows) == (1, {"text": "a", "image": "img/x.png"})
    assert next(rows) == (3, {"text": "plain"})
    with pytest.raises(ItemError, match=r"items.jsonl:4: expected an object or a string, got list"):
        next(rows)
    assert resolve_media(["img/x.png", "data:image/png;base64,AA"], tmp_path) == [
        str(tmp_path / "img" / "x.png"), "data:image/png;base64,AA"]
