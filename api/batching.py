"""Micro-batching: concurrent requests' items share model batches in one worker thread.

Each request becomes a job (its items, each carrying its instruction, and its Matryoshka dim). The
worker takes the first waiting job, gathers more for up to ``max_wait_ms`` or until the batch would pass
``max_batch_items`` / ``max_batch_tokens`` (an estimate), embeds them in one ``embed_partial`` call at
full dimension, then hands every job its own rows, truncated to its dim. A job is never split, so a
request larger than a batch runs alone. The model therefore runs off the event loop, one batch at a time,
and throughput rises with concurrency.

Isolation: a bad item fails only its own request (``embed_partial`` reports it beside the good rows).
If a merged batch raises anyway, each of its jobs is re-run alone, so only the culprit sees the error.

With ``enabled=False`` every request runs alone: its own model call on one model thread, one call at a
time, in arrival order. That is the baseline of the load test.

Either way one thread owns the models and the open collections: HF fast tokenizers, most models and
SQLite handles must not be used from two threads at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

import numpy as np

from omniret.api.metrics import Metrics
from omniret.embed.matryoshka import truncate
from omniret.embed.protocol import Embedder, EmbedResult, SubmitsBatches
from omniret.errors import ItemFailure
from omniret.types import Item

if TYPE_CHECKING:  # prometheus_client is only needed when the service records metrics
    from omniret.api.metrics import Metrics

log = logging.getLogger("omniret.api")

#: rough visual token costs used only to size batches (a 2B model's image is ~1k tokens)
_IMAGE_TOKENS = 1024
_VIDEO_TOKENS = 4096


def estimate_tokens(item: Item) -> int:
    """A cheap upper-ish estimate of an item's sequence length (characters / 3 for text)."""
    text = sum(len(t) for t in item.texts) // 3
    return 8 + text + _IMAGE_TOKENS * len(item.images) + _VIDEO_TOKENS * len(item.videos)


@dataclass
class _Job:
    items: list[Item]
    dim: int
    tokens: int
    future: Future[EmbedResult] = field(default_factory=Future[EmbedResult])
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class _Call:
    """Other model work (rerank, search, ingestion) run on the worker between batches."""

    fn: Callable[[], object]
    future: Future[object] = field(default_factory=Future[object])


P = ParamSpec("P")
T = TypeVar("T")


class _Stop:
    pass


_STOP = _Stop()


class MicroBatcher:
    """Gathers embedding jobs into model batches in one worker thread (see module docstring)."""

    def __init__(self, embedder: Embedder, *, max_batch_items: int = 64, max_batch_tokens: int = 16384,
                 max_wait_ms: float = 5.0, enabled: bool = True, metrics: Metrics | None = None) -> None:
        self.embedder = embedder
        self.max_batch_items = max_batch_items
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000.0
        self.enabled = enabled
        self.metrics = metrics
        self._queue: queue.Queue[_Job | _Call | _Stop] = queue.Queue()
        self._carry: _Job | _Call | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._solo: ThreadPoolExecutor | None = None
        #: in-flight batch slots when the embedder is a device pool
        self._slots: threading.Semaphore | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enabled and self._solo is None:
            self._solo = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniret-model")
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="omniret-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in flight, fail the jobs still waiting, end the worker."""
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        if self._solo is not None:
            self._solo.shutdown(wait=True, cancel_futures=True)
            self._solo = None

    @property
    def depth(self) -> int:
        """Jobs waiting for the worker."""
        return self._queue.qsize() + (1 if self._carry is not None else 0)

    # -- requests --------------------------------------------------------------------------------
    def submit(self, items: Sequence[Item], dim: int) -> Future[EmbedResult]:
        """Queue one request's items; the future gets an ``EmbedResult`` with request-local indices."""
        job = _Job(items=list(items), dim=dim, tokens=sum(estimate_tokens(it) for it in items))
        if self._stopped:
            job.future.set_exception(RuntimeError("the embedding worker is shutting down"))
            return job.future
        self._queue.put(job)
        self._gauge()
        return job.future

    async def embed(self, items: Sequence[Item], dim: int) -> EmbedResult:
        """Embed one request's items without blocking the event loop."""
        if not self.enabled:
            return await self._on_solo(self._embed_solo, list(items), dim)
        return await asyncio.wrap_future(self.submit(items, dim))

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run other model work (rerank, search, ingestion) on the model worker, in turn with the batches.

        One thread owns the models: HF tokenizers and most models are not safe to call from two threads.
        """
        def bound() -> T:
            return fn(*args, **kwargs)

        if not self.enabled:
            return await self._on_solo(bound)
        call = _Call(bound)
        if self._stopped:
            call.future.set_exception(RuntimeError("the model worker is shutting down"))
        else:
            self._queue.put(call)
            self._gauge()
        # the future holds what ``bound`` returned: a T
        return cast("T", await asyncio.wrap_future(call.future))

    async def _on_solo(self, fn: Callable[..., T], *args: object) -> T:
        if self._stopped or self._solo is None:
            raise RuntimeError("the model worker is not running")
        return await asyncio.get_running_loop().run_in_executor(self._solo, fn, *args)

    # -- worker ----------------------------------------------------------------------------------
    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)

    def _next(self, timeout: float | None) -> _Job | _Call | _Stop | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            if timeout is None:
                return self._queue.get()
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if isinstance(first, _Stop) or first is None:
                break
            if isinstance(first, _Call):
                self._gauge()
                self._run_call(first)
                continue
            batch, n, tokens = [first], len(first.items), first.tokens
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while n < self.max_batch_items and tokens < self.max_batch_tokens:
                nxt = self._next(deadline - time.perf_counter())
                if nxt is None:
                    break
                if isinstance(nxt, _Stop):
                    stop = True
                    break
                if isinstance(nxt, _Call) or n + len(nxt.items) > self.max_batch_items or tokens + nxt.tokens > self.max_batch_tokens:
                    self._carry = nxt  # starts the next batch
                    break
                batch.append(nxt)
                n += len(nxt.items)
                tokens += nxt.tokens
            self._gauge()
            self._run(batch)
            if stop:
                break
        self._drain()

    def _drain(self) -> None:
        pending = [self._carry] if self._carry is not None else []
        self._carry = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, _Stop):
                pending.append(job)
        for job in pending:
            job.future.set_exception(RuntimeError("the embedding worker is shutting down"))
        self._gauge()

    @staticmethod
    def _run_call(call: _Call) -> None:
        try:
            out = call.fn()
        except Exception as e:  # noqa: BLE001 - the caller gets the error, the worker lives on
            call.future.set_exception(e)
            return
        call.future.set_result(out)

    def _run(self, batch: list[_Job]) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.observe(sum(len(j.items) for j in batch))
            self.metrics.batch_requests.observe(len(batch))
        if isinstance(self.embedder, SubmitsBatches):
            self._run_on_replicas(self.embedder, batch)
            return
        if len(batch) == 1:
            self._finish_alone(batch[0])
            return
        merged = [it for job in batch for it in job.items]
        try:
            result = self.embedder.embed_partial(merged)
        except Exception:  # noqa: BLE001 - find the culprit: each job alone, so others still succeed
            log.warning("a merged batch of %d requests failed; retrying them one by one", len(batch))
            for job in batch:
                self._finish_alone(job)
            return
        self._split(batch, result)

    def _run_on_replicas(self, pool: SubmitsBatches, batch: list[_Job]) -> None:
        """A device pool (one model replica per device): hand the batch to the least-busy replica and go
        back to gathering the next one; at most two batches per replica are in flight (backpressure: the
        queue grows and the next batches merge more requests)."""
        if self._slots is None:
            self._slots = threading.Semaphore(2 * max(1, len(getattr(pool, "devices", [1]))))
        self._slots.acquire()
        merged = [it for job in batch for it in job.items]
        try:
            fut = pool.submit(merged)
        except Exception as e:  # noqa: BLE001 - every replica is gone: the requests get the error
            self._slots.release()
            for job in batch:
                if not job.future.cancelled():
                    job.future.set_exception(e)
            return

        def done(f: Future[EmbedResult]) -> None:
            assert self._slots is not None
            self._slots.release()
            err = f.exception()
            if err is not None:  # a replica died or failed: its batch's requests say so, the rest go on
                for job in batch:
                    if not job.future.cancelled():
                        job.future.set_exception(err)
                return
            self._split(batch, f.result())

        fut.add_done_callback(done)

    def _split(self, batch: list[_Job], result: EmbedResult) -> None:
        """Hand each job of a merged batch its own rows (truncated to its dim) and failures."""
        rows = {i: r for r, i in enumerate(result.indices)}
        failures_at: dict[int, ItemFailure] = {f.index: f for f in result.failures}
        start = 0
        for job in batch:
            idx: list[int] = []
            vecs: list[int] = []
            fails: list[ItemFailure] = []
            for local in range(len(job.items)):
                g = start + local
                if g in rows:
                    idx.append(local)
                    vecs.append(rows[g])
                elif g in failures_at:
                    f = failures_at[g]
                    fails.append(ItemFailure(index=local, id=f.id, reason=f.reason))
            full = result.vectors[vecs] if vecs else np.zeros((0, result.vectors.shape[1]), np.float32)
            out = EmbedResult(vectors=truncate(full, job.dim), indices=idx, failures=fails)
            if not job.future.cancelled():
                job.future.set_result(out)
            start += len(job.items)

    def _finish_alone(self, job: _Job) -> None:
        try:
            out = self._embed_alone(job.items, job.dim)
        except Exception as e:  # noqa: BLE001 - the request gets the error, the worker lives on
            if not job.future.cancelled():
                job.future.set_exception(e)
            return
        if not job.future.cancelled():
            job.future.set_result(out)

    def _embed_solo(self, items: list[Item], dim: int) -> EmbedResult:
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(items))
            self.metrics.batch_requests.observe(1)
        return self._embed_alone(items, dim)

    def _embed_alone(self, items: list[Item], dim: int) -> EmbedResult:
        result = self.embedder.embed_partial(items)
        return EmbedResult(vectors=truncate(result.vectors, dim), indices=result.indices,
                           failures=result.failures)
