"""Model merging: linear and spherical (slerp) interpolation of checkpoint weights.

The Qwen3-Embedding report merges several fine-tuned checkpoints with slerp for robustness. Merging
works on the safetensors files of checkpoints that share one architecture (Qwen3-VL, Qwen3 text,
sentence-transformers): every floating tensor is merged, everything else (tokenizer, configs,
integer buffers) is taken from the first checkpoint, so the result loads exactly as the first one does.
"""

from __future__ import annotations

import functools
import json
import operator
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from omniret.errors import ConfigError, ModelLoadError

Method = Literal["linear", "slerp"]


def _weight_files(path: Path) -> list[Path]:
    files = sorted(p.relative_to(path) for p in path.rglob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no .safetensors weights; expected a checkpoint directory saved by "
                             "transformers, sentence-transformers or omniret train")
    return files


def slerp(a: Any, b: Any, t: float, *, eps: float = 1e-7) -> Any:
    """Spherical interpolation between two tensors seen as flat vectors; linear when (anti)parallel."""
    import torch

    a32, b32 = a.double().flatten(), b.double().flatten()
    na, nb = a32.norm(), b32.norm()
    if na < eps or nb < eps:
        return ((1 - t) * a32 + t * b32).reshape(a.shape).to(a.dtype)
    cos = torch.clamp((a32 / na) @ (b32 / nb), -1.0, 1.0)
    if 1 - cos.abs() < 1e-6:
        out = (1 - t) * a32 + t * b32
    else:
        omega = torch.arccos(cos)
        so = torch.sin(omega)
        out = torch.sin((1 - t) * omega) / so * a32 + torch.sin(t * omega) / so * b32
    return out.reshape(a.shape).to(a.dtype)


def merge_state_dicts(states: Sequence[dict[str, Any]], *, method: Method = "linear",
                      weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Merge tensors key by key. Linear: ``sum w_i θ_i``. Slerp: folded pairwise, ``t = w_k / sum_{<=k} w``."""
    import torch

    n = len(states)
    w = _weights(n, weights, method)
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))[:3]
            raise ConfigError(f"checkpoint {i + 1} has different weights from the first (e.g. {diff}); "
                              "merge checkpoints of one architecture")
    out: dict[str, Any] = {}
    for k in keys:
        tensors = [s[k] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ConfigError(f"weight {k} has shapes {[tuple(t.shape) for t in tensors]}; merge checkpoints of one size")
        if not torch.is_floating_point(tensors[0]):
            out[k] = tensors[0].clone()
            continue
        if method == "linear":
            # summed in order, like sum() but without its int start value
            acc = functools.reduce(operator.add, [wi * t.double() for wi, t in zip(w, tensors, strict=True)])
            out[k] = acc.to(tensors[0].dtype).contiguous()
        else:
            acc, cum = tensors[0], w[0]
            for wi, t in zip(w[1:], tensors[1:], strict=True):
                acc = slerp(acc, t, wi / (cum + wi))
                cum += wi
            out[k] = acc.contiguous()
    return out


def _weights(n: int, weights: Sequence[float] | None, method: Method) -> list[float]:
    if method not in ("linear", "slerp"):
        raise ConfigError(f"merge method {method!r}; use linear or slerp")
    if n < 2:
        raise ConfigError(f"merging needs at least 2 checkpoints, got {n}")
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"{len(w)} weights for {n} checkpoints; give one weight per checkpoint")
    if method == "slerp":
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError(f"slerp weights must be non-negative with a positive sum, got {w}")
        return [x / sum(w) for x in w]
    return w


def merge_checkpoints(paths: Sequence[str | Path], out: str | Path, *, method: Method = "linear",
                      weights: Sequence[float] | None = None) -> Path:
    """Merge checkpoint directories into ``out`` (loads like the first checkpoint); returns ``out``."""
    from safetensors.torch import load_file, save_file

    dirs = [Path(p) for p in paths]
    for d in dirs:
        if not d.is_dir():
            raise ModelLoadError(f"{d}: no such checkpoint directory")
    _weights(len(dirs), weights, method)
    files = _weight_files(dirs[0])
    for d in dirs[1:]:
        if _weight_files(d) != files:
            raise ConfigError(f"{d}: its weight files differ from {dirs[0]}'s; merge checkpoints of one layout")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target}: output directory is not empty; pick a new --out")
    shutil.copytree(dirs[0], target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "checkpoint-*", "trainer_state*"))
    for rel in files:
        states = [load_file(str(d / rel)) for d in dirs]
        merged = merge_state_dicts(states, method=method, weights=weights)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        save_file(merged, str(target / rel), metadata={"format": "pt"})
    meta_path = target / "omniret.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    meta["merged_from"] = {"checkpoints": [str(d) for d in dirs], "method": method,
                           "weights": list(weights) if weights is not None else None}
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return target
