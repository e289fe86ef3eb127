"""Device and dtype defaults shared by the torch backends: bf16 on GPU, float32 on CPU."""

from __future__ import annotations

from typing import Any


def resolve_device(device: Any = None) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """A torch dtype from a dtype or its name; default bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype is None:
        return torch.bfloat16 if getattr(device, "type", str(device)) == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(name, name)
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        from omniret.errors import ConfigError

        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return value
