"""Embedding backends: the Qwen3-VL tower, text Qwen3-Embedding, and a sentence-transformers adapter.

``load_embedder(name_or_path)`` recognises the architecture from the checkpoint and returns an
``Embedder``. Import is light: torch and transformers load with the first model.
"""

from __future__ import annotations

from typing import Any

from omniret.embed.protocol import Embedder, EmbedResult

__all__ = ["EmbedResult", "Embedder", "load_embedder"]


def load_embedder(name_or_path: Any, *, device: Any = None, dtype: Any = None, **options: Any) -> Embedder:
    """Load an embedding model by registry name, hub id or local checkpoint directory.

    ``options`` are the reference constructor's knobs under the same names (``max_length``,
    ``min_pixels``, ``max_pixels``, ``total_pixels``, ``fps``, ``max_frames``, ``default_instruction``)
    plus batching knobs (``max_batch_tokens``, ``max_batch_items``).
    """
    from omniret.errors import ModelLoadError
    from omniret.registry import detect_arch, resolve

    source, spec = resolve(name_or_path)
    if spec is not None and spec.kind != "embedding":
        raise ModelLoadError(f"{name_or_path}: is a {spec.kind} model, not an embedding model")
    arch = detect_arch(source, spec)
    if arch == "qwen3_vl":
        from omniret.embed.qwen3_vl import Qwen3VLEmbedder

        return Qwen3VLEmbedder(source, device=device, dtype=dtype, spec=spec, **options)
    if arch == "qwen3_text":
        from omniret.embed.qwen3_text import Qwen3TextEmbedder

        return Qwen3TextEmbedder(source, device=device, dtype=dtype, spec=spec, **options)
    if arch == "sentence_transformers":
        from omniret.embed.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(source, device=device, dtype=dtype, spec=spec, **options)
    raise ModelLoadError(f"{name_or_path}: a {arch} checkpoint is not an embedding model; expected a "
                         "Qwen3-VL, Qwen3 or sentence-transformers embedding checkpoint")
