"""Collections: a store, the model that fills it, and a manifest that keeps the two together.

A collection lives in ``<root>/<name>/`` (root defaults to ``$OMNIRET_HOME/collections``):
``collection.json`` (``omniret.index.manifest.Manifest``: model name, dim, instruction, backend, index
type, created time), the FAISS folder or Qdrant local-mode folder, and the ingestion ledger. Opening it
with another model or dim is a ``CollectionError``; opening it without a model loads the recorded one.
Finding, listing and deleting collections, and opening a store without its model: ``omniret.index.catalog``.

Every collection also keeps a lexical (BM25) index of its items' text beside the vectors, with the
analyser recorded in the manifest (``lexical``), so ``search(mode="lexical" | "hybrid")`` works on it.
A FAISS collection made before the lexical index gets it built from the stored payload text the first
time it is opened (resumable, with a progress bar).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from omniret.embed.protocol import Embedder
from omniret.errors import (
    CollectionExists,
    CollectionMismatch,
    CollectionNotFound,
    ConfigError,
    DimensionError,
    ItemError,
    ItemFailure,
)
from omniret.index.catalog import (
    collection_store,
    delete_collection,
    existing_collection,
    list_collections,
    open_store,
    recorded_model,
)
from omniret.index.commit import IngestReport
from omniret.index.filters import Filter
from omniret.index.ingest import ingest
from omniret.index.ledger import Ledger
from omniret.index.lexical import AnalyzerConfig
from omniret.index.manifest import BACKENDS, MANIFEST, Manifest, read_manifest, write_manifest
from omniret.index.names import COLLECTION_NAME, check_collection_name, collections_root
from omniret.index.protocol import LexicalBackfill, Payload, StoredItem, TunableStore, VectorStore
from omniret.index.readers import IngestOptions
from omniret.index.searcher import Searcher
from omniret.index.tuning import TuneResult, check_recall
from omniret.rerank.protocol import Reranker
from omniret.types import JSON, Hit, Item, ItemLike

__all__ = ["COLLECTION_NAME", "MANIFEST", "RESERVED_PAYLOAD_KEYS", "AddReport", "Collection", "collection_store",
           "delete_collection", "existing_collection", "list_collections", "open_collection", "open_store",
           "recorded_model"]

if TYPE_CHECKING:
    from rich.console import Console

#: payload keys the collection writes itself (an item's content and where it came from); an item's
#: ``metadata`` may not use them, so user metadata can never pose as the item or point at another file
RESERVED_PAYLOAD_KEYS = frozenset({"text", "image", "video", "video_start", "video_end", "kind", "path", "source",
                                   "sha256"})


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

    def to_dict(self) -> dict[str, JSON]:
        return {"added": self.added, "ids": [*self.ids], "failures": [f.to_dict() for f in self.failures]}


class Collection:
    """A named, persistent set of items with the model that embeds them. Use ``open_collection``."""

    def __init__(self, name: str, path: Path, manifest: Manifest, store: VectorStore, embedder: Embedder,
                 reranker: Reranker | None = None) -> None:
        self.name = name
        self.path = path
        #: the typed manifest (``collection.json``)
        self.spec = manifest
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.dim = manifest.dim
        self._ledger: Ledger | None = None

    @property
    def manifest(self) -> Mapping[str, JSON]:
        """``collection.json`` as written (a read-only view; ``spec`` is the typed record)."""
        return MappingProxyType(self.spec.to_json())

    # -- info --------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, JSON]:
        """The manifest plus live facts (count, store details, indexed sources)."""
        return {**self.spec.to_json(), "name": self.name, "path": str(self.path), "count": self.count(),
                "sources": self.ledger.count(), "store": self.store.info()}

    @property
    def ledger(self) -> Ledger:
        """The ingestion ledger, opened on first use; rows an old Ray run left without their folder get it
        back from their items' payloads here (see ``Ledger.repair_roots``), so ``prune`` finds them."""
        if self._ledger is None:
            self._ledger = Ledger(self.path / "ledger.sqlite")
            self._ledger.repair_roots(self.store)
        return self._ledger

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.embedder.modalities)

    def _embed_dim(self) -> int | None:
        return self.dim if self.dim != self.embedder.dim else None

    # -- writing -----------------------------------------------------------------------------------
    def add(self, items: Sequence[ItemLike], *, on_error: str = "raise", batch_size: int = 64) -> AddReport:
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
        payloads: list[Payload] = []
        for it in items:
            # the item's own fields are written after its metadata: metadata never overrides them
            p: Payload = dict(it.metadata)
            for key in ("text", "image", "video", "video_start", "video_end"):
                v = getattr(it, key)
                if isinstance(v, (str, int, float)) and not (isinstance(v, str) and v.startswith("data:")):
                    p[key] = v
            p["kind"] = "item"
            payloads.append(p)
        self.store.upsert([str(it.id) for it in items], vectors, payloads)

    def add_vectors(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload] | None = None
                    ) -> None:
        """Store precomputed vectors (they must come from this collection's model and dim)."""
        self.store.upsert(ids, vectors, payloads)

    def add_files(self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *, recursive: bool = True,
                  progress: bool = True, options: IngestOptions | None = None, console: Console | None = None,
                  devices: Sequence[str] | str | None = None, ray: bool | str = False, ray_actors: int | None = None,
                  **option_kw: Any) -> IngestReport:
        """Ingest folders/files (see ``omniret.index.ingest``); ``option_kw`` sets ``IngestOptions`` fields.
        The report's ``executor`` says which of the three executors below ran.

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
        if ray is not False:
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
            pool = EmbedderPool(getattr(self.embedder, "path", None) or self.spec.model, devs)
            embedder = pool
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
        if not isinstance(self.store, TunableStore):
            raise ConfigError(f"collection {self.name!r} is a {self.spec.backend} collection: recall "
                              "tuning measures FAISS indexes (Qdrant: pass hnsw_ef / ef_construct store options)")
        res = self.store.tune(recall, k=k, sample=sample)
        self.spec = self.spec.with_changes(store_options={**self.spec.store_options, **res.settings},
                                           recall_tuning={**res.to_dict(), "count": self.count()})
        write_manifest(self.path, self.spec)
        return res

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Remove items by id; returns the ids that were there (and are now gone), in input order."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        present = [i for i, rec in zip(wanted, self.store.get(wanted), strict=True) if rec is not None]
        if present:
            self.store.delete(present)
        return present

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        return self.store.get(ids)

    def build_lexical(self, *, progress: bool = True, console: Console | None = None) -> int:
        """Build the lexical index of a collection made before it existed, from the stored payload text.

        Resumable (each batch commits); a no-op when the index is complete. Returns the items indexed.
        """
        store = self.store
        # only a store that can backfill can be behind: an older Qdrant collection cannot gain a sparse
        # vector (its lexical searches say so), and a new one indexes text as it goes
        if not isinstance(store, LexicalBackfill) or store.lexical_ready:
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
                        instruction=self.spec.instruction, dim=self.dim)

    def search(self, query: ItemLike, k: int = 10, *, filter: Filter | None = None, rerank: bool | None = None,  # noqa: A002
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
        return f"Collection({self.name!r}, model={self.spec.model!r}, dim={self.dim})"


def open_collection(name: str, *, root: str | os.PathLike[str] | None = None, backend: str | None = None,
                    url: str | None = None, embedder: Embedder | str | os.PathLike[str] | None = None,
                    dim: int | None = None, reranker: Reranker | str | os.PathLike[str] | None = None,
                    create: bool = True, index: str | None = None, instruction: str | None = None,
                    funnel_dim: int | None = None, exist_ok: bool = True, device: str | None = None,
                    dtype: str | None = None, lexical: Mapping[str, object] | None = None,
                    progress: bool = True, model_options: dict[str, Any] | None = None, **store_options: JSON
                    ) -> Collection:
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
    check_collection_name(name)
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose 'faiss' or 'qdrant'")
    if url is not None and backend == "faiss":
        raise ConfigError("url= is for a Qdrant server; the FAISS backend is embedded (drop url= or use "
                          "backend='qdrant')")
    if index is not None and (backend == "qdrant" or url is not None) and index != "flat":
        raise ConfigError(f"index={index!r} is a FAISS index type; Qdrant manages its own HNSW index")
    path = collections_root(root) / name
    recorded = read_manifest(path)
    wanted: Embedder | str | os.PathLike[str]
    if recorded is None:
        if not create:
            raise CollectionNotFound(f"no collection {name!r}")
        if embedder is None:
            raise ConfigError(f"collection {name!r} does not exist yet: pass embedder= (an Embedder or a model "
                              "name) to create it")
        wanted = embedder
    else:
        if not exist_ok:
            raise CollectionExists(f"collection {name!r} exists already")
        _check_same(name, recorded, backend=backend, index=index, embedder=embedder, dim=dim, lexical=lexical,
                    funnel_dim=funnel_dim)
        wanted = embedder if embedder is not None else recorded.model
    if isinstance(wanted, (str, os.PathLike)):
        from omniret.embed import load_embedder

        model = load_embedder(os.fspath(wanted), device=device, dtype=dtype, **(model_options or {}))
    else:
        model = wanted
    if recorded is None:
        backend = backend or ("qdrant" if url is not None else "faiss")
        manifest = _new_manifest(name, model, backend=backend, dim=dim, instruction=instruction,
                                 funnel_dim=funnel_dim, lexical=lexical, index=index, url=url,
                                 store_options=store_options)
    elif recorded.lexical is None:
        # made before the lexical index: record the analyser it gets now (the store builds with it)
        manifest = recorded.with_changes(lexical=AnalyzerConfig.from_dict(lexical))
    else:
        manifest = recorded
    if isinstance(reranker, (str, os.PathLike)):
        from omniret.rerank import load_reranker

        reranker = load_reranker(reranker, device=device, dtype=dtype, **(model_options or {}))
    store = open_store(path, manifest, url=url, options=store_options, create=recorded is None)
    if manifest is not recorded:
        write_manifest(path, manifest)
    coll = Collection(name, path, manifest, store, model, reranker)
    try:
        coll.build_lexical(progress=progress)
    except BaseException:
        coll.close()
        raise
    return coll


def _check_same(name: str, recorded: Manifest, *, backend: str | None, index: str | None,
                embedder: Embedder | str | os.PathLike[str] | None, dim: int | None,
                lexical: Mapping[str, object] | None, funnel_dim: int | None) -> None:
    """``CollectionMismatch`` when an open asks for another backend, index, model, dim, analyser or funnel."""
    if backend is not None and backend != recorded.backend:
        raise CollectionMismatch(f"collection {name!r} uses backend {recorded.backend!r}, not {backend!r}")
    if index is not None and index != recorded.index:
        raise CollectionMismatch(f"collection {name!r} uses index {recorded.index!r}, not {index!r}")
    if embedder is not None and _model_name(embedder) != recorded.model:
        raise CollectionMismatch(f"collection {name!r} was built with model {recorded.model!r}; opening it "
                                 f"with {_model_name(embedder)!r} would mix vector spaces (use that model, "
                                 "or a new collection)")
    if dim is not None and dim != recorded.dim:
        raise CollectionMismatch(f"collection {name!r} stores dim {recorded.dim}, not {dim}")
    if lexical is not None and recorded.lexical is not None and AnalyzerConfig.from_dict(lexical) != recorded.lexical:
        raise CollectionMismatch(f"collection {name!r} was created with lexical analyser "
                                 f"{recorded.lexical.to_dict()}, not {lexical} (the analyser is fixed at "
                                 "creation; use a new collection)")
    if funnel_dim is not None and funnel_dim != recorded.funnel_dim:
        raise CollectionMismatch(f"collection {name!r} was created with funnel_dim {recorded.funnel_dim}, not "
                                 f"{funnel_dim} (the short index is fixed at creation; use a new collection)")


def _new_manifest(name: str, model: Embedder, *, backend: str, dim: int | None, instruction: str | None,
                  funnel_dim: int | None, lexical: Mapping[str, object] | None, index: str | None, url: str | None,
                  store_options: Mapping[str, JSON]) -> Manifest:
    """The manifest of a new collection, after checking ``dim`` and ``funnel_dim`` against the model's dims."""
    dim = int(dim or model.dim)
    dims = tuple(model.dims or (model.dim,))
    if dim not in dims:
        raise DimensionError(f"dim={dim} is not one of model {model.name}'s dims {list(dims)}")
    if funnel_dim is not None and (funnel_dim not in dims or funnel_dim >= dim):
        raise DimensionError(f"funnel_dim={funnel_dim} must be one of model {model.name}'s Matryoshka "
                             f"dims below dim={dim}: {[d for d in dims if d < dim]}")
    return Manifest(name=name, model=str(model.name), dim=dim, instruction=instruction, funnel_dim=funnel_dim,
                    lexical=AnalyzerConfig.from_dict(lexical), backend="qdrant" if backend == "qdrant" else "faiss",
                    index=index or ("flat" if backend == "faiss" else "qdrant"), modalities=tuple(sorted(model.modalities)),
                    url=url, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    store_options={k: v for k, v in store_options.items() if k != "api_key"},
                    model_backend=str(getattr(model, "backend", "torch")))
