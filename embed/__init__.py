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
    plus batching knobs (``max_batch_tokens``, ``max_batch_items``) and the inference backend
    (``backend="torch"|"onnx"|"openvino"|"auto"``, ``quantize=None|"int8"``, ``threads``, ``export_dir``);
    see ``omniret.embed.base.EmbedOptions``. An unknown option is refused by name. onnx and openvino
    run sentence-transformers models; asking them of another model fails naming the backends it supports,
    while ``auto`` picks the fastest one it can use (the embedder's ``backend`` says which).
    """
    from omniret.base.backends import BackendRequest
    from omniret.base.options import MEDIA_OPTIONS
    from omniret.embed.base import QWEN_OPTIONS, ST_OPTIONS, check_options
    from omniret.errors import ModelLoadError
    from omniret.registry import detect_arch, resolve

    label = str(name_or_path)
    check_options(options, model=label)
    request = BackendRequest.pop(options, model=label)
    source, spec = resolve(name_or_path)
    if spec is not None and spec.kind != "embedding":
        raise ModelLoadError(f"{name_or_path}: is a {spec.kind} model, not an embedding model")
    arch = detect_arch(source, spec)
    if arch == "sentence_transformers":
        from omniret.embed.sentence_transformers import SentenceTransformerEmbedder

        choice = request.exportable()
        st_options = {k: v for k, v in options.items() if k not in MEDIA_OPTIONS | QWEN_OPTIONS}
        return SentenceTransformerEmbedder(source, device=device, dtype=dtype, spec=spec, choice=choice,
                                           threads=request.threads, export_dir=request.export_dir, **st_options)
    if arch not in ("qwen3_vl", "qwen3_text"):
        raise ModelLoadError(f"{name_or_path}: a {arch} checkpoint is not an embedding model; expected a "
                             "Qwen3-VL, Qwen3 or sentence-transformers embedding checkpoint")
    # the Qwen models run on torch only (their towers are not exported); auto says so by picking torch
    request.torch_only()
    qwen_options = {k: v for k, v in options.items() if k not in ST_OPTIONS}
    if arch == "qwen3_vl":
        from omniret.embed.qwen3_vl import Qwen3VLEmbedder

        return Qwen3VLEmbedder(source, device=device, dtype=dtype, spec=spec, **qwen_options)
    from omniret.embed.qwen3_text import Qwen3TextEmbedder

    text_options = {k: v for k, v in qwen_options.items() if k not in MEDIA_OPTIONS | {"max_batch_patches"}}
    return Qwen3TextEmbedder(source, device=device, dtype=dtype, spec=spec, **text_options)
