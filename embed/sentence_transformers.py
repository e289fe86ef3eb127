"""Adapter for any sentence-transformers embedding model (text only unless the model says otherwise),
on PyTorch, ONNX Runtime (float32 or int8) or OpenVINO (see ``omniret.base.backends``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.backends import BackendChoice, check_threads, use_runtime
from omniret.embed.base import BaseEmbedder
from omniret.errors import ItemError, ModelLoadError
from omniret.registry import ModelSpec
from omniret.types import Item

#: items per ``encode`` batch on each backend. The exported runtimes pay for every padded token: on MiniLM
#: at one thread, batches of 8-16 ran 5-25% faster than 32-64 on onnx, int8 and openvino (a sweep recorded
#: in benchmarks/RESULTS.md, "CPU backends"); torch keeps its long-standing 32
DEFAULT_BATCH_SIZE = {"torch": 32, "onnx": 16, "openvino": 16}


class SentenceTransformerEmbedder(BaseEmbedder):
    """Wraps ``sentence_transformers.SentenceTransformer``; batching and length sorting are its own.

    Instructions are passed as ST prompts (``prompt=``) when given, so instruction-tuned ST models
    behave as their cards say; models without prompts see the plain text. ``backend`` says where the
    transformer runs (``torch``, ``onnx``, ``onnx-int8``, ``openvino``); tokenising, pooling and
    normalising are sentence-transformers' own on every backend.
    """

    def __init__(self, name_or_path: str, *, device: str | None = None, dtype: Any = None,
                 spec: ModelSpec | None = None, choice: BackendChoice | None = None, batch_size: int | None = None,
                 max_length: int | None = None, use_instruction: bool | None = None, threads: int | None = None,
                 export_dir: str | Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from omniret.base.device import resolve_device, resolve_dtype

        choice = choice or BackendChoice("torch", None, "torch")
        threads = check_threads(threads, model=str(name_or_path))
        dev = resolve_device(device if choice.backend == "torch" else "cpu")
        if choice.backend != "torch" and device is not None and resolve_device(device).type != "cpu":
            raise ModelLoadError(f"{name_or_path}: backend {choice.backend!r} runs on the CPU; drop device={device!r} "
                                 "or use backend='torch'")
        if threads is not None and choice.backend == "torch":
            import torch

            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {}
        td = resolve_dtype(dtype, dev)
        if td is not None:
            kwargs["model_kwargs"] = {"dtype": td}
        self.model = SentenceTransformer(str(name_or_path), device=str(dev), **kwargs)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.name = spec.name if spec is not None else str(name_or_path)
        self.path = str(name_or_path)
        self.backend = choice.label
        self.backend_requested = choice.requested
        #: every export this load built (empty when the cache had it): tests and logs read it
        self.exports: list[Path] = []
        if choice.backend != "torch":
            use_runtime(self.model, choice, "feature-extraction", source=name_or_path, threads=threads,
                        export_dir=export_dir, on_export=self.exports.append)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        declared = get_dim()
        if declared is None:
            raise ModelLoadError(f"{name_or_path}: the sentence-transformers model declares no embedding dimension")
        full = int(declared)
        self.dim = full
        self.dims = tuple(spec.dims) if spec is not None and spec.dims else (full,)
        self.modalities = frozenset({"text"})
        self.batch_size = int(batch_size) if batch_size is not None else DEFAULT_BATCH_SIZE[choice.backend]
        # Symmetric models (MiniLM) were not trained with instructions: ignore them unless asked.
        self.use_instruction = (bool(use_instruction) if use_instruction is not None
                                else any(self.model.prompts.values()))

    def _prepare(self, item: Item, index: int, instruction: str | None) -> tuple[str, str | None]:
        texts = item.texts
        if texts and not "".join(texts).strip():
            raise ItemError.for_item(index, item.id, "empty text")
        text = "".join(texts) if texts else "NULL"
        return text, instruction if self.use_instruction else None

    def _forward(self, prepared: list[tuple[str, str | None]]) -> np.ndarray:
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        groups: dict[str | None, list[int]] = {}
        for i, (_, instr) in enumerate(prepared):
            groups.setdefault(instr, []).append(i)
        for instr, idx in groups.items():
            vecs = self.model.encode(
                [prepared[i][0] for i in idx], batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
                prompt=instr if instr else None,
            )
            out[idx] = vecs
        return out
