"""``collection.json``: what a collection was made with, typed.

Every manifest written so far reads: the first ones had no ``funnel_dim``, ``lexical`` or ``modalities``;
``recall_tuning`` appears after ``Collection.tune``. Only ``model`` and ``dim`` are required. Keys this
version does not know are kept and written back unchanged (``extra``), so a manifest a newer omniret
wrote survives an older one opening it; they never shadow the known fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

from omniret.errors import CollectionError, ConfigError
from omniret.index.lexical import AnalyzerConfig
from omniret.types import JSON

#: the manifest's file name in a collection's folder
MANIFEST = "collection.json"
Backend = Literal["faiss", "qdrant"]
BACKENDS: tuple[Backend, ...] = ("faiss", "qdrant")
_KNOWN = ("name", "model", "dim", "instruction", "funnel_dim", "lexical", "backend", "index", "modalities", "url",
          "created", "store_options", "recall_tuning", "model_backend")


@dataclass(frozen=True)
class Manifest:
    """A collection's record: its model and vector space, store, and lexical analyser."""

    name: str
    model: str
    dim: int
    instruction: str | None = None
    funnel_dim: int | None = None
    #: the lexical analyser; None for a collection made before the lexical index (it gets one on open)
    lexical: AnalyzerConfig | None = None
    backend: Backend = "faiss"
    #: FAISS index kind, or "qdrant"
    index: str = "flat"
    modalities: tuple[str, ...] = ()
    #: a Qdrant server's URL (None: FAISS, or Qdrant's embedded local mode in the folder)
    url: str | None = None
    created: str | None = None
    #: the store options given at creation (and the ones recall tuning chose); never an API key
    store_options: Mapping[str, JSON] = field(default_factory=lambda: {})
    recall_tuning: Mapping[str, JSON] | None = None
    #: the runtime that embedded the collection's items at creation (torch, onnx, onnx-int8, openvino);
    #: None for collections made before backends were recorded
    model_backend: str | None = None
    #: keys this version does not know, kept as they were
    extra: Mapping[str, JSON] = field(default_factory=lambda: {})

    @classmethod
    def from_json(cls, data: Mapping[str, JSON], *, where: str) -> Manifest:
        """A manifest from its JSON object; ``CollectionError`` naming ``where`` and the bad key."""
        def bad(key: str, want: str) -> CollectionError:
            return CollectionError(f"{where}: {MANIFEST} key {key!r} must be {want}, got {data.get(key)!r}")

        def opt_str(key: str) -> str | None:
            v = data.get(key)
            if v is not None and not isinstance(v, str):
                raise bad(key, "a string or null")
            return v

        def opt_int(key: str) -> int | None:
            v = data.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise bad(key, "an integer or null")
            return v

        def opt_map(key: str) -> dict[str, JSON] | None:
            v = data.get(key)
            if v is None or isinstance(v, dict):
                return v
            raise bad(key, "an object or null")

        model, dim = data.get("model"), data.get("dim")
        if not isinstance(model, str) or not model:
            raise bad("model", "the model's name")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise bad("dim", "a positive integer")
        backend = data.get("backend", "faiss")
        if backend not in BACKENDS:
            raise bad("backend", "'faiss' or 'qdrant'")
        modalities: object = data.get("modalities") or []
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in cast("list[object]", modalities)):
            raise bad("modalities", "a list of strings")
        lexical = opt_map("lexical")
        try:
            analyser = None if lexical is None else AnalyzerConfig.from_dict(lexical, where=f"{where}: lexical")
        except ConfigError as e:
            raise CollectionError(str(e)) from e
        return cls(
            name=opt_str("name") or "", model=model, dim=dim, instruction=opt_str("instruction"),
            funnel_dim=opt_int("funnel_dim"),
            lexical=analyser,
            backend=backend, index=opt_str("index") or ("flat" if backend == "faiss" else "qdrant"),
            modalities=tuple(cast("list[str]", modalities)), url=opt_str("url"), created=opt_str("created"),
            store_options=opt_map("store_options") or {}, recall_tuning=opt_map("recall_tuning"),
            model_backend=opt_str("model_backend"),
            extra={k: v for k, v in data.items() if k not in _KNOWN})

    def to_json(self) -> dict[str, JSON]:
        """The JSON object written to ``collection.json`` (unknown keys first, so known ones win)."""
        out: dict[str, JSON] = {**self.extra, "name": self.name, "model": self.model, "dim": self.dim,
                               "instruction": self.instruction, "funnel_dim": self.funnel_dim}
        if self.lexical is not None:
            out["lexical"] = self.lexical.to_dict()
        out.update({"backend": self.backend, "index": self.index, "modalities": list(self.modalities),
                    "url": self.url, "created": self.created, "store_options": dict(self.store_options)})
        if self.recall_tuning is not None:
            out["recall_tuning"] = dict(self.recall_tuning)
        if self.model_backend is not None:
            out["model_backend"] = self.model_backend
        return out

    def with_changes(self, **changes: object) -> Manifest:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in a collection folder, or None when there is none; ``CollectionError`` when unreadable."""
    f = folder / MANIFEST
    if not f.is_file():
        return None
    where = f"collection {folder.name!r}"
    try:
        data: object = json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CollectionError(f"{where}: unreadable {MANIFEST} ({e})") from e
    if not isinstance(data, dict):
        raise CollectionError(f"{where}: {MANIFEST} must hold a JSON object")
    manifest = Manifest.from_json(cast("dict[str, JSON]", data), where=where)  # json.loads gives JSON
    return manifest if manifest.name else manifest.with_changes(name=folder.name)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``collection.json`` atomically (temp file + rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
