"""Matryoshka truncation: a prefix of the full vector, re-normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from omniret.errors import DimensionError


def check_dim(dim: int | None, *, full: int, supported: Sequence[int], model: str) -> int:
    """Validate a requested dim against the model's declared ones; ``None`` means full."""
    if dim is None:
        return full
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise DimensionError(f"dim must be an integer, got {dim!r}")
    dim = int(dim)
    if dim == full:
        return dim
    if dim not in supported:
        raise DimensionError(
            f"model {model} does not support dim={dim}; supported Matryoshka dims: {sorted(supported)}"
        )
    return dim


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` components of each row, L2-normalised again, as float32."""
    v = np.asarray(vectors, dtype=np.float32)[:, :dim]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)
