"""``EmbedderPool``: one embedding worker process per device, each holding its own model copy.

In the manner of sentence-transformers' ``start_multi_process_pool``: workers are started with
torch.multiprocessing's ``spawn`` (CUDA cannot be forked), load the model on their device, and take
batches from the coordinator. The pool is an ``Embedder`` (``embed``, ``embed_partial``, ``embed_chunks``,
``name``, ``dim``, ``dims``, ``modalities``), so ingestion, ``omniret embed`` and the service use it
unchanged; ``submit`` hands one batch to the least-busy worker and returns a ``Future``, which is what
lets a pipeline keep every device busy.

Failure, never a hang: each worker has its own pipes (a worker killed mid-write cannot wedge a shared
queue's lock), and one collector thread waits on the result pipes *and* the worker process sentinels. A
worker that dies fails every batch it held with a ``WorkerError`` naming its device and exit code; a
worker that raises fails that batch only and lives on; ``batch_timeout`` bounds a batch that hangs.
When the coordinator dies, the workers see their task pipe close and exit.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from omniret.embed.matryoshka import check_dim
from omniret.embed.protocol import EmbedResult, ItemLike
from omniret.errors import ConfigError, ItemError, ItemFailure, WorkerError
from omniret.types import Item

log = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def parse_devices(spec: str | Sequence[str] | None) -> list[str] | None:
    """Devices from ``auto``, ``cpu,cpu``, ``cuda:0,cuda:1`` or a list; ``None`` stays ``None`` (in-process).

    ``auto`` is every visible CUDA device, else one CPU worker. Checked here, before any model loads: an
    unknown name or a CUDA index this machine does not have is a ``ConfigError``.
    """
    if spec is None:
        return None
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"devices={spec!r}: give auto, or a comma-separated list such as cpu,cpu or "
                          "cuda:0,cuda:1")
    if parts == ["auto"]:
        n = _cuda_count()
        return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]
    n_cuda: int | None = None
    out = []
    for p in parts:
        if not _DEVICE_RE.match(p):
            raise ConfigError(f"device {p!r} is not a device: use auto, cpu, mps, cuda or cuda:N "
                              "(comma-separated, one worker each)")
        if p.startswith("cuda"):
            n_cuda = _cuda_count() if n_cuda is None else n_cuda
            idx = int(p.split(":")[1]) if ":" in p else 0
            if idx >= n_cuda:
                raise ConfigError(f"device {p!r}: this machine has {n_cuda} visible CUDA device(s)")
            p = f"cuda:{idx}"
        out.append(p)
    return out


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# -- worker process ------------------------------------------------------------------------------
def _worker_main(wid: int, device: str, model: str, dtype: str | None, options: dict[str, Any],
                 threads: int | None, tasks: Connection, results: Connection) -> None:
    """Load the model on ``device``, then embed batches until the task pipe says stop or closes."""
    import queue

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        from omniret.embed import load_embedder

        emb = load_embedder(model, device=device, dtype=dtype, **options)
    except BaseException as e:  # noqa: BLE001 - reported to the coordinator, which names the device
        results.send(("failed", f"{type(e).__name__}: {e}"))
        return
    tok = _tokenizer_of(emb)
    results.send(("ready", {"name": str(emb.name), "dim": int(emb.dim), "dims": tuple(emb.dims),
                            "modalities": tuple(sorted(emb.modalities)), "path": str(getattr(emb, "path", model)),
                            "tokenizer": tok, "backend": str(getattr(emb, "backend", "torch"))}))
    inbox: queue.Queue[Any] = queue.Queue()

    def receive() -> None:  # a separate reader, so the coordinator's sends never block on a busy worker
        while True:
            try:
                inbox.put(tasks.recv())
            except (EOFError, OSError):  # the coordinator is gone
                inbox.put(None)
                return

    threading.Thread(target=receive, daemon=True).start()
    while True:
        task = inbox.get()
        if task is None:
            return
        task_id, items, instruction, dim = task
        try:
            res = emb.embed_partial(items, instruction=instruction, dim=dim)
            msg = ("result", task_id, res.vectors, res.indices, [(f.index, f.id, f.reason) for f in res.failures])
        except Exception as e:  # noqa: BLE001 - this batch fails; the worker lives on
            msg = ("error", task_id, f"{type(e).__name__}: {e}")
        try:
            results.send(msg)
        except (BrokenPipeError, OSError):
            return


def _tokenizer_of(emb: Any) -> str | None:
    """Where the coordinator can load the same tokenizer (text chunking must match a single process)."""
    from omniret.base.models import find_tokenizer

    tok = find_tokenizer(emb)
    return (str(getattr(tok, "name_or_path", "")) or None) if tok is not None else None


# -- coordinator ---------------------------------------------------------------------------------
@dataclass
class _Worker:
    wid: int
    device: str
    proc: Any
    tasks: Connection
    results: Connection
    inflight: dict[int, tuple[Future[EmbedResult], int, float]] = field(default_factory=dict)
    dead: str | None = None

    @property
    def label(self) -> str:
        return f"embedding worker {self.wid} ({self.device}, pid {self.proc.pid})"


class EmbedderPool:
    """An ``Embedder`` whose batches run in worker processes, one per device (see module docstring).

    ``model`` is a registry name, hub id or checkpoint path every worker loads; ``options`` go to
    ``load_embedder``. ``threads``: torch threads per CPU worker (default: the cores shared out).
    ``start_timeout`` bounds model loading; ``batch_timeout`` (None: unbounded) one batch.
    """

    def __init__(self, model: str | os.PathLike[str], devices: Sequence[str] | str, *, dtype: str | None = None,
                 threads: int | None = None, start_timeout: float = 900.0, batch_timeout: float | None = None,
                 **options: Any) -> None:
        import torch.multiprocessing as mp

        devs = parse_devices(devices if isinstance(devices, str) else list(devices))
        assert devs is not None
        self.devices = devs
        self.model = str(model)
        self.batch_timeout = batch_timeout
        n_cpu = sum(1 for d in devs if d == "cpu")
        cpu_threads = threads or max(1, (os.cpu_count() or 1) // max(1, n_cpu))
        ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self._workers: list[_Worker] = []
        for wid, dev in enumerate(devs):
            task_r, task_w = ctx.Pipe(duplex=False)
            res_r, res_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"omniret-embed-{wid}",
                               args=(wid, dev, self.model, dtype, options, cpu_threads if dev == "cpu" else threads,
                                     task_r, res_w), daemon=True)
            proc.start()
            task_r.close()
            res_w.close()
            self._workers.append(_Worker(wid, dev, proc, task_w, res_r))
        self._finalizer = weakref.finalize(self, _shutdown, list(self._workers))
        try:
            info = self._handshake(start_timeout)
        except BaseException:
            self.close()
            raise
        self.name: str = info["name"]
        self.dim: int = info["dim"]
        self.dims: tuple[int, ...] = tuple(info["dims"])
        self.modalities: frozenset[str] = frozenset(info["modalities"])
        #: where the workers' models run (torch, onnx, onnx-int8, openvino), as they reported it
        self.backend: str = str(info.get("backend", "torch"))
        self.path: str = info["path"]
        self._tokenizer_source: str | None = info["tokenizer"]
        self._tokenizer: Any = None
        self._collector = threading.Thread(target=self._collect, name="omniret-pool-collector", daemon=True)
        self._collector.start()

    # -- lifecycle -------------------------------------------------------------------------------
    def _handshake(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        waiting = {w.wid: w for w in self._workers}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                w = next(iter(waiting.values()))
                raise WorkerError(f"{w.label} did not load model {self.model} within {timeout:.0f} s")
            ready = wait([c for w in waiting.values() for c in (w.results, w.proc.sentinel)], timeout=left)
            for w in list(waiting.values()):
                if w.results in ready:
                    try:
                        kind, payload = w.results.recv()
                    except (EOFError, OSError):
                        w.proc.join(1)
                        raise WorkerError(f"{w.label} could not load model {self.model}: exited with code "
                                          f"{w.proc.exitcode}") from None
                    if kind == "failed":
                        raise WorkerError(f"{w.label} could not load model {self.model}: {payload}")
                    if not info:
                        info = dict(payload)
                    del waiting[w.wid]
                elif w.proc.sentinel in ready:
                    w.proc.join(1)
                    raise WorkerError(f"{w.label} exited with code {w.proc.exitcode} while loading model "
                                      f"{self.model}")
        return info

    def close(self) -> None:
        """Stop the workers (they finish nothing new) and fail whatever is still in flight."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()
        for w in self._workers:
            self._mark_dead(w, "the pool was closed")

    def __enter__(self) -> EmbedderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [int(w.proc.pid) for w in self._workers]

    @property
    def alive(self) -> int:
        return sum(1 for w in self._workers if w.dead is None)

    @property
    def tokenizer(self) -> Any:
        """The workers' tokenizer, loaded here, so the coordinator chunks text exactly as one process does."""
        if self._tokenizer is None and self._tokenizer_source:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_source)
        return self._tokenizer

    def __repr__(self) -> str:
        return f"EmbedderPool({self.name!r}, devices={self.devices})"

    # -- batches ---------------------------------------------------------------------------------
    def check_dim(self, dim: int | None) -> int:
        return check_dim(dim, full=self.dim, supported=self.dims, model=self.name)

    def submit(self, items: Sequence[ItemLike], *, instruction: str | None = None,
               dim: int | None = None) -> Future[EmbedResult]:
        """Queue one batch on the least-busy live worker; the future gets its ``EmbedResult``."""
        d = self.check_dim(dim)
        batch = [Item.coerce(x, index=i) if isinstance(x, (str, dict)) else x for i, x in enumerate(items)]
        fut: Future[EmbedResult] = Future()
        fut.set_running_or_notify_cancel()  # a worker owns it from now on: cancel() cannot pull it back
        if not batch:
            fut.set_result(EmbedResult(np.zeros((0, d), np.float32), []))
            return fut
        while True:
            with self._lock:
                if self._closed:
                    raise WorkerError("the embedding pool is closed")
                live = [w for w in self._workers if w.dead is None]
                if not live:
                    raise WorkerError("every embedding worker has died: "
                                      + "; ".join(f"{w.label}: {w.dead}" for w in self._workers))
                w = min(live, key=lambda x: (len(x.inflight), x.wid))
                task_id = next(self._ids)
                w.inflight[task_id] = (fut, len(batch), time.monotonic())
                try:
                    w.tasks.send((task_id, batch, instruction, d))
                except (BrokenPipeError, OSError):
                    w.inflight.pop(task_id, None)
                    dead_w: _Worker | None = w
                else:
                    return fut
            if dead_w is not None:  # outside the lock: fail its batches, then try another worker
                self._mark_dead(dead_w, f"its task pipe broke (exit code {dead_w.proc.exitcode})")

    def embed_partial(self, items: Sequence[ItemLike], *, instruction: str | None = None,
                      dim: int | None = None) -> EmbedResult:
        """One call spread over the live workers in contiguous shards, merged back in input order."""
        if isinstance(items, (str, Item, dict)):
            raise TypeError("embed() takes a list of items; wrap a single item in a list")
        items = list(items)
        d = self.check_dim(dim)
        if not items:
            return EmbedResult(np.zeros((0, d), np.float32), [])
        n = max(1, min(self.alive, len(items)))
        bounds = np.linspace(0, len(items), n + 1).astype(int)
        futs = [(int(a), self.submit(items[a:b], instruction=instruction, dim=d))
                for a, b in itertools.pairwise(bounds) if b > a]
        return merge_results([(start, f.result()) for start, f in futs], d)

    def embed(self, items: Sequence[ItemLike], *, instruction: str | None = None,
              dim: int | None = None) -> np.ndarray:
        """Vectors for every item; raises ``ItemError`` listing every bad item."""
        res = self.embed_partial(items, instruction=instruction, dim=dim)
        if res.failures:
            raise ItemError.combine([ItemError.for_item(f.index, f.id, f.reason) for f in res.failures])
        return res.vectors

    def embed_chunks(self, chunks: Iterable[Sequence[ItemLike]], *, instruction: str | None = None,
                     dim: int | None = None, depth: int | None = None) -> Iterator[EmbedResult]:
        """``embed_partial`` over a stream of chunks, ``depth`` (default two per worker) in flight; in order."""
        from collections import deque

        limit = depth or 2 * len(self._workers)
        pending: deque[Future[EmbedResult]] = deque()
        for chunk in chunks:
            pending.append(self.submit(list(chunk), instruction=instruction, dim=dim))
            while len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    # -- collector -------------------------------------------------------------------------------
    def _collect(self) -> None:
        while not self._closed:
            live = [w for w in self._workers if w.dead is None]
            if not live:
                return
            try:
                ready = wait([c for w in live for c in (w.results, w.proc.sentinel)], timeout=0.5)
            except OSError:
                ready = []
            for w in live:
                if w.results in ready:
                    try:
                        msg = w.results.recv()
                    except (EOFError, OSError):
                        w.proc.join(1)
                        self._mark_dead(w, f"it exited with code {w.proc.exitcode}")
                        continue
                    except Exception as e:  # noqa: BLE001 - a torn message from a dying worker
                        self._mark_dead(w, f"its result could not be read ({type(e).__name__}: {e})")
                        continue
                    self._deliver(w, msg)
                elif w.proc.sentinel in ready:
                    w.proc.join(1)
                    self._mark_dead(w, f"it exited with code {w.proc.exitcode}")
            if self.batch_timeout is not None:
                now = time.monotonic()
                for w in live:
                    late = [t for t, (_, _, t0) in list(w.inflight.items()) if now - t0 > self.batch_timeout]
                    if late:
                        w.proc.terminate()  # a worker stuck in a batch would answer late, into the wrong future
                        self._mark_dead(w, f"a batch ran past batch_timeout={self.batch_timeout:g} s")

    def _deliver(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        with self._lock:
            entry = w.inflight.pop(msg[1], None)
        if entry is None:
            return
        fut, n, _ = entry
        if fut.done():
            return
        if msg[0] == "result":
            _, _, vectors, indices, failures = msg
            fut.set_result(EmbedResult(vectors, list(indices), [ItemFailure(i, id_, r) for i, id_, r in failures]))
        else:
            fut.set_exception(WorkerError(f"{w.label} failed a batch of {n} items: {msg[2]}"))

    def _mark_dead(self, w: _Worker, why: str) -> None:
        with self._lock:
            if w.dead is None:
                w.dead = why
            lost = list(w.inflight.values())
            w.inflight.clear()
        if lost and not self._closed:
            log.error("%s died: %s; failing %d batch(es)", w.label, why, len(lost))
        for fut, n, _ in lost:
            if not fut.done():
                fut.set_exception(WorkerError(f"{w.label} died while embedding a batch of {n} items: {why}"))


def merge_results(parts: Sequence[tuple[int, EmbedResult]], dim: int) -> EmbedResult:
    """Shard results (each with its start offset) as one result over the whole input."""
    vecs = [r.vectors for _, r in parts if len(r.indices)]
    return EmbedResult(
        vectors=np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32),
        indices=[start + i for start, r in parts for i in r.indices],
        failures=[ItemFailure(start + f.index, f.id, f.reason) for start, r in parts for f in r.failures])


def _shutdown(workers: list[_Worker]) -> None:
    """Ask each worker to stop, then make sure it has (runs on close, and at exit for a forgotten pool)."""
    for w in workers:
        with contextlib.suppress(OSError):
            w.tasks.close()  # the worker's reader sees EOF and the worker returns
    deadline = time.monotonic() + 10
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            w.proc.terminate()
            w.proc.join(5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(5)
        with contextlib.suppress(OSError):
            w.results.close()


def load_embedder_on(model: Any, devices: Sequence[str] | str | None, **options: Any) -> Any:
    """An embedder for ``devices``: ``None`` or one device loads in this process, several give a pool."""
    devs = parse_devices(devices if devices is None or isinstance(devices, str) else list(devices))
    if devs is not None and len(devs) > 1:
        return EmbedderPool(model, devs, **options)
    from omniret.embed import load_embedder

    return load_embedder(model, device=devs[0] if devs else options.pop("device", None), **options)
