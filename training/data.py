"""Training data: JSONL of ``{"query", "positive", "negatives", "instruction"}`` examples, and corpora.

An item is a string (text) or a reference-style dict (``{"text", "image", "video", ...}``); media paths
are relative to the JSONL file. Every line is validated before any model work, and a bad line raises
``ItemError`` (or ``ConfigError`` for a missing file) as ``file:line: reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omniret.errors import ConfigError, ItemError
from omniret.jsonl import is_remote, iter_json_values, resolve_media
from omniret.types import ITEM_KEYS, Item

EXAMPLE_KEYS = ("query", "positive", "negatives", "instruction", "scores", "id")
_MEDIA_KEYS = ("image", "video")


@dataclass
class TrainExample:
    """One query with its positive, hard negatives, optional instruction and optional teacher scores.

    ``scores`` (one per candidate: the positive first, then each negative) hold teacher judgements
    for distillation when they were computed ahead of time.
    """

    query: Item
    positive: Item
    negatives: list[Item] = field(default_factory=list)
    instruction: str | None = None
    scores: list[float] | None = None
    id: str | None = None

    @property
    def candidates(self) -> list[Item]:
        """The positive, then the negatives."""
        return [self.positive, *self.negatives]

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        """The JSONL form; with ``base``, media paths are written relative to it when they lie under it."""
        out: dict[str, Any] = {"query": _item_json(self.query, base), "positive": _item_json(self.positive, base),
                               "negatives": [_item_json(n, base) for n in self.negatives]}
        if self.instruction is not None:
            out["instruction"] = self.instruction
        if self.scores is not None:
            out["scores"] = list(self.scores)
        if self.id is not None:
            out["id"] = self.id
        return out


def _item_json(item: Item, base: Path | None) -> Any:
    d = item.to_dict()
    if set(d) == {"text"} and isinstance(d["text"], str):
        return d["text"]
    if base is not None:
        for key in _MEDIA_KEYS:
            if key in d:
                d[key] = _unrelative(d[key], base)
    return d


def _unrelative(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_unrelative(v, base) for v in value]
    if isinstance(value, str):
        try:
            return str(Path(value).resolve().relative_to(base.resolve()))
        except ValueError:
            return value
    return value


def _object(obj: Any, where: str, keys: Sequence[str], *, expected: str, what: str) -> dict[str, Any]:
    """``obj`` as a dict with only ``keys``; ``ItemError`` naming ``where`` otherwise."""
    if not isinstance(obj, dict):
        raise ItemError(f"{where}: expected {expected} got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise ItemError(f"{where}: unknown key(s) {unknown}; {what} takes {list(keys)}")
    return dict(cast(dict[str, Any], obj))


def parse_item(obj: Any, *, base: Path, where: str, check_files: bool = True) -> Item:
    """One item from its JSON form (string or dict), media resolved against ``base`` and checked."""
    if isinstance(obj, str):
        if not obj.strip():
            raise ItemError(f"{where}: empty text")
        return Item(text=obj)
    d = _object(obj, where, ITEM_KEYS, expected=f"a string or an object with keys {list(ITEM_KEYS)},",
                what="an item")
    for key in _MEDIA_KEYS:
        if d.get(key) is not None:
            d[key] = resolve_media(d[key], base)
    item = Item.from_dict(d)
    if item.is_empty:
        raise ItemError(f"{where}: the item has no text, image or video")
    if check_files:
        for key, values in (("image", item.images), ("video", _flat(item.videos))):
            for v in values:
                if isinstance(v, str) and not is_remote(v) and not Path(v).is_file():
                    raise ItemError(f"{where}: {key} file {v} does not exist")
    return item


def _flat(videos: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in videos:
        out.extend(v if isinstance(v, list) else [v])
    return out


def _lines(path: Path) -> Iterable[tuple[int, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such data file")
    return iter_json_values(path, error=ItemError)


def parse_example(obj: Any, *, base: Path, where: str, check_files: bool = True) -> TrainExample:
    """One training example from its JSON object (see module docstring)."""
    obj = _object(obj, where, EXAMPLE_KEYS, expected="an object with keys query, positive, negatives, instruction;",
                  what="an example")
    for key in ("query", "positive"):
        if obj.get(key) is None:
            raise ItemError(f"{where}: missing {key!r}")
    negatives = obj.get("negatives") or []
    if not isinstance(negatives, list):
        raise ItemError(f"{where}: 'negatives' must be a list of items, got {type(negatives).__name__}")
    instruction = obj.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise ItemError(f"{where}: 'instruction' must be a string, got {type(instruction).__name__}")
    scores = obj.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) for s in scores):
            raise ItemError(f"{where}: 'scores' must be a list of numbers")
        if len(scores) != 1 + len(negatives):
            raise ItemError(f"{where}: 'scores' has {len(scores)} values for {1 + len(negatives)} candidates "
                            "(the positive, then each negative)")
    return TrainExample(
        query=parse_item(obj["query"], base=base, where=f"{where}: query", check_files=check_files),
        positive=parse_item(obj["positive"], base=base, where=f"{where}: positive", check_files=check_files),
        negatives=[parse_item(n, base=base, where=f"{where}: negatives[{i}]", check_files=check_files)
                   for i, n in enumerate(negatives)],
        instruction=instruction, scores=[float(s) for s in scores] if scores is not None else None,
        id=None if obj.get("id") is None else str(obj["id"]),
    )


def load_examples(path: str | Path, *, check_files: bool = True) -> list[TrainExample]:
    """Every example of a training JSONL file, validated; raises ``ItemError`` as ``file:line: reason``."""
    p = Path(path)
    out = [parse_example(obj, base=p.parent, where=f"{p}:{lineno}", check_files=check_files)
           for lineno, obj in _lines(p)]
    if not out:
        raise ConfigError(f"{p}: no training examples in the file")
    return out


def write_examples(path: str | Path, examples: Iterable[TrainExample]) -> int:
    """Write examples as JSONL (media paths relative to the file where they lie under its folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_dict(p.parent), ensure_ascii=False) + "\n")
            n += 1
    return n


def load_corpus(path: str | Path, *, check_files: bool = True) -> list[Item]:
    """A corpus JSONL: one item per line (a string or an item dict); ids default to the line number."""
    p = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    for lineno, obj in _lines(p):
        item = parse_item(obj, base=p.parent, where=f"{p}:{lineno}", check_files=check_files)
        if item.id is None:
            item.id = str(lineno)
        if item.id in seen:
            raise ItemError(f"{p}:{lineno}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise ConfigError(f"{p}: no items in the corpus file")
    return items


def text_only(item: Item, where: str) -> str:
    """The item's text, for the sentence-transformers models the text recipes train (the anchored reranker
    is built from them too); ``ItemError`` naming ``where`` when the item holds images or video."""
    if item.modalities - {"text"}:
        raise ItemError(f"{where}: a sentence-transformers model takes text only, the item has "
                        f"{', '.join(sorted(item.modalities))}")
    return "".join(item.texts)


def item_key(item: Item) -> str:
    """A content key for an item (what makes two items the same document), used to skip positives."""
    return json.dumps({k: v for k, v in item.to_dict().items() if k not in ("id", "metadata")},
                      sort_keys=True, default=str)
