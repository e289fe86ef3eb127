"""Model helpers the torch backends share: quiet loading, attention choice, device transfer, pooling."""

from __future__ import annotations

from typing import Any

from omniret.errors import ModelLoadError


def pick_attn_implementation(device: Any) -> str:
    """FlashAttention 2 on CUDA when installed, else PyTorch SDPA."""
    import importlib.util

    if getattr(device, "type", str(device)) == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_quietly(cls: Any, source: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` without transformers' load report; ``ModelLoadError`` if weights are missing."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{source}: cannot load as {cls.__name__} ({type(e).__name__}: {e})") from e
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"{source}: {len(missing)} weight(s) missing for {cls.__name__}, e.g. {missing[:3]}; "
                             "is this the right kind of checkpoint?")
    return model.eval()


def to_device(inputs: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Collated tensors on ``device``, pixels in the model dtype.

    On CUDA the host tensors are pinned and copied without blocking, so the copies queue behind the
    previous batch's kernels instead of waiting for them.
    """
    cuda = getattr(device, "type", str(device)) == "cuda"
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        value = value.pin_memory().to(device, non_blocking=True) if cuda else value.to(device)
        out[key] = value.to(dtype) if key in ("pixel_values", "pixel_values_videos") else value
    return out


def last_token_pool(hidden: Any, attention_mask: Any) -> Any:
    """Hidden state at each row's last non-padding position (works for left and right padding)."""
    import torch

    last = attention_mask.shape[1] - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def find_tokenizer(model: Any) -> Any:
    """A backend's fast tokenizer (one that returns offsets), where the backends keep it (``tokenizer``,
    ``model.tokenizer``, ``processor.tokenizer``, in that order), or None. Text chunking uses it, and an
    embedding pool hands its name to the coordinator so both chunk alike."""
    for path in ("tokenizer", "model.tokenizer", "processor.tokenizer"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if obj is not None and getattr(obj, "is_fast", False):
            return obj
    return None
