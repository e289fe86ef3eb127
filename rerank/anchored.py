"""The retriever-anchored reranker: the first stage's similarity plus a learned cross-encoder correction.

``logit(q, d) = scale · cos(E(q), E(d)) + bias + C(q, d)``, score ``sigmoid(logit)``. ``E`` is the
embedding model the first stage retrieves with (frozen), ``C`` a cross-encoder built from the same body
whose relevance head starts at zero, so before training the reranker orders every candidate list exactly
as the retriever does and training can only move it from there. A fresh random head instead starts at
chance and, on the few thousand pairs users fine-tune on, stays below the retriever it reranks (see
``benchmarks/RESULTS.md``). ``scale`` is the retriever's fitted inverse temperature and ``bias`` centres
the scores so the sigmoid keeps them apart.

A checkpoint is a directory with ``anchored.json`` (scale, bias), ``retriever/`` (a sentence-transformers
embedding model) and ``correction/`` (a sentence-transformers CrossEncoder); ``load_reranker`` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from omniret.errors import ModelLoadError
from omniret.registry import ModelSpec
from omniret.rerank.base import BaseReranker, item_text
from omniret.types import Item

if TYPE_CHECKING:
    import torch

#: the file that marks a directory as an anchored reranker
ANCHOR_FILE = "anchored.json"
RETRIEVER_DIR = "retriever"
CORRECTION_DIR = "correction"


#: scores as the reranker computes them (NumPy) or as its training does (torch, with gradients)
Scores = TypeVar("Scores", np.ndarray, "torch.Tensor")


def anchored_logit(sims: Scores, correction: Scores, *, scale: float, bias: float = 0.0) -> Scores:
    """``scale · cos(E(q), E(d)) + bias + C(q, d)``: the one formula the reranker scores with (then a
    sigmoid) and its training optimises. Training leaves ``bias`` at 0: a constant shift changes neither a
    candidate list's order nor its softmax."""
    return scale * sims + bias + correction


def is_anchored(path: str | Path) -> bool:
    """Whether ``path`` is an anchored reranker checkpoint."""
    return (Path(path).expanduser() / ANCHOR_FILE).is_file()


def read_anchor(path: str | Path) -> dict[str, float]:
    """``{"scale", "bias"}`` of a checkpoint; ``ModelLoadError`` naming what is missing."""
    p = Path(path).expanduser()
    try:
        cfg = json.loads((p / ANCHOR_FILE).read_text(encoding="utf-8"))
        out = {"scale": float(cfg["scale"]), "bias": float(cfg["bias"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{p / ANCHOR_FILE}: not a valid anchored reranker config ({type(e).__name__}: {e}); "
                             'expected {"scale": float, "bias": float}') from e
    for sub in (RETRIEVER_DIR, CORRECTION_DIR):
        if not (p / sub).is_dir():
            raise ModelLoadError(f"{p}: an anchored reranker needs the {sub}/ folder beside {ANCHOR_FILE}")
    return out


def write_anchor(path: str | Path, *, scale: float, bias: float, **extra: Any) -> None:
    """Write ``anchored.json``; ``extra`` records how the reranker was built."""
    Path(path, ANCHOR_FILE).write_text(json.dumps({"scale": scale, "bias": bias, **extra}, indent=2), encoding="utf-8")


def head_module(model: Any) -> Any:
    """The one-logit relevance head (``torch.nn.Linear``) of a sequence-classification model."""
    import torch

    for name in ("classifier", "score", "classifier.out_proj", "classifier.dense"):
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.Linear) and mod.out_features == 1:
            return mod
    raise ModelLoadError(f"{type(model).__name__}: no one-logit classification head (classifier, score) found")


class AnchoredReranker(BaseReranker):
    """``load_reranker`` backend for an anchored checkpoint (see module docstring); text only.

    Instructions reach the retriever as its prompt when the retriever defines prompts, as in
    ``SentenceTransformerEmbedder``; the correction sees the plain pair it was trained on.
    """

    def __init__(self, path: str, *, device: Any = None, dtype: Any = None, spec: ModelSpec | None = None,
                 max_length: int | None = None, batch_size: int = 32,
                 default_instruction: str | None = None) -> None:
        from sentence_transformers import CrossEncoder, SentenceTransformer

        from omniret.base.device import resolve_device, resolve_dtype

        anchor = read_anchor(path)
        dev = resolve_device(device)
        kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev)}
        p = Path(path).expanduser()
        try:
            self.retriever = SentenceTransformer(str(p / RETRIEVER_DIR), device=str(dev), model_kwargs=kwargs)
            self.correction = CrossEncoder(str(p / CORRECTION_DIR), device=str(dev), max_length=max_length,
                                           model_kwargs=kwargs)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{p}: cannot load the anchored reranker's parts ({type(e).__name__}: {e})") from e
        if max_length is not None:
            self.retriever.max_seq_length = max_length
        self.scale, self.bias = anchor["scale"], anchor["bias"]
        self.name = spec.name if spec is not None else str(path)
        self.path = str(path)
        self.modalities = frozenset({"text"})
        self.batch_size = int(batch_size)
        self.default_instruction = default_instruction
        self.use_instruction = any(self.retriever.prompts.values())

    def _prepare_query(self, query: Item, instruction: str | None) -> tuple[str, np.ndarray]:
        instr = instruction if instruction is not None else self.default_instruction
        text = item_text(query, None)
        vec = self.retriever.encode([text], prompt=instr if instr and self.use_instruction else None,
                                    normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return text, np.asarray(vec[0], dtype=np.float32)

    def _prepare(self, query: tuple[str, np.ndarray], document: Item,
                 index: int) -> tuple[str, np.ndarray, str]:
        return query[0], query[1], item_text(document, index)

    def _forward(self, prepared: list[tuple[str, np.ndarray, str]]) -> np.ndarray:
        import torch

        docs = self.retriever.encode([d for _, _, d in prepared], batch_size=self.batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        sims = np.einsum("nd,nd->n", np.stack([q for _, q, _ in prepared]), docs)
        corr = self.correction.predict([(q, d) for q, _, d in prepared], batch_size=self.batch_size,
                                       activation_fn=torch.nn.Identity(), convert_to_numpy=True,
                                       show_progress_bar=False)
        logits = anchored_logit(sims, np.asarray(corr, dtype=np.float64).reshape(-1), scale=self.scale,
                                bias=self.bias)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
