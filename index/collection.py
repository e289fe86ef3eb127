"""Collections: a store, the model that fills it, and a manifest that keeps the two together.

A collection lives in ``<root>/<name>/`` (root defaults to ``$OMNIRET_HOME/collections``):
``collection.json`` (model name, dim, instruction, backend, index type, created time), the FAISS
folder or Qdrant local-mode folder, and the ingestion ledger. Opening it with another model or dim is a
``CollectionError``; opening it without a model loads the recorded one.

Every collection also keeps a lexical (BM25) index of its items' text beside the vectors, with the
analyser recorded in the manifest (``lexical``), so ``search(mode="lexical" | "hybrid")`` works on it.
A FAISS collection made before the lexical index gets it built from the stored payload text the first
time it is opened (resumable, with a progress bar).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import (
    CollectionError,
    CollectionExists,
    CollectionMismatch,
    CollectionNotFound,
    ConfigError,
    DimensionError,
    ItemError,
    ItemFailure,
)
from omniret.index.faiss_store import FaissStore
from omniret.index.filters import Filter
from omniret.index.ingest import IngestOptions, IngestReport, Ledger, ingest
from omniret.index.protocol import VectorStore
from omniret.index.searcher import Searcher
from omniret.index.tuning import TuneResult, check_recall
from omniret.rerank.protocol import Reranker
from omniret.types import Hit, Item

MANIFEST = "collection.json"
#: a collection name: letters, digits, '.', '_' or '-', at most 128, starting with a letter or digit (it is a
#: folder name and a Qdrant collection name); the API validates with the same pattern
COLLECTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: payload keys the collection writes itself (an item's content and where it came from); an item's
#: ``metadata`` may not use them, so user metadata can never pose as the item or point at another file
RESERVED_PAYLOAD_KEYS = frozenset({"text", "image", "video", "video_start", "video_end", "kind", "path", "source",
                                   "sha256"})
_NAME = re.compile(COLLECTION_NAME)
BACKENDS = ("faiss", "qdrant")


def _root(root: str | os.PathLike[str] | None) -> Path:
    """The collections folder: the caller's (the CLI and the service pass their settings'), else the default
    ``$OMNIRET_HOME/collections``. A library call reads no settings of its own."""
    if root is not None:
        return Path(root).expanduser()
    from omniret.settings import default_home

    return default_home() / "collections"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, "
                          "starting with a letter or digit)")


def _model_name(embedder: Embedder | str | os.PathLike[str]) -> str:
    if isinstance(embedder, (str, os.PathLike)):
        from omniret.registry import resolve

        source, spec = resolve(os.fspath(embedder))
        return spec.name if spec is not None else source
    return str(embedder.name)


class AddReport:
    """What ``Collection.add`` stored and which items it left out (with ``on_error="skip"``)."""

    def __init__(self, ids: list[str], failures: list[ItemFailure]) -> None:
        self.ids = ids
        self.failures = failures

    @property
    def added(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "ids": self.ids, "failures": [f.to_dict() for f in self.failures]}


class Collection:
    """A named, persistent set of items with the model that embeds them. Use ``open_collection``."""

    def __init__(self, name: str, path: Path, manifest: dict[str, Any], store: VectorStore, embedder: Embedder,
                 reranker: Reranker | None = None) -> None:
        self.name = name
        self.path = path
        self.manifest = manifest
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.dim = int(manifest["dim"])
        self._ledger: Ledger | None = None

    # -- info --------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """The manifest plus live facts (count, store details, indexed sources)."""
        return {**self.manifest, "name": self.name, "path": str(self.path), "count": self.count(),
                "sources": self.ledger.count(), "store": self.store.info()}

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.path / "ledger.sqlite")
        return self._ledger

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.embedder.modalities)

    def _embed_dim(self) -> int | None:
        return self.dim if self.dim != self.embedder.dim else None

    # -- writing -----------------------------------------------------------------------------------
    def add(self, items: Sequence[Any], *, on_error: str = "raise", batch_size: int = 64) -> AddReport:
        """Embed and store items (``Item``, reference dict, or str); each needs an ``id``.

        ``on_error="raise"`` stores nothing when any item is bad (``ItemError`` lists them);
        ``"skip"`` stores the good ones and reports every bad one (unusable, without an id, a repeated id,
        reserved metadata keys, or refused by the model) with its input index and reason.
        """
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error={on_error!r}: use 'raise' or 'skip'")
        checked: list[tuple[int, Item]] = []
        bad: list[ItemError] = []
        seen: set[str] = set()
        for i, x in enumerate(items):
            try:
                it = Item.coerce(x, index=i)
                if not it.id:
                    raise ItemError.for_item(i, None, "an item added to a collection needs an id")
                if it.id in seen:
                    raise ItemError.for_item(i, it.id, "the id appears twice in this call")
                reserved = sorted(set(it.metadata) & RESERVED_PAYLOAD_KEYS)
                if reserved:
                    raise ItemError.for_item(i, it.id, f"metadata key(s) {reserved} are reserved for the item's own "
                                             "fields; rename them")
            except ItemError as e:
                bad.append(e)
                continue
            seen.add(str(it.id))
            checked.append((i, it))
        if bad and on_error == "raise":
            raise ItemError.combine(bad)
        failures: list[ItemFailure] = [f for e in bad for f in e.failures]
        ids: list[str] = []
        batches = [checked[s:s + batch_size] for s in range(0, len(checked), batch_size)]
        if on_error == "raise":
            # prepare-and-check the whole call first: nothing is stored when any item is bad
            vec_parts = [self.embedder.embed([it for _, it in b], dim=self._embed_dim()) for b in batches]
            for b, v in zip(batches, vec_parts, strict=True):
                self._upsert_items([it for _, it in b], v)
                ids.extend(str(it.id) for _, it in b)
            return AddReport(ids, failures)
        for b in batches:
            res = self.embedder.embed_partial([it for _, it in b], dim=self._embed_dim())
            for f in res.failures:
                failures.append(ItemFailure(b[f.index][0], f.id, f.reason))
            good = [b[i][1] for i in res.indices]
            if good:
                self._upsert_items(good, res.vectors)
                ids.extend(str(it.id) for it in good)
        failures.sort(key=lambda f: f.index)
        return AddReport(ids, failures)

    def _upsert_items(self, items: list[Item], vectors: np.ndarray) -> None:
        payloads = []
        for it in items:
            # the item's own fields are written after its metadata: metadata never overrides them
            p: dict[str, Any] = dict(it.metadata)
            for key in ("text", "image", "video", "video_start", "video_end"):
                v = getattr(it, key)
                if isinstance(v, (str, int, float)) and not (isinstance(v, str) and v.startswith("data:")):
                    p[key] = v
            p["kind"] = "item"
            payloads.append(p)
        self.store.upsert([str(it.id) for it in items], vectors, payloads)

    def add_vectors(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None
                    ) -> None:
        """Store precomputed vectors (they must come from this collection's model and dim)."""
        self.store.upsert(ids, vectors, payloads)

    def add_files(self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *, recursive: bool = True,
                  progress: bool = True, options: IngestOptions | None = None, console: Any = None,
                  devices: Sequence[str] | str | None = None, ray: bool | str = False, ray_actors: int | None = None,
                  **option_kw: Any) -> IngestReport:
        """Ingest folders/files (see ``omniret.index.ingest``); ``option_kw`` sets ``IngestOptions`` fields.

        ``devices`` (``["cuda:0", "cuda:1"]``, ``"cpu,cpu"``, ``"auto"``): embed in one worker process per
        device (an ``EmbedderPool`` of this collection's model, started here and stopped at the end); this
        process keeps reading files and stays the only writer, so resuming and re-indexing work unchanged.
        ``ray``: run as a Ray Data job instead (``True`` starts a local cluster; ``"auto"`` or
        ``"ray://host:10001"`` joins one; ``ray_actors`` embedding actors, default one per GPU or CPU - 1);
        see ``omniret.index.ray_ingest``.
        """
        from omniret.embed.pool import EmbedderPool, parse_devices

        devs = parse_devices(devices if devices is None or isinstance(devices, str) else list(devices))
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if option_kw:
            unknown = set(option_kw) - set(IngestOptions.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"unknown ingestion option(s) {sorted(unknown)}; known: "
                                  f"{', '.join(IngestOptions.__dataclass_fields__)}")
            options = IngestOptions(**{**(options or IngestOptions()).__dict__, **option_kw})
        if ray is not False and ray is not None:
            if devs is not None:
                raise ConfigError("devices= and ray= are two ways to scale out: pick one (Ray places its own "
                                  "actors on the cluster's devices)")
            from omniret.index.ray_ingest import ray_ingest

            return ray_ingest(paths, embedder=self.embedder, store=self.store, ledger=self.ledger, dim=self.dim,
                              options=options, recursive=recursive, address=None if ray is True else str(ray),
                              actors=ray_actors, progress=progress, console=console)
        pool: EmbedderPool | None = None
        embedder = self.embedder
        if devs is not None and not isinstance(embedder, EmbedderPool):
            pool = embedder = EmbedderPool(getattr(self.embedder, "path", None) or self.manifest["model"], devs)
        try:
            return ingest(paths, embedder=embedder, store=self.store, ledger=self.ledger, dim=self.dim,
                          options=options, recursive=recursive, progress=progress, console=console)
        finally:
            if pool is not None:
                pool.close()

    def tune(self, recall: float, *, k: int = 10, sample: int = 1000) -> TuneResult:
        """Pick the index's search setting from a recall target, measured on this collection's own vectors
        (see ``omniret.index.tuning``), and record it in the manifest and the store: every later open
        searches with it. Run it again after the collection has grown a lot."""
        check_recall(recall)
        if not isinstance(self.store, FaissStore):
            raise ConfigError(f"collection {self.name!r} is a {self.manifest.get('backend')} collection: recall "
                              "tuning measures FAISS indexes (Qdrant: pass hnsw_ef / ef_construct store options)")
        res = self.store.tune(recall, k=k, sample=sample)
        self.manifest["store_options"] = {**self.manifest.get("store_options", {}), **res.settings}
        self.manifest["recall_tuning"] = {**res.to_dict(), "count": self.count()}
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2), encoding="utf-8")
        os.replace(tmp, self.path / MANIFEST)
        return res

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Remove items by id; returns the ids that were there (and are now gone), in input order."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        present = [i for i, rec in zip(wanted, self.store.get(wanted), strict=True) if rec is not None]
        if present:
            self.store.delete(present)
        return present

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.store.get(ids)

    def build_lexical(self, *, progress: bool = True, console: Any = None) -> int:
        """Build the lexical index of a collection made before it existed, from the stored payload text.

        Resumable (each batch commits); a no-op when the index is complete. Returns the items indexed.
        """
        from omniret.index.faiss_store import FaissStore

        store = self.store
        # only a FAISS store can be behind: an older Qdrant collection cannot gain a sparse vector (its
        # lexical searches say so), and a new one indexes text as it goes
        if not isinstance(store, FaissStore) or store.lexical_ready:
            return 0
        if not progress:
            return int(store.build_lexical())
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("building the lexical index of {task.fields[name]}"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=console or Console(stderr=True),
                       transient=True)
        with bar:
            task = bar.add_task("lexical", total=None, name=self.name)
            return int(store.build_lexical(lambda done, total: bar.update(task, completed=done, total=total)))

    # -- reading -----------------------------------------------------------------------------------
    def searcher(self, reranker: Reranker | None = None) -> Searcher:
        return Searcher(self.embedder, self.store, reranker if reranker is not None else self.reranker,
                        instruction=self.manifest.get("instruction"), dim=self.dim)

    def search(self, query: Any, k: int = 10, *, filter: Filter | None = None, rerank: bool | None = None,  # noqa: A002
               candidates: int = 100, rerank_top: int | None = None, instruction: str | None = None,
               funnel: bool | None = None, mode: str = "dense", fusion: str = "rrf",
               alpha: float | None = None) -> list[Hit]:
        """Two-stage search (see ``Searcher``); ``query`` is text, an ``Item`` or a reference dict.

        ``mode``: ``"dense"`` (default: vectors only, as before), ``"lexical"`` (BM25 over the items' text)
        or ``"hybrid"`` (both, fused by ``fusion`` = ``"rrf"`` (k=60) or ``"weighted"`` with ``alpha``, the
        dense side's weight in [0, 1]). ``funnel``: None uses the collection's funnel when it was created
        with ``funnel_dim``; True requires it; False searches at full dim only.
        """
        return self.searcher().search(query, k, filter=filter, candidates=candidates, rerank_top=rerank_top,
                                      rerank=rerank, instruction=instruction, funnel=funnel, mode=mode,
                                      fusion=fusion, alpha=alpha)

    def close(self) -> None:
        self.store.close()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, model={self.manifest.get('model')!r}, dim={self.dim})"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    f = path / MANIFEST
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CollectionError(f"collection {path.name!r}: unreadable {MANIFEST} ({e})") from e


def recorded_model(name: str, root: str | os.PathLike[str] | None = None) -> str | None:
    """The model an existing collection was built with (from its manifest; nothing is loaded), or None."""
    _check_name(name)
    manifest = _read_manifest(_root(root) / name)
    return None if manifest is None else str(manifest["model"])


def open_collection(name: str, *, root: str | os.PathLike[str] | None = None, backend: str | None = None,
                    url: str | None = None, embedder: Embedder | str | os.PathLike[str] | None = None,
                    dim: int | None = None, reranker: Reranker | str | os.PathLike[str] | None = None,
                    create: bool = True, index: str | None = None, instruction: str | None = None,
                    funnel_dim: int | None = None, exist_ok: bool = True, device: str | None = None,
                    dtype: str | None = None, lexical: dict[str, Any] | None = None, progress: bool = True,
                    model_options: dict[str, Any] | None = None, **store_options: Any) -> Collection:
    """Open (or create) a collection; see the module docstring.

    ``embedder``: an ``Embedder`` or a model name/path (loaded); omitted on an existing collection, the
    recorded model is loaded. ``backend``: ``"faiss"`` (default) or ``"qdrant"`` (``url=`` for a server,
    else embedded local mode in the collection folder). ``index`` and ``store_options`` go to the store
    (FAISS: ``M``, ``ef_search``, ``nlist``, ``m``, ``nbits``, ``nprobe``, ...; Qdrant: ``api_key``,
    ``shard_number``, ``replication_factor``, ...). ``reranker``: a ``Reranker`` or a name/path.
    ``funnel_dim``: keep a short Matryoshka prefix of that width beside the full vectors for funnel search
    (one of the model's ``dims``, below ``dim``; fixed at creation, recorded in the manifest);
    ``funnel_candidates`` (a store option, default 10) sets the pool as a multiple of ``k``.
    ``lexical``: analyser settings of the lexical index (``omniret.index.lexical.AnalyzerConfig`` fields:
    ``language``, ``stopwords``, ``split_identifiers``, ...; fixed at creation, recorded in the manifest).
    A FAISS collection made before the lexical index gets it built now (``progress``: draw a bar).
    ``device`` / ``dtype``: for the models this call loads by name (default: the loaders' own);
    ``model_options`` too (e.g. ``{"backend": "onnx", "quantize": "int8"}``, see ``load_embedder``); the
    manifest records the backend that served at creation (``model_backend``).
    Errors are typed: ``CollectionNotFound`` (``create=False`` and none there), ``CollectionExists``
    (``exist_ok=False`` and one is there), ``CollectionMismatch`` (another model, dim, backend or index).
    """
    from omniret.index.lexical import AnalyzerConfig

    _check_name(name)
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose 'faiss' or 'qdrant'")
    if url is not None and backend == "faiss":
        raise ConfigError("url= is for a Qdrant server; the FAISS backend is embedded (drop url= or use "
                          "backend='qdrant')")
    if index is not None and (backend == "qdrant" or url is not None) and index != "flat":
        raise ConfigError(f"index={index!r} is a FAISS index type; Qdrant manages its own HNSW index")
    path = _root(root) / name
    manifest = _read_manifest(path)
    if manifest is None:
        if not create:
            raise CollectionNotFound(f"no collection {name!r}")
        backend = backend or ("qdrant" if url is not None else "faiss")
        if embedder is None:
            raise ConfigError(f"collection {name!r} does not exist yet: pass embedder= (an Embedder or a model "
                              "name) to create it")
        wanted = embedder
    else:
        if not exist_ok:
            raise CollectionExists(f"collection {name!r} exists already")
        rec_backend = manifest.get("backend", "faiss")
        if backend is not None and backend != rec_backend:
            raise CollectionMismatch(f"collection {name!r} uses backend {rec_backend!r}, not {backend!r}")
        backend = rec_backend
        if index is not None and index != manifest.get("index", "flat"):
            raise CollectionMismatch(f"collection {name!r} uses index {manifest.get('index')!r}, not {index!r}")
        if url is None:
            url = manifest.get("url")
        if embedder is not None and _model_name(embedder) != manifest["model"]:
            raise CollectionMismatch(f"collection {name!r} was built with model {manifest['model']!r}; opening it "
                                  f"with {_model_name(embedder)!r} would mix vector spaces (use that model, "
                                  "or a new collection)")
        if dim is not None and dim != manifest["dim"]:
            raise CollectionMismatch(f"collection {name!r} stores dim {manifest['dim']}, not {dim}")
        if lexical is not None and "lexical" in manifest and \
                AnalyzerConfig.from_dict(lexical) != AnalyzerConfig.from_dict(manifest["lexical"]):
            raise CollectionMismatch(f"collection {name!r} was created with lexical analyser {manifest['lexical']}, "
                                  f"not {lexical} (the analyser is fixed at creation; use a new collection)")
        if funnel_dim is not None and funnel_dim != manifest.get("funnel_dim"):
            raise CollectionMismatch(f"collection {name!r} was created with funnel_dim "
                                  f"{manifest.get('funnel_dim')}, not {funnel_dim} (the short index is fixed "
                                  "at creation; use a new collection)")
        wanted = embedder if embedder is not None else str(manifest["model"])
    if isinstance(wanted, (str, os.PathLike)):
        from omniret.embed import load_embedder

        model = load_embedder(os.fspath(wanted), device=device, dtype=dtype, **(model_options or {}))
    else:
        model = wanted
    embedder = model
    if manifest is None:
        dim = int(dim or embedder.dim)
        dims = tuple(embedder.dims or (embedder.dim,))
        if dim not in dims:
            raise DimensionError(f"dim={dim} is not one of model {embedder.name}'s dims {list(dims)}")
        if funnel_dim is not None and (funnel_dim not in dims or funnel_dim >= dim):
            raise DimensionError(f"funnel_dim={funnel_dim} must be one of model {embedder.name}'s Matryoshka "
                                 f"dims below dim={dim}: {[d for d in dims if d < dim]}")
        manifest = {"name": name, "model": str(embedder.name), "dim": dim, "instruction": instruction,
                    "funnel_dim": funnel_dim,
                    "lexical": AnalyzerConfig.from_dict(lexical).to_dict(),
                    "backend": backend, "index": index or ("flat" if backend == "faiss" else "qdrant"),
                    "modalities": sorted(embedder.modalities),
                    "model_backend": str(getattr(embedder, "backend", "torch")),
                    "url": url, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "store_options": {k: v for k, v in store_options.items() if k != "api_key"}}
        new = True
    else:
        new = False
    if isinstance(reranker, (str, os.PathLike)):
        from omniret.rerank import load_reranker

        reranker = load_reranker(reranker, device=device, dtype=dtype, **(model_options or {}))
    if "lexical" not in manifest:
        # made before the lexical index: record the analyser it gets now (the store builds with it)
        manifest = {**manifest, "lexical": AnalyzerConfig.from_dict(lexical).to_dict()}
        new_lexical = True
    else:
        new_lexical = False
    store = open_store(path, name, manifest, url, store_options, create=new)
    if new or new_lexical:
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, path / MANIFEST)
    coll = Collection(name, path, manifest, store, model, reranker)
    try:
        coll.build_lexical(progress=progress)
    except BaseException:
        coll.close()
        raise
    return coll


def open_store(path: Path, name: str, manifest: dict[str, Any], url: str | None, options: dict[str, Any],
               *, create: bool) -> VectorStore:
    """The store a manifest describes (FAISS in the folder, or Qdrant local/server); no model is loaded."""
    opts = {**manifest.get("store_options", {}), **options}
    if manifest["backend"] == "qdrant":
        from omniret.index.qdrant_store import QdrantStore

        if url is not None:
            return QdrantStore(name, dim=manifest["dim"], url=url, options=opts, create=create,  # type: ignore[arg-type]
                               funnel_dim=manifest.get("funnel_dim"), lexical=manifest.get("lexical"))
        return QdrantStore(name, dim=manifest["dim"], path=path / "qdrant", options=opts, create=create,  # type: ignore[arg-type]
                           funnel_dim=manifest.get("funnel_dim"), lexical=manifest.get("lexical"))
    from omniret.index.faiss_store import FaissStore

    return FaissStore(path / "faiss", dim=manifest["dim"], index=manifest.get("index", "flat"),
                      options=opts, create=True, funnel_dim=manifest.get("funnel_dim"),  # type: ignore[arg-type]
                      lexical=manifest.get("lexical"))


def _existing(name: str, root: str | os.PathLike[str] | None, *, say_where: bool) -> tuple[Path, dict[str, Any]]:
    """An existing collection's folder and manifest, else ``CollectionNotFound`` (naming the folder it looked
    in when ``say_where``: the admin commands do, the service must not show its paths)."""
    _check_name(name)
    path = _root(root) / name
    manifest = _read_manifest(path)
    if manifest is None:
        raise CollectionNotFound(f"no collection {name!r}" + (f" in {path.parent}" if say_where else ""))
    return path, manifest


def collection_store(name: str, root: str | os.PathLike[str] | None = None) -> Any:
    """The store of an existing collection, opened without loading its model (admin commands)."""
    path, manifest = _existing(name, root, say_where=True)
    return open_store(path, name, manifest, manifest.get("url"), {}, create=False)


def list_collections(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The manifests of every collection under ``root`` (sorted by name)."""
    base = _root(root)
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        m = _read_manifest(d) if d.is_dir() else None
        if m is not None:
            out.append({**m, "name": d.name, "path": str(d)})
    return out


def delete_collection(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """Delete a collection: its folder, and its Qdrant collection when it lives on a server."""
    path, manifest = _existing(name, root, say_where=False)
    if manifest.get("backend") == "qdrant" and manifest.get("url"):
        from omniret.index.qdrant_store import QdrantStore

        store = QdrantStore(name, url=manifest["url"], options=manifest.get("store_options", {}), create=False)
        try:
            store.drop()
        finally:
            store.close()
    shutil.rmtree(path)
