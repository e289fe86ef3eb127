"""Adapter for any sentence-transformers ``CrossEncoder`` checkpoint (text pairs), on PyTorch, ONNX Runtime
(float32 or int8) or OpenVINO (see ``omniret.base.backends``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from omniret.base.backends import BackendChoice, check_threads, use_runtime
from omniret.errors import ModelLoadError
from omniret.registry import ModelSpec
from omniret.rerank.base import BaseReranker, item_text
from omniret.types import Item

#: pairs per ``predict`` batch on each backend: smaller length-sorted batches pad less, which the exported
#: runtimes pay for token by token (the embedder's sweep, benchmarks/RESULTS.md "CPU backends"); torch keeps 32
DEFAULT_BATCH_SIZE = {"torch": 32, "onnx": 16, "openvino": 16}


def check_cross_encoder_dir(path: str | Path) -> None:
    """``ModelLoadError`` when a local directory is not a CrossEncoder (e.g. a bi-encoder, whose head
    CrossEncoder would silently initialise at random)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return
    st_cfg = p / "config_sentence_transformers.json"
    model_type = json.loads(st_cfg.read_text(encoding="utf-8")).get("model_type") if st_cfg.is_file() else None
    if model_type == "CrossEncoder":
        return
    cfg = p / "config.json"
    archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or [] if cfg.is_file() else []
    if model_type is None and not (p / "modules.json").is_file() \
            and any(a.endswith("ForSequenceClassification") for a in archs):
        return  # a cross-encoder saved by transformers or sentence-transformers < 4
    what = f"a sentence-transformers {model_type}" if model_type else \
        "a sentence-transformers embedding model" if (p / "modules.json").is_file() else f"a {archs or 'model'} checkpoint"
    raise ModelLoadError(f"{p}: is {what}, not a CrossEncoder; expected config_sentence_transformers.json with "
                         'model_type "CrossEncoder" or a *ForSequenceClassification checkpoint')


class CrossEncoderReranker(BaseReranker):
    """Wraps ``sentence_transformers.CrossEncoder``; its own ``predict`` batches and length-sorts.

    Scores are mapped to [0, 1] whatever activation the checkpoint saved: raw logits are taken
    (``activation_fn=Identity``), then a one-label head goes through a sigmoid and a two-label head
    through a softmax (the second label is "relevant"). Instructions are passed as ST prompts when the
    model defines prompts, and ignored otherwise (classic cross-encoders were trained without them).
    ``backend`` says where the transformer runs (``torch``, ``onnx``, ``onnx-int8``, ``openvino``).
    """

    def __init__(self, name_or_path: str, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 choice: BackendChoice | None = None, max_length: int | None = None, batch_size: int | None = None,
                 default_instruction: str | None = None, threads: int | None = None,
                 export_dir: str | Path | None = None) -> None:
        from sentence_transformers import CrossEncoder

        from omniret.base.device import resolve_device, resolve_dtype
        from omniret.rerank.yes_no import quiet_transformers

        check_cross_encoder_dir(name_or_path)
        choice = choice or BackendChoice("torch", None, "torch")
        threads = check_threads(threads, model=str(name_or_path))
        if choice.backend != "torch" and device is not None and resolve_device(device).type != "cpu":
            raise ModelLoadError(f"{name_or_path}: backend {choice.backend!r} runs on the CPU; drop device={device!r} "
                                 "or use backend='torch'")
        if threads is not None and choice.backend == "torch":
            import torch

            torch.set_num_threads(threads)
        dev = resolve_device(device if choice.backend == "torch" else "cpu")
        try:
            with quiet_transformers():
                self.model = CrossEncoder(str(name_or_path), device=str(dev), max_length=max_length,
                                          model_kwargs={"dtype": resolve_dtype(dtype, dev)})
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{name_or_path}: cannot load as a sentence-transformers CrossEncoder "
                                 f"({type(e).__name__}: {e})") from e
        self.backend = choice.label
        self.backend_requested = choice.requested
        #: every export this load built (empty when the cache had it)
        self.exports: list[Path] = []
        if choice.backend != "torch":
            use_runtime(self.model, choice, "sequence-classification", source=name_or_path, threads=threads,
                        export_dir=export_dir, on_export=self.exports.append)
        self.num_labels = int(self.model.num_labels)
        if self.num_labels not in (1, 2):
            raise ModelLoadError(f"{name_or_path}: a CrossEncoder with {self.num_labels} labels is a classifier, "
                                 "not a reranker; expected 1 (relevance logit) or 2 (not relevant, relevant)")
        self.name = spec.name if spec is not None else str(name_or_path)
        self.path = str(name_or_path)
        self.modalities = frozenset({"text"})
        self.batch_size = int(batch_size) if batch_size is not None else DEFAULT_BATCH_SIZE[choice.backend]
        self.default_instruction = default_instruction

    def _prepare_query(self, query: Item, instruction: str | None) -> tuple[str, str | None]:
        instr = instruction if instruction is not None else self.default_instruction
        return item_text(query, None), (instr if self.model.prompts else None)

    def _prepare(self, query: tuple[str, str | None], document: Item, index: int) -> tuple[str, str, str | None]:
        text, instr = query
        return text, item_text(document, index), instr

    def _forward(self, prepared: list[tuple[str, str, str | None]]) -> np.ndarray:
        import torch

        prompt = prepared[0][2]  # one query per call, so one prompt
        logits = self.model.predict([(q, d) for q, d, _ in prepared], prompt=prompt, batch_size=self.batch_size,
                                    activation_fn=torch.nn.Identity(), convert_to_tensor=True,
                                    show_progress_bar=False)
        logits = logits.float().reshape(len(prepared), -1)
        scores = torch.sigmoid(logits[:, 0]) if self.num_labels == 1 else torch.softmax(logits, dim=-1)[:, 1]
        return scores.cpu().numpy().astype(np.float32)
