"""The yes/no scoring head of the Qwen rerankers, read straight from the checkpoint's safetensors.

Qwen3-VL-Reranker and Qwen3-Reranker score a pair as sigmoid(logit_yes − logit_no) at the last position,
which equals sigmoid(h · (w_yes − w_no)) for the two LM-head rows. Reading only those two rows means the
(vocab × hidden) LM head is never built and no full-vocabulary logits are computed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omniret.errors import ModelLoadError

LM_HEAD_KEY = "lm_head.weight"
#: where the input embeddings live (Qwen3-VL, Qwen3), used when the checkpoint ties its LM head to them
EMBED_KEYS = ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight",
              "language_model.model.embed_tokens.weight")


def checkpoint_dir(source: str, revision: str | None = None) -> Path:
    """The local directory holding a checkpoint (a hub id is fetched into the hub cache first)."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]))
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is not reachable
        raise ModelLoadError(f"{source}: cannot fetch the checkpoint ({type(e).__name__}: {e})") from e


def ties_word_embeddings(config: dict[str, Any]) -> bool:
    """Whether the LM head is the input embedding matrix (the text config decides, as transformers does)."""
    text = config.get("text_config")
    if isinstance(text, dict) and "tie_word_embeddings" in text:
        return bool(text["tie_word_embeddings"])
    return bool(config.get("tie_word_embeddings", False))


def weight_files(path: Path) -> dict[str, Path]:
    """tensor name -> safetensors file, from the shard index or the single file."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: path / v for k, v in weight_map.items()}
    single = path / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    raise ModelLoadError(f"{path}: no model.safetensors or model.safetensors.index.json; the reranker reads its "
                         "yes/no head from safetensors weights")


def yes_no_rows(path: str | Path, yes_id: int, no_id: int) -> tuple[Any, Any, str]:
    """``(w_yes, w_no, tensor name)``: the two LM-head rows as float32, from ``lm_head.weight``, or from the
    input embeddings when the config ties them (or the file has no separate head)."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    files = weight_files(path)
    tied = ties_word_embeddings(config)
    if not tied and LM_HEAD_KEY in files:
        key = LM_HEAD_KEY
    else:
        key = next((k for k in EMBED_KEYS if k in files), "")
        if not key:
            raise ModelLoadError(f"{path}: found neither {LM_HEAD_KEY} nor the input embeddings "
                                 f"({', '.join(EMBED_KEYS)}) in the weights")
        if not tied:
            raise ModelLoadError(f"{path}: the weights have no {LM_HEAD_KEY} and the config does not tie it to "
                                 "the input embeddings; this is not a complete reranker checkpoint")
    with safe_open(str(files[key]), framework="pt") as f:
        rows = f.get_slice(key)
        vocab = rows.get_shape()[0]
        for token, i in (("yes", yes_id), ("no", no_id)):
            if not 0 <= i < vocab:
                raise ModelLoadError(f"{path}: token {token!r} has id {i}, outside {key} ({vocab} rows)")
        w_yes = rows[yes_id:yes_id + 1].to(torch.float32)[0]
        w_no = rows[no_id:no_id + 1].to(torch.float32)[0]
    return w_yes, w_no, key


def token_id(tokenizer: Any, token: str, path: Any) -> int:
    """The vocabulary id of ``token`` (``yes``/``no``), as the reference looks it up."""
    i = tokenizer.get_vocab().get(token)
    if i is None:
        raise ModelLoadError(f"{path}: the tokenizer has no {token!r} token; a yes/no reranker needs it")
    return int(i)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the base model ignores ``lm_head.weight`` on purpose)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
