"""Rerankers: the Qwen3-VL cross-encoder, the text Qwen3-Reranker, a CrossEncoder adapter, and the
retriever-anchored reranker ``omniret train rerank`` builds from an embedding model.

``load_reranker(name_or_path)`` recognises the architecture from the checkpoint and returns a
``Reranker``. Import is light: torch and transformers load with the first model.
"""

from __future__ import annotations

from typing import Any

from omniret.rerank.protocol import Reranker, RerankResult, ScoreResult

__all__ = ["RerankResult", "Reranker", "ScoreResult", "load_reranker"]


def load_reranker(name_or_path: Any, *, device: Any = None, dtype: Any = None, **options: Any) -> Reranker:
    """Load a reranker by registry name, hub id or local checkpoint directory.

    ``options`` are the reference constructor's knobs under the same names (``max_length``,
    ``min_pixels``, ``max_pixels``, ``total_pixels``, ``fps``, ``max_frames``, ``default_instruction``)
    plus batching knobs (``max_batch_tokens``, ``max_batch_items``, ``max_batch_patches``, ``prepare_workers``; ``batch_size`` for
    a CrossEncoder); see ``omniret.rerank.base.RerankOptions``. Text-only models ignore the media knobs.
    """
    from omniret.errors import ModelLoadError
    from omniret.registry import detect_arch, resolve
    from omniret.rerank.anchored import is_anchored
    from omniret.rerank.base import MEDIA_OPTIONS, check_options

    source, spec = resolve(name_or_path)
    if is_anchored(source):
        from omniret.rerank.anchored import AnchoredReranker

        check_options(options, model=str(name_or_path))
        for key in ("max_batch_items", "max_batch_tokens", "max_batch_patches", "prepare_workers", *MEDIA_OPTIONS):
            options.pop(key, None)
        return AnchoredReranker(source, device=device, dtype=dtype, spec=spec, **options)
    if spec is not None and spec.kind != "reranker":
        raise ModelLoadError(f"{name_or_path}: {spec.name} is an {spec.kind} model, not a reranker")
    check_options(options, model=str(name_or_path))
    arch = detect_arch(source, spec)
    if arch == "qwen3_vl":
        from omniret.rerank.qwen3_vl import Qwen3VLReranker

        options.pop("batch_size", None)
        return Qwen3VLReranker(source, device=device, dtype=dtype, spec=spec, **options)
    text_options = {k: v for k, v in options.items() if k not in MEDIA_OPTIONS}
    if arch == "qwen3_text":
        from omniret.rerank.qwen3_text import Qwen3TextReranker

        text_options.pop("batch_size", None)
        text_options.pop("max_batch_patches", None)
        return Qwen3TextReranker(source, device=device, dtype=dtype, spec=spec, **text_options)
    if arch in ("sentence_transformers", "cross_encoder"):
        from omniret.rerank.cross_encoder import CrossEncoderReranker

        for key in ("max_batch_items", "max_batch_tokens", "max_batch_patches", "prepare_workers"):
            text_options.pop(key, None)
        return CrossEncoderReranker(source, device=device, dtype=dtype, spec=spec, **text_options)
    raise ModelLoadError(f"{name_or_path}: a {arch} checkpoint is not a reranker; expected a Qwen3-VL, Qwen3 or "
                         "sentence-transformers CrossEncoder checkpoint")
