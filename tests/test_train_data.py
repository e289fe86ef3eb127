"""Training JSONL: items, media paths relative to the file, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from omniret.errors import ConfigError, ItemError
from omniret.training.data import load_corpus, load_examples, write_examples


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_loads_text_and_image_items_relative_to_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "img" / "a.png")
    f = _write(tmp_path / "train.jsonl", [
        {"query": "a red square", "positive": {"image": "img/a.png", "text": "red"}, "negatives": ["blue"],
         "instruction": "Find the picture"},
        {"query": {"text": "q2"}, "positive": "p2"},
    ])
    ex = load_examples(f)
    assert ex[0].positive.image == str(tmp_path / "img" / "a.png")
    assert ex[0].negatives[0].text == "blue" and ex[0].instruction == "Find the picture"
    assert ex[1].negatives == []
    out = tmp_path / "copy.jsonl"
    write_examples(out, ex)
    assert json.loads(out.read_text().splitlines()[0])["positive"]["image"] == "img/a.png"
    assert load_examples(out)[0].positive.image == str(tmp_path / "img" / "a.png")


@pytest.mark.parametrize(("row", "match"), [
    ('{"query": "q"', r"train.jsonl:2: not valid JSON"),
    ({"query": "q"}, r"train.jsonl:2: missing 'positive'"),
    ({"query": "q", "positive": "p", "negatives": "n"}, r"train.jsonl:2: 'negatives' must be a list"),
    ({"query": "q", "positive": {"image": "nope.png"}}, r"train.jsonl:2: positive: image file .*nope.png does not exist"),
    ({"query": "q", "positive": "p", "negatives": ["", "x"]}, r"train.jsonl:2: negatives\[0\]: empty text"),
    ({"query": "q", "positive": {"txt": "p"}}, r"train.jsonl:2: positive: unknown key\(s\) \['txt'\]"),
    ({"query": "q", "positive": "p", "extra": 1}, r"train.jsonl:2: unknown key\(s\) \['extra'\]"),
    ({"query": "q", "positive": "p", "negatives": ["n"], "scores": [1.0]}, r"train.jsonl:2: 'scores' has 1 values"),
])
def test_bad_lines_name_the_line(tmp_path: Path, row, match: str) -> None:
    f = _write(tmp_path / "train.jsonl", [{"query": "ok", "positive": "fine"}, row])
    with pytest.raises(ItemError, match=match):
        load_examples(f)


def test_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such data file"):
        load_examples(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no training examples"):
        load_examples(tmp_path / "empty.jsonl")


def test_corpus_ids_default_to_line_and_must_be_unique(tmp_path: Path) -> None:
    items = load_corpus(_write(tmp_path / "c.jsonl", ['"doc one"', {"text": "doc two", "id": "d2"}]))
    assert [i.id for i in items] == ["1", "d2"]
    with pytest.raises(ItemError, match=r"c2.jsonl:2: duplicate id 'a'"):
        load_corpus(_write(tmp_path / "c2.jsonl", [{"text": "x", "id": "a"}, {"text": "y", "id": "a"}]))
