"""The model options both loaders take: ``load_embedder`` (``EmbedOptions``) and ``load_reranker``
(``RerankOptions``) share these knobs, the media ones among them, and the rule that an unknown name is
refused with the known ones (nothing is swallowed: a misspelt ``backend`` must not silently run PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypedDict

from omniret.errors import ConfigError


class ModelOptions(TypedDict, total=False):
    """The knobs of the reference constructors, the batching knobs and the backend, for either model kind."""

    max_length: int
    min_pixels: int
    max_pixels: int
    total_pixels: int
    fps: float
    max_frames: int
    default_instruction: str
    allow_remote: bool
    #: attention kernel of the Qwen models (default: FlashAttention 2 on CUDA when installed, else SDPA)
    attn_implementation: str
    #: most items (pairs, for a reranker) in one forward (Qwen models)
    max_batch_items: int
    #: most padded tokens in one forward (Qwen models)
    max_batch_tokens: int
    #: most vision patches in one forward (Qwen3-VL)
    max_batch_patches: int
    #: threads that decode media in parallel; 0 prepares inline (Qwen models)
    prepare_workers: int
    #: sentence-transformers only: items per ``encode`` / pairs per ``predict`` batch (default per backend)
    batch_size: int
    #: ``torch``, ``onnx``, ``openvino`` or ``auto`` (see ``omniret.base.backends``)
    backend: str
    #: ``int8`` (onnx backend) or None for float32
    quantize: str | None
    #: intra-op CPU threads (default: the CPUs this process may use, cgroup quota included)
    threads: int
    #: where exported models are cached (default: beside the checkpoint, else $OMNIRET_HOME/exports)
    export_dir: str | Path


#: options that only mean something to a model that reads images and video
MEDIA_OPTIONS = frozenset({"min_pixels", "max_pixels", "total_pixels", "fps", "max_frames", "allow_remote"})


def refuse_unknown(options: Mapping[str, object], known: Iterable[str], *, model: str, kind: str) -> None:
    """``ConfigError`` naming every option of ``options`` not in ``known``, and the known ones."""
    names = sorted(known)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"{model}: unknown {kind} option(s) {unknown}; known: {names}")
