"""Ingestion as a Ray Data job: ``omniret index PATHS --collection C --ray [ADDRESS]``.

The driver lists the files, hashes them and consults the collection's ledger (so a re-run skips what
was indexed, exactly as a single-process run does). Ray Data then reads, chunks and decodes the files
that changed in CPU actors (``ReadFiles``) and embeds their items in an actor pool (``EmbedItems``, one
model per actor: ``num_gpus=1`` each on a GPU cluster, CPU actors otherwise). The driver streams the
results back and is the only writer: a file's items are upserted once all of them arrived, then its
ledger row is committed, so killing the driver at any moment loses nothing committed and duplicates
nothing. A FAISS collection lives on the driver's disk; for several nodes point the collection at a
Qdrant server or cluster (``--qdrant-url``) so every node's results land in one place (the files
themselves must be readable at the same paths on every node: a shared file system).

Ray is an optional extra: ``pip install 'omniret[ray]'``.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import ConfigError, ItemError, WorkerError
from omniret.index.ingest import (
    FileReader,
    IngestOptions,
    IngestReport,
    Ledger,
    SkipFile,
    Source,
    _progress,
    _prune,
    _reason,
    discover,
    sha256_of,
)

INSTALL_HINT = "--ray needs Ray Data: pip install 'omniret[ray]' (or pip install 'ray[data]>=2.10')"


def import_ray() -> Any:
    """The ``ray`` module, or a ``ConfigError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part we need
    except ImportError as e:
        raise ConfigError(INSTALL_HINT) from e
    return ray


def check_address(address: str | None, *, timeout: float = 5.0) -> None:
    """Fail fast (``ConfigError``) on a Ray address nothing answers at, before any work; ``None`` and
    ``auto`` are checked by ``ray.init`` itself."""
    if address is None or address == "auto" or address == "local":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: give auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the head's "
                          "GCS address)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"--ray {address!r}: cannot reach the Ray cluster at {host}:{port} ({e})") from e


def init_ray(address: str | None, *, num_cpus: int | None = None) -> Any:
    """Connect to the cluster at ``address`` or start a local one (no dashboard)."""
    ray = import_ray()
    check_address(address)
    if ray.is_initialized():
        return ray
    try:
        if address is None or address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"--ray {address or 'local'}: cannot start or join a Ray cluster ({e})") from e
    return ray


@dataclass(frozen=True)
class ModelInfo:
    """What the reading actors need of the model, without its weights: name, modalities, tokenizer."""

    name: str
    path: str
    modalities: frozenset[str]
    tokenizer_source: str | None
    load_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, embedder: Any) -> ModelInfo:
        from omniret.base.models import find_tokenizer

        tok = find_tokenizer(embedder)
        return cls(name=str(embedder.name), path=str(getattr(embedder, "path", embedder.name)),
                   modalities=frozenset(getattr(embedder, "modalities", {"text"})),
                   tokenizer_source=str(tok.name_or_path) if tok is not None else None)


class _InfoEmbedder:
    """Stands in for the embedder inside ``FileReader`` (which reads ``name``, ``modalities``, ``tokenizer``)."""

    def __init__(self, info: ModelInfo) -> None:
        self.name = info.name
        self.modalities = info.modalities
        self.tokenizer: Any = None
        if info.tokenizer_source:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(info.tokenizer_source)


class ReadFiles:
    """Ray Data actor: source rows in, one row per item out (or one row per skipped/failed file)."""

    def __init__(self, info: ModelInfo, options: IngestOptions) -> None:
        self.reader = FileReader(_InfoEmbedder(info), options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols: dict[str, list[Any]] = {k: [] for k in ("source", "sha", "old_ids", "n", "ord", "id", "item",
                                                      "payload", "status", "reason")}

        def row(src: Source, sha: str, old: str, n: int, i: int, id_: str, item: bytes, payload: str,
                status: str, reason: str) -> None:
            for k, v in zip(cols, (src.key, sha, old, n, i, id_, item, payload, status, reason), strict=True):
                cols[k].append(v)

        for spec in batch["spec"]:
            d = json.loads(str(spec))
            src = Source(d["key"], Path(d["path"]), Path(d["root"]), d.get("manifest_items"))
            try:
                entries = self.reader.read(src, d["sha"])
            except SkipFile as e:
                row(src, d["sha"], d["old_ids"], 0, 0, "", b"", "", "skip", str(e))
                continue
            except (ItemError, OSError, ValueError) as e:
                row(src, d["sha"], d["old_ids"], 0, 0, "", b"", "", "fail", _reason(e, src.key))
                continue
            for i, (id_, item, payload) in enumerate(entries):
                row(src, d["sha"], d["old_ids"], len(entries), i, id_, pickle.dumps(item),
                    json.dumps(payload, ensure_ascii=False), "ok", "")
        return {k: np.array(v, dtype=object) for k, v in cols.items()}


class EmbedItems:
    """Ray Data actor: one model per actor; item rows in, the same rows with ``vector`` (and errors) out."""

    def __init__(self, info: ModelInfo, device: str | None, dim: int | None) -> None:
        from omniret.embed import load_embedder

        self.embedder = load_embedder(info.path, device=device, **dict(info.load_options))
        self.dim = dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = [i for i, s in enumerate(batch["status"]) if s == "ok"]
        n = len(batch["status"])
        d = self.dim or int(self.embedder.dim)
        vectors = np.zeros((n, d), np.float32)
        status = np.array(batch["status"], dtype=object)
        reason = np.array(batch["reason"], dtype=object)
        if ok:
            res = self.embedder.embed_partial([pickle.loads(batch["item"][i]) for i in ok], dim=self.dim)
            for r, i in enumerate(res.indices):
                vectors[ok[i]] = res.vectors[r]
            for f in res.failures:
                status[ok[f.index]], reason[ok[f.index]] = "fail", f.reason
        out = {k: v for k, v in batch.items() if k != "item"}
        out.update(vector=vectors, status=status, reason=reason)
        return out


def ray_ingest(paths: Sequence[str | os.PathLike[str]], *, embedder: Any, store: Any, ledger: Ledger,
               dim: int | None = None, options: IngestOptions | None = None, recursive: bool = True,
               address: str | None = None, actors: int | None = None, readers: int = 1, num_cpus: int | None = None,
               progress: bool = True, console: Any = None) -> IngestReport:
    """Index files into ``store`` with a Ray Data pipeline (see module docstring); the driver writes."""
    ray = init_ray(address, num_cpus=num_cpus)
    opts = options or IngestOptions()
    report = IngestReport()
    t0 = time.perf_counter()
    sources = discover(paths, recursive=recursive)
    known = ledger.snapshot()
    todo: list[str] = []
    for src in sources:
        try:
            sha = sha256_of(src.path)
        except OSError as e:
            report.failed.append((src.key, _reason(e, src.key)))
            continue
        prev = known.get(src.key)
        if prev is not None and prev[0] == sha:
            report.unchanged += 1
            continue
        todo.append(json.dumps({"key": src.key, "path": str(src.path), "root": str(src.root), "sha": sha,
                                "old_ids": prev[1] if prev else "[]", "manifest_items": src.manifest_items}))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # omniret's own bar counts files; Ray's would print per operator
    if not progress:
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
    info = ModelInfo.of(embedder)
    embed_dim = dim if dim is not None and dim != getattr(embedder, "dim", dim) else None
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = actors or (gpus if gpus else max(1, cpus - 1))
    bar = _progress(console) if progress else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("indexing", total=len(sources), items=0, completed=report.unchanged)
    try:
        if todo:
            ds = ray.data.from_items([{"spec": s} for s in todo], override_num_blocks=max(1, min(len(todo), 64)))
            pool = ray.data.ActorPoolStrategy
            ds = ds.map_batches(ReadFiles, fn_constructor_args=(info, opts), batch_size=4,
                                compute=pool(size=readers), num_cpus=0.5, batch_format="numpy")
            ds = ds.map_batches(EmbedItems, fn_constructor_args=(info, "cuda" if gpus else "cpu", embed_dim),
                                batch_size=opts.batch_items, compute=pool(size=n_actors),
                                num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, batch_format="numpy")
            _write_stream(_rows(ds, opts.batch_items), store, ledger, report, opts.batch_items,
                          lambda files: bar.update(task, advance=files, items=report.indexed_items)
                          if bar is not None else None)
        if opts.prune:
            _prune(sources, paths, store, ledger, report)
    except Exception as e:
        if type(e).__module__.startswith("ray"):
            raise WorkerError(f"the Ray job failed: {type(e).__name__}: {e}") from e
        raise
    finally:
        if bar is not None:
            bar.stop()
        report.seconds = time.perf_counter() - t0
    return report


def _rows(ds: Any, batch: int) -> Iterator[dict[str, Any]]:
    for b in ds.iter_batches(batch_size=batch, batch_format="numpy"):
        keys = list(b)
        for i in range(len(b["source"])):
            yield {k: b[k][i] for k in keys}


def _write_stream(rows: Iterator[dict[str, Any]], store: Any, ledger: Ledger, report: IngestReport, batch: int,
                  advance: Any) -> None:
    """Group item rows by file; write complete, fully embedded files in batches, then their ledger rows."""
    partial: dict[str, list[dict[str, Any]]] = {}
    ready: list[list[dict[str, Any]]] = []

    def flush() -> None:
        if not ready:
            return
        ids = [str(r["id"]) for f in ready for r in f]
        vecs = np.stack([np.asarray(r["vector"], np.float32) for f in ready for r in f])
        store.upsert(ids, vecs, [json.loads(str(r["payload"])) for f in ready for r in f])
        stale = [i for f in ready for i in set(json.loads(str(f[0]["old_ids"]))) - {str(r["id"]) for r in f}]
        if stale:
            store.delete(stale)
            report.deleted_items += len(stale)
        ledger.commit([(Source(str(f[0]["source"]), Path(""), Path("")), str(f[0]["sha"]), [str(r["id"]) for r in f])
                       for f in ready])
        report.indexed_files += len(ready)
        report.indexed_items += len(ids)
        advance(len(ready))
        ready.clear()

    for r in rows:
        key = str(r["source"])
        if r["status"] in ("skip", "fail") and int(r["n"]) == 0:
            (report.skipped if r["status"] == "skip" else report.failed).append((key, str(r["reason"])))
            advance(1)
            continue
        got = partial.setdefault(key, [])
        got.append(r)
        if len(got) < int(r["n"]):
            continue
        del partial[key]
        got.sort(key=lambda x: int(x["ord"]))
        bad = [x for x in got if x["status"] != "ok"]
        if bad:
            more = f" (and {len(bad) - 1} more items)" if len(bad) > 1 else ""
            report.failed.append((key, f"{bad[0]['id']}: {bad[0]['reason']}{more}"))
            advance(1)
            continue
        ready.append(got)
        if sum(len(f) for f in ready) >= batch:
            flush()
    flush()
    if partial:  # cannot happen unless rows were lost on the way: say so rather than commit half a file
        raise WorkerError(f"the Ray job returned part of {len(partial)} file(s) ({sorted(partial)[:3]}); "
                          "nothing of them was committed, re-run to index them")
