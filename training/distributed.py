"""Data-parallel training on ``torch.distributed``: the process group, per-rank shards, the gathers.

A run started by ``torchrun`` or ``accelerate launch`` finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its
environment; ``init_distributed`` joins the process group (NCCL on GPUs, gloo on CPUs) with a timeout,
so a rank that dies makes the others fail with ``DistributedError`` instead of waiting forever.

The data plan is global and deterministic: step ``s`` of the run takes the ``s``-th global batch of
``global_batch`` examples from the seeded order of its epoch, and rank ``r`` takes the ``r``-th equal slice
of it. A checkpoint therefore needs only the global step and the global batch to continue with any number
of ranks: the next batches are the same examples whoever processes them.

Gradients: every rank holds the full trainable weights (or its FSDP shard) and computes its slice's mean
loss; ``allreduce_gradients`` averages the gradients as DDP does. With negatives gathered by
``all_gather_with_grad`` the average is exactly the gradient of the global-batch loss: rank ``r``'s local
embeddings receive the gradients of every rank's loss (the gather's backward sums them), and the mean over
ranks of the slices' mean losses is the mean over the global batch (the slices are equal).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from omniret.errors import ConfigError, DistributedError, OmniretError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

#: element count per all-reduce bucket (DDP's default bucket is 25 MB of float32)
_BUCKET = 25 * 2**20 // 4


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and the progress bar."""
        return self.rank == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun / accelerate set it (1 when launched plainly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from e


def init_distributed(timeout_s: float = 1800.0, device: str | None = None) -> DistContext:
    """Join the process group the launcher describes (no-op for a single process).

    ``timeout_s`` bounds every collective: a rank that stops answering (killed, hung, network gone)
    makes the others raise instead of blocking. CUDA ranks pin ``cuda:LOCAL_RANK``.
    """
    import torch
    import torch.distributed as dist

    world = launched_world_size()
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        try:
            device_kw: dict[str, Any] = {"device_id": torch.device("cuda", local)} if cuda else {}
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s), **device_kw)
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {rank}: cannot join the process group of {world} ranks "
                                   f"(MASTER_ADDR={os.environ.get('MASTER_ADDR')}, "
                                   f"MASTER_PORT={os.environ.get('MASTER_PORT')}): {e}") from e
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def local_device(ctx: DistContext, device: str | None) -> str | None:
    """The device this rank trains on: its own GPU under a multi-GPU launch, else ``device``."""
    import torch

    if ctx.enabled and torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        return f"cuda:{ctx.local_rank}"
    return device


def shutdown() -> None:
    """Leave the process group if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``tensor`` concatenated along dim 0, and the row where this rank's slice starts.

    The backward sums each rank's gradient for a slice into the rank that owns it
    (``torch.distributed.nn.functional.all_gather``), so a loss over the gathered rows trains the local
    embeddings for every rank's use of them. All ranks must pass the same shape. Without a process group
    the tensor comes back unchanged at offset 0.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    if not is_distributed():
        return tensor, 0
    with warnings.catch_warnings():
        # torch >= 2.9 points to a private replacement (_functional_collectives); this public one still works
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(tensor.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * tensor.shape[0]


def allreduce_gradients(params: Sequence[torch.Tensor]) -> None:
    """Average ``params``' gradients over the ranks, in flat buckets as DDP does.

    A parameter without a gradient on this rank (a vision tower on a text-only slice) contributes zeros,
    so every rank runs the same collectives; one without a gradient on any rank keeps none, so the optimiser
    skips it as a single process on the global batch would (AdamW would otherwise decay it and move it by its
    momentum).
    """
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return
    from torch.distributed.tensor import DTensor

    world = dist.get_world_size()
    # FSDP-sharded parameters' backward reduce-scattered (averaged) their gradients already
    plain = [p for p in params if not isinstance(p, DTensor)]
    had = torch.tensor([p.grad is not None for p in plain], dtype=torch.uint8)
    if dist.get_backend() == "nccl":
        had = had.cuda()
    dist.all_reduce(had, op=dist.ReduceOp.MAX)
    grads: list[torch.Tensor] = []
    for p in plain:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    by_type: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        by_type.setdefault((g.dtype, g.device), []).append(g)
    for group in by_type.values():
        start = 0
        while start < len(group):
            end, size = start, 0
            while end < len(group) and (end == start or size + group[end].numel() <= _BUCKET):
                size += group[end].numel()
                end += 1
            bucket = group[start:end]
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            start = end
    for p, used in zip(plain, had.tolist(), strict=True):
        if not used:
            p.grad = None


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on at least one rank (``flag`` itself without a process group)."""
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float) -> float:
    """Scale the gradients so their global L2 norm is at most ``max_norm``, as ``clip_grad_norm_``; returns the
    norm before clipping. The parameters may mix FSDP2 shards (``DTensor``, whose norm is reduced over the
    ranks) with plain tensors (a reranker's yes/no head), which ``torch.nn.utils.clip_grad_norm_`` refuses."""
    import torch
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    squares = []
    for group in ([g for g in grads if isinstance(g, DTensor)], [g for g in grads if not isinstance(g, DTensor)]):
        if group:
            norm = torch.nn.utils.get_total_norm(group, 2.0)
            if isinstance(norm, DTensor):
                norm = norm.full_tensor()
            squares.append(float(norm) ** 2)
    total = sum(squares) ** 0.5
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total


def mean_over_ranks(value: float) -> float:
    """The mean of a float over the ranks (the global-batch loss from the slices' losses)."""
    import torch
    import torch.distributed as dist

    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def agree(ctx: DistContext, what: str, fn: Callable[[], T], key: Callable[[T], object] | None = None) -> T:
    """Run ``fn`` on every rank and fail on all of them if it failed on any, naming the rank and reason.

    A check that fails on one rank only (a data file missing on one machine) would otherwise leave the
    other ranks waiting in their first collective until the timeout. With ``key``, the ranks must also
    agree on ``key(result)`` (the same data on every machine).
    """
    import torch.distributed as dist

    if not ctx.enabled:
        return fn()
    try:
        result: T | None = fn()
        report: tuple[str | None, str | None] = (None, repr(key(result)) if key is not None else None)
    except OmniretError as e:
        result, report = None, (str(e), None)
    reports: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(reports, report)
    failed = [(r, msg) for r, (msg, _) in enumerate(reports) if msg is not None]
    if failed:
        raise ConfigError(f"{what} failed on {len(failed)} of {ctx.world_size} ranks; "
                          + "; ".join(f"rank {r}: {msg}" for r, msg in failed))
    if key is not None and len({k for _, k in reports}) > 1:
        detail = "; ".join(f"rank {r}: {k}" for r, (_, k) in enumerate(reports))
        raise ConfigError(f"{what}: the ranks disagree ({detail}); every machine must see the same data")
    return cast(T, result)


def barrier() -> None:
    """Wait for every rank (after rank 0 wrote a checkpoint, so none races ahead of it)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


@contextmanager
def collective_errors(ctx: DistContext, where: str) -> Iterator[None]:
    """Turn a collective's failure (a peer died, the timeout hit) into a ``DistributedError`` saying so."""
    import torch.distributed as dist

    try:
        yield
    except dist.DistError as e:
        raise DistributedError(
            f"rank {ctx.rank} of {ctx.world_size}: lost the other ranks during {where} — a worker died, "
            f"hung past the timeout or the network failed ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e
    except RuntimeError as e:
        text = str(e)
        if ctx.enabled and any(s in text for s in ("Connection closed", "Connection reset", "Gloo",
                                                    "NCCL", "timed out", "Timed out")):
            raise DistributedError(
                f"rank {ctx.rank} of {ctx.world_size}: lost the other ranks during {where} — a worker died, "
                f"hung past the timeout or the network failed ({text.splitlines()[0]})"
            ) from e
        raise


def global_batch_plan(per_device: int, world_size: int, global_batch: int | None) -> tuple[int, int]:
    """``(per_device, global)`` batch sizes: ``global_batch`` split evenly, else ``per_device × world``.

    Raises ``ConfigError`` when the global batch does not divide into ``world_size`` equal slices (the
    gather needs equal shapes and the gradient average needs equal weights).
    """
    if global_batch is None:
        if per_device <= 0:
            raise ConfigError(f"--batch-size must be >= 1, got {per_device}")
        return per_device, per_device * world_size
    if global_batch <= 0 or global_batch % world_size:
        raise ConfigError(f"global batch {global_batch} does not divide into {world_size} equal per-rank slices; "
                          f"use a multiple of the world size {world_size}")
    return global_batch // world_size, global_batch


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded shuffle cut into ``global_batch`` examples (the last may
    be short). It depends on neither the world size nor the rank, which is what makes resume elastic."""
    import random

    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return [order[i:i + global_batch] for i in range(0, n, global_batch)]


def rank_slice(batch: Sequence[int], ctx: DistContext, order: Sequence[int]) -> list[int]:
    """This rank's equal, contiguous slice of a global batch (rank 0 first, as the gather orders them).

    A short last batch that does not split evenly is padded with the epoch's first examples, as
    ``DistributedSampler`` pads: the gather needs equal shapes and the gradient average equal weights.
    """
    batch = list(batch)
    if len(batch) % ctx.world_size:
        batch += list(order[:ctx.world_size - len(batch) % ctx.world_size])
    size = len(batch) // ctx.world_size
    return batch[ctx.rank * size:(ctx.rank + 1) * size]


def current_context() -> DistContext:
    """The context of the process group this process is in (a single-process context outside one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def gather_default(flag: bool | None) -> bool:
    """Whether negatives are gathered across ranks: ``flag`` when given, else on when distributed."""
    return flag if flag is not None else current_context().enabled


def announce(ctx: DistContext, cfg_batch: int, global_batch: int, gather: bool) -> str:
    """The run's first log line: world size, per-device and global batch, whether negatives are gathered."""
    import torch.distributed as dist

    backend = dist.get_backend() if ctx.enabled else "none"
    return (f"data-parallel: world_size={ctx.world_size} (backend {backend}), per-device batch {cfg_batch}, "
            f"global batch {global_batch}, gather_negatives={str(gather).lower()}")


def log_line(line: str) -> None:
    """One line to the training log and to stderr (call it on rank 0 only)."""
    import logging

    from rich.console import Console

    logging.getLogger("omniret.training").info(line)
    Console(stderr=True).print(line, highlight=False, soft_wrap=True)
