"""``omniret.json`` for trained checkpoints: base model, declared Matryoshka dims, how it was trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omniret.registry import checkpoint_meta, resolve


def base_model_name(model: str) -> str | None:
    """The registry name a checkpoint descends from (its own ``omniret.json`` first), or None."""
    from omniret.registry import list_models

    source, spec = resolve(model)
    inherited = checkpoint_meta(source).get("base_model") if Path(source).is_dir() else None
    if inherited or spec is not None:
        return inherited or spec.name  # type: ignore[union-attr]
    here = Path(source).resolve()
    # an offline package's local copy (MiniLM) is the registry model itself
    return next((s.name for s in list_models() if s.path and Path(s.path).resolve() == here), None)


def write_meta(out: Path, *, model: str, stage: str, dims: list[int] | None, losses: dict[str, Any],
               extra: dict[str, Any] | None = None, inherit_base: bool = True) -> None:
    """Write ``out/omniret.json`` so ``omniret.registry.resolve`` knows the base model and dims.

    ``inherit_base=False`` when the result is another kind of model (a cross-encoder trained from an
    embedder), whose registry record would be wrong.
    """
    source, _ = resolve(model)
    meta: dict[str, Any] = dict(checkpoint_meta(source)) if Path(source).is_dir() else {}
    meta.pop("merged_from", None)
    base = base_model_name(model) if inherit_base else None
    if not inherit_base:
        meta.pop("base_model", None)
        meta.pop("dims", None)
    if base is not None:
        meta["base_model"] = base
    if dims:
        meta["dims"] = sorted({int(d) for d in dims})
    meta["trained"] = {"from": str(model), "stage": stage, "losses": losses, **(extra or {})}
    (out / "omniret.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
