"""Ingestion as a Ray Data job: ``omniret index PATHS --collection C --ray [ADDRESS]``.

The ``ray`` executor. The driver lists the files, hashes them and consults the collection's ledger (so a
re-run skips what was indexed, exactly as a single-process run does). Ray Data then reads, chunks and
decodes the files that changed in CPU actors (``ReadFiles``, with the same ``FileReader`` as one process)
and embeds their items in an actor pool (``EmbedItems``, one model per actor: ``num_gpus=1`` each on a GPU
cluster, CPU actors otherwise). The driver streams the results back, reassembles each file from its item
rows (``FileAssembler``) and hands complete files to the one writer of every executor
(``omniret.index.commit.Committer``): items upserted, stale ids deleted, the ledger row committed with the
file's real root, so killing the driver at any moment loses nothing committed and duplicates nothing. A FAISS collection lives on the driver's disk; for several nodes point the collection at a
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
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import ConfigError, ItemError, ItemFailure, WorkerError
from omniret.index.commit import Committer, EmbeddedFile, ExecutorInfo, IngestReport, file_failure, reason_of
from omniret.index.ledger import Ledger, Source, changed
from omniret.index.protocol import VectorStore
from omniret.index.readers import FileReader, IngestOptions, SkipFile, discover

if TYPE_CHECKING:
    from rich.console import Console
    from transformers import PreTrainedTokenizerBase

INSTALL_HINT = "--ray needs Ray Data: pip install 'omniret[ray]' (or pip install 'ray[data]>=2.10')"


def import_ray() -> ModuleType:
    """The ``ray`` module, or a ``ConfigError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  # pyright: ignore[reportUnusedImport] - the Data library is the part we need
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


def init_ray(address: str | None, *, num_cpus: int | None = None) -> ModuleType:
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
    def of(cls, embedder: Embedder) -> ModelInfo:
        from omniret.base.models import find_tokenizer

        tok = find_tokenizer(embedder)
        return cls(name=str(embedder.name), path=str(getattr(embedder, "path", embedder.name)),
                   modalities=frozenset(getattr(embedder, "modalities", {"text"})),
                   tokenizer_source=str(tok.name_or_path) if tok is not None else None)


class ReaderModel:
    """Stands in for the embedder inside ``FileReader`` (its ``name``, ``modalities`` and ``tokenizer``),
    without the weights: what a reading actor holds."""

    def __init__(self, info: ModelInfo) -> None:
        self.name = info.name
        self.modalities = info.modalities
        self.tokenizer: PreTrainedTokenizerBase | None = None
        if info.tokenizer_source:
            from transformers import AutoTokenizer

            # transformers leaves AutoTokenizer.from_pretrained untyped; what it returns is a tokenizer
            self.tokenizer = cast("PreTrainedTokenizerBase",
                                  AutoTokenizer.from_pretrained(info.tokenizer_source))  # pyright: ignore[reportUnknownMemberType]


class ReadFiles:
    """Ray Data actor: source rows in, one row per item out (or one row per skipped/failed file)."""

    def __init__(self, info: ModelInfo, options: IngestOptions) -> None:
        self.reader = FileReader(ReaderModel(info), options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols: dict[str, list[object]] = {k: [] for k in ("source", "root", "path", "sha", "old_ids", "n", "ord", "id",
                                                      "item", "payload", "status", "reason")}

        def row(src: Source, sha: str, old: str, n: int, i: int, id_: str, item: bytes, payload: str,
                status: str, reason: str) -> None:
            values = (src.key, str(src.root), str(src.path), sha, old, n, i, id_, item, payload, status, reason)
            for k, v in zip(cols, values, strict=True):
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
                row(src, d["sha"], d["old_ids"], 0, 0, "", b"", "", "fail", reason_of(e, src.key))
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


def ray_ingest(paths: Sequence[str | os.PathLike[str]], *, embedder: Embedder, store: VectorStore, ledger: Ledger,
               dim: int | None = None, options: IngestOptions | None = None, recursive: bool = True,
               address: str | None = None, actors: int | None = None, readers: int = 1, num_cpus: int | None = None,
               progress: bool = True, console: Console | None = None) -> IngestReport:
    """Index files into ``store`` with a Ray Data pipeline (see module docstring); the driver writes.

    The report's ``executor`` is ``ray`` with the number of embedding actors the job ran with.
    """
    from omniret.index.progress import FileProgress

    ray = init_ray(address, num_cpus=num_cpus)
    opts = options or IngestOptions()
    report = IngestReport()
    t0 = time.perf_counter()
    sources = discover(paths, recursive=recursive)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = actors or (gpus if gpus else max(1, cpus - 1))
    report.executor = ExecutorInfo("ray", actors=n_actors)
    bar = FileProgress(len(sources), console=console) if progress else None
    writer = Committer(store, ledger, report, bar)
    known = ledger.snapshot()
    todo: list[str] = []
    for src in sources:
        try:
            got = changed(src, known)
        except OSError as e:
            writer.failed(src.key, reason_of(e, src.key))
            continue
        if got is None:
            writer.unchanged()
            continue
        todo.append(json.dumps({"key": src.key, "path": str(src.path), "root": str(src.root), "sha": got[0],
                                "old_ids": json.dumps(got[1]), "manifest_items": src.manifest_items}))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # omniret's own bar counts files; Ray's would print per operator
    if not progress:
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
    info = ModelInfo.of(embedder)
    embed_dim = dim if dim is not None and dim != embedder.dim else None
    try:
        if todo:
            ds = ray.data.from_items([{"spec": s} for s in todo], override_num_blocks=max(1, min(len(todo), 64)))
            pool = ray.data.ActorPoolStrategy
            ds = ds.map_batches(ReadFiles, fn_constructor_args=(info, opts), batch_size=4,
                                compute=pool(size=readers), num_cpus=0.5, batch_format="numpy")
            ds = ds.map_batches(EmbedItems, fn_constructor_args=(info, "cuda" if gpus else "cpu", embed_dim),
                                batch_size=opts.batch_items, compute=pool(size=n_actors),
                                num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, batch_format="numpy")
            files = FileAssembler(writer, opts.batch_items)
            for row in _rows(ds, opts.batch_items):
                files.add(row)
            files.finish()
        if opts.prune:
            writer.prune({s.key for s in sources}, paths)
    except Exception as e:
        if type(e).__module__.startswith("ray"):
            raise WorkerError(f"the Ray job failed: {type(e).__name__}: {e}") from e
        raise
    finally:
        if bar is not None:
            bar.stop()
        report.seconds = time.perf_counter() - t0
    return report


def _rows(ds: Any, batch: int) -> Iterator[dict[str, Any]]:  # noqa: ANN401 - a ray.data.Dataset (untyped)
    for b in ds.iter_batches(batch_size=batch, batch_format="numpy"):
        keys = list(b)
        for i in range(len(b["source"])):
            yield {k: b[k][i] for k in keys}


class FileAssembler:
    """Item rows streamed back from the job, regrouped into whole files for the committer.

    A file is handed on once every one of its rows arrived (``n`` of them), in item order; one whose items
    failed is reported failed whole; complete files are written in batches of about ``batch_items`` items.
    """

    def __init__(self, writer: Committer, batch_items: int) -> None:
        self.writer = writer
        self.batch_items = batch_items
        self.partial: dict[str, list[dict[str, Any]]] = {}
        self.ready: list[EmbeddedFile] = []

    def add(self, row: dict[str, Any]) -> None:
        key = str(row["source"])
        if row["status"] in ("skip", "fail") and int(row["n"]) == 0:
            (self.writer.skipped if row["status"] == "skip" else self.writer.failed)(key, str(row["reason"]))
            return
        got = self.partial.setdefault(key, [])
        got.append(row)
        if len(got) < int(row["n"]):
            return
        del self.partial[key]
        got.sort(key=lambda x: int(x["ord"]))
        ids = [str(r["id"]) for r in got]
        failures = [ItemFailure(i, ids[i], str(r["reason"])) for i, r in enumerate(got) if r["status"] != "ok"]
        if failures:
            self.writer.failed(key, file_failure(ids, failures))
            return
        first = got[0]
        self.ready.append(EmbeddedFile(
            Source(key, Path(str(first["path"])), Path(str(first["root"]))), str(first["sha"]),
            json.loads(str(first["old_ids"])), ids, np.stack([np.asarray(r["vector"], np.float32) for r in got]),
            [json.loads(str(r["payload"])) for r in got]))
        if sum(len(f.ids) for f in self.ready) >= self.batch_items:
            self.flush()

    def flush(self) -> None:
        self.writer.write(self.ready)
        self.ready = []

    def finish(self) -> None:
        """Write what is complete; rows of a file missing at the end mean rows were lost on the way: say so
        rather than commit half a file."""
        self.flush()
        if self.partial:
            raise WorkerError(f"the Ray job returned part of {len(self.partial)} file(s) ({sorted(self.partial)[:3]}); "
                              "nothing of them was committed, re-run to index them")
