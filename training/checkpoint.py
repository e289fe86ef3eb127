"""Resumable training checkpoints: ``torch.distributed.checkpoint`` (DCP), written by every rank, atomic, pruned.

``out/checkpoints/checkpoint-{step}`` holds the trainable weights and the optimiser state as DCP files (each
rank writes its own FSDP2 shards; a tensor every rank holds whole is written once), the scheduler state, and
``state.json``: the global step and the batch plan (global batch, seed, example count, the world size that
wrote it). DCP records each tensor's global shape, so a checkpoint loads on any world size, sharded or not:
``get_state_dict`` / ``set_state_dict`` turn the module's own layout (FSDP2 ``DTensor`` shards or whole tensors)
into DCP's and back, and ``dcp.load`` reads the pieces this rank needs. Frozen weights (a LoRA run's base
model) are not written: they come from the input checkpoint.

Atomic: every rank writes into ``.checkpoint-{step}.partial``; after a barrier rank 0 writes the scheduler and
``state.json`` (the completion marker, last) and renames the folder to ``checkpoint-{step}``. ``latest``
considers only renamed folders that hold ``state.json``, so a run killed while writing leaves a ``.partial``
folder that is never resumed from (the next save removes it). Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniret.errors import ConfigError
from omniret.training import distributed as dist

if TYPE_CHECKING:
    import torch

PREFIX = "checkpoint-"
MARKER = "state.json"
SCHEDULER = "scheduler.pt"


def _step_of(path: Path) -> int | None:
    tail = path.name.removeprefix(PREFIX)
    return int(tail) if path.name.startswith(PREFIX) and tail.isdigit() else None


def complete(ckpt_dir: Path) -> list[Path]:
    """The complete checkpoints under ``ckpt_dir``, oldest first (renamed into place, marker present)."""
    if not ckpt_dir.is_dir():
        return []
    found = [(s, p) for p in ckpt_dir.iterdir() if (s := _step_of(p)) is not None and (p / MARKER).is_file()]
    return [p for _, p in sorted(found)]


def latest(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``ckpt_dir``, or None."""
    found = complete(ckpt_dir)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``: ``step`` and the batch plan it was trained with."""
    try:
        return json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path / MARKER}: unreadable checkpoint state ({e}); delete {path} to resume "
                          "from the one before it") from e


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # strict=False lets the frozen weights, which are not written, stay as loaded; every trainable tensor is
    # still required: ``dcp.load`` fails on one the checkpoint lacks
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _states(module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, [opt], options=_options())
    return {"model": model_sd, "optim": optim_sd}


def save(ckpt_dir: Path, step: int, module: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
         state: dict[str, Any], keep: int | None = None) -> Path:
    """Write ``checkpoint-{step}`` with ``module``'s trainable weights, ``opt``, ``sched`` and ``state`` (the
    batch plan); every rank of a run must call it (the writes and barriers are collective). Returns its path."""
    import torch
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    ctx = dist.current_context()
    final = ckpt_dir / f"{PREFIX}{step}"
    partial = ckpt_dir / f".{PREFIX}{step}.partial"
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir.glob(f".{PREFIX}*.partial"):
            shutil.rmtree(stale)  # left by a run killed while writing
    dist.barrier()
    dcp_save(_states(module, opt), checkpoint_id=str(partial))
    dist.barrier()
    if ctx.is_main:
        torch.save(sched.state_dict(), partial / SCHEDULER)
        marker = partial / MARKER
        with marker.open("w", encoding="utf-8") as f:
            json.dump({"step": step, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if keep is not None:
            for old in complete(ckpt_dir)[:-keep]:
                shutil.rmtree(old)
    dist.barrier()
    return final


def load(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any) -> int:
    """Restore ``module``'s trainable weights, ``opt`` and ``sched`` from ``path`` (written on any world size,
    sharded or not); every rank of a run must call it. Returns the checkpoint's global step."""
    import torch
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    states = _states(module, opt)
    try:
        dcp_load(states, checkpoint_id=str(path))
    except CheckpointException as e:  # a tensor the checkpoint lacks, or of another shape
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--resume: {path} does not fit this model ({first}); resume with the model, LoRA "
                          "settings and stage that wrote it") from e
    set_state_dict(module, [opt], model_state_dict=states["model"], optim_state_dict=states["optim"],
                   options=_options())
    sched.load_state_dict(torch.load(path / SCHEDULER, weights_only=True))
    return int(read_state(path)["step"])
