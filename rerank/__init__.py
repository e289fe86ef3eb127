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
    a CrossEncoder) and the inference backend (``backend="torch"|"onnx"|"openvino"|"auto"``,
    ``quantize=None|"int8"``, ``threads``, ``export_dir``); see ``omniret.rerank.base.RerankOptions``.
    Text-only models ignore the media knobs; an unknown option is refused by name. onnx and openvino run
    sentence-transformers CrossEncoders; asking them of another model fails naming the backends it supports,
    while ``auto`` picks the fastest one it can use (the reranker's ``backend`` says which).
    """
    from omniret.base.backends import BackendRequest
    from omniret.base.options import MEDIA_OPTIONS
    from omniret.errors import ModelLoadError
    from omniret.registry import detect_arch, resolve
    from omniret.rerank.anchored import is_anchored
    from omniret.rerank.base import check_options

    label = str(name_or_path)
    check_options(options, model=label)
    request = BackendRequest.pop(options, model=label)
    source, spec = resolve(name_or_path)
    anchored = is_anchored(source)
    if not anchored and spec is not None and spec.kind != "reranker":
        raise ModelLoadError(f"{name_or_path}: {spec.name} is an {spec.kind} model, not a reranker")
    arch = "anchored" if anchored else detect_arch(source, spec)
    if arch in ("sentence_transformers", "cross_encoder"):
        from omniret.rerank.cross_encoder import CrossEncoderReranker

        choice = request.exportable()
        text_options = {k: v for k, v in options.items() if k not in MEDIA_OPTIONS}
        for key in ("max_batch_items", "max_batch_tokens", "max_batch_patches", "prepare_workers",
                    "attn_implementation"):
            text_options.pop(key, None)
        return CrossEncoderReranker(source, device=device, dtype=dtype, spec=spec, choice=choice, threads=request.threads,
                                    export_dir=request.export_dir, **text_options)
    if arch not in ("anchored", "qwen3_vl", "qwen3_text"):
        raise ModelLoadError(f"{name_or_path}: a {arch} checkpoint is not a reranker; expected a Qwen3-VL, Qwen3 or "
                             "sentence-transformers CrossEncoder checkpoint")
    # these run on torch only (the Qwen towers and the anchored pair are not exported); auto picks torch
    request.torch_only()
    if arch == "anchored":
        from omniret.rerank.anchored import AnchoredReranker

        for key in ("max_batch_items", "max_batch_tokens", "max_batch_patches", "prepare_workers",
                    "attn_implementation", *MEDIA_OPTIONS):
            options.pop(key, None)
        return AnchoredReranker(source, device=device, dtype=dtype, spec=spec, **options)
    if arch == "qwen3_vl":
        from omniret.rerank.qwen3_vl import Qwen3VLReranker

        options.pop("batch_size", None)
        return Qwen3VLReranker(source, device=device, dtype=dtype, spec=spec, **options)
    from omniret.rerank.qwen3_text import Qwen3TextReranker

    text_options = {k: v for k, v in options.items() if k not in MEDIA_OPTIONS}
    text_options.pop("batch_size", None)
    text_options.pop("max_batch_patches", None)
    return Qwen3TextReranker(source, device=device, dtype=dtype, spec=spec, **text_options)
