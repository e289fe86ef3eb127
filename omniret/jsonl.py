"""Reading JSONL files of items: one parser for the CLI, ingestion manifests, evaluation and training data.

A bad line raises the caller's error type with ``file:line: reason``, so every reader reports alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from omniret.errors import ConfigError, OmniretError

_REMOTE = ("data:", "http://", "https://")


def iter_jsonl(path: str | Path, *, strings_as_text: bool = False,
               error: type[OmniretError] = ConfigError) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line.

    With ``strings_as_text`` a JSON string line becomes ``{"text": ...}``; anything else that is not an
    object raises ``error`` naming the file and line.
    """
    for lineno, obj in iter_json_values(path, error=error):
        if strings_as_text and isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            kind = "an object or a string" if strings_as_text else "a JSON object"
            raise error(f"{path}:{lineno}: expected {kind}, got {type(obj).__name__}")
        yield lineno, cast(dict[str, Any], obj)


def iter_json_values(path: str | Path, *, error: type[OmniretError] = ConfigError) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for each non-blank line, whatever JSON value it holds (for readers
    that explain a wrong shape in their own terms); a missing file or a bad line raises ``error``."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such file")
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{p}:{lineno}: not valid JSON ({e.msg})") from e
            yield lineno, value


def is_remote(value: str) -> bool:
    """Whether a media reference is a data URI or a URL rather than a file path."""
    return value.startswith(_REMOTE)


def resolve_media(value: Any, base: Path) -> Any:
    """Media paths (a string or a list of them) made relative to ``base``; URIs and URLs stay as they are."""
    if isinstance(value, str) and not value.startswith(_REMOTE):
        return str((base / value).resolve())
    if isinstance(value, list):
        return [resolve_media(v, base) for v in cast(list[Any], value)]
    return value
