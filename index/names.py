"""Where collections live and what they may be called: one rule, used by the library, CLI and service."""

from __future__ import annotations

import os
import re
from pathlib import Path

from omniret.errors import ConfigError

#: a collection name: letters, digits, '.', '_' or '-', at most 128, starting with a letter or digit (it is a
#: folder name and a Qdrant collection name)
COLLECTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(COLLECTION_NAME)


def check_collection_name(name: object) -> str:
    """``name`` when it is a valid collection name, else ``ConfigError`` naming it and the rule."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, "
                          "starting with a letter or digit)")
    return name


def collections_root(root: str | os.PathLike[str] | None) -> Path:
    """The collections folder: the caller's (the CLI and the service pass their settings'), else the default
    ``$OMNIRET_HOME/collections``. A library call reads no settings of its own."""
    if root is not None:
        return Path(root).expanduser()
    from omniret.settings import default_home

    return default_home() / "collections"
