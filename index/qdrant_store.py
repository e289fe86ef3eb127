"""``QdrantStore``: the same ``VectorStore`` on Qdrant, for collections that outgrow one machine.

``path=`` runs qdrant-client's embedded local mode (tests, laptops; ``":memory:"`` keeps nothing on
disk — local mode on disk commits every point separately, so it writes slowly); ``url=`` talks to a server or
cluster, where ``shard_number`` / ``replication_factor`` / ``api_key`` pass through. One Qdrant
collection per omniret collection, cosine distance. Qdrant point ids are UUIDs, so string ids are
mapped with ``uuid5`` and the original id is kept in the payload under ``_omniret_id``. Every client
error is re-raised as ``StoreError`` (wrong widths as ``DimensionError``), as the FAISS store does.

Funnel search (``funnel_dim``): the collection then has two named vectors, ``full`` and ``short`` (the
re-normalised ``funnel_dim`` prefix). A funnel query prefetches ``k * funnel_candidates`` points on
``short`` and re-scores them on ``full`` in one ``query_points`` call (Qdrant propagates the filter into
the prefetch), so hits carry full-dim scores, as the FAISS store's funnel does.

Lexical index: each point whose payload has text also carries a sparse vector ``bm25`` (BM25 term-frequency
weights of the analysed terms, ``omniret.index.lexical``; the collection's sparse config has
``Modifier.IDF``, so Qdrant supplies the IDF), written by the same upsert as the dense vector. The analyser
is recorded in the collection's metadata. Hybrid search (``hybrid_search``) is one ``query_batch_points``
call: per query the dense and the sparse list (for each hit's own scores) and, for ``fusion="rrf"`` on a
server, Qdrant's fusion of the two as prefetches (``RrfQuery`` with ``k + 1``: Qdrant counts ranks from 0,
omniret from 1, so the scores equal ``omniret.index.fusion.rrf``). In local mode there is no server: the
same RRF is computed from the two lists already fetched, which halves the (brute-force) sparse work
(``server_fusion=True`` forces the Query API path there too). ``fusion="weighted"`` is always fused
client-side from the two lists (the Query API has no score-normalising fusion). A collection made before
the lexical index cannot gain a sparse vector (Qdrant does not add vector names to a collection): lexical
and hybrid searches then say to re-index into a new collection.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from omniret.embed.matryoshka import truncate
from omniret.errors import ConfigError, DimensionError, OmniretError, StoreError
from omniret.index.filters import Filter, parse_filter, to_qdrant
from omniret.index.fusion import DEFAULT_ALPHA, RRF_K, fuse
from omniret.index.lexical import (
    Analyzer,
    AnalyzerConfig,
    bm25_doc_vector,
    bm25_query_vector,
    payload_text,
)
from omniret.index.protocol import (
    RESERVED_PREFIX,
    Payload,
    PointBatch,
    StoredItem,
    check_funnel_dim,
    check_search,
    check_upsert,
    funnel_pool,
    options_json,
)
from omniret.types import JSON, Hit

if TYPE_CHECKING:
    from qdrant_client import models as qm

if TYPE_CHECKING:
    from qdrant_client.http.models import Record

ID_KEY = f"{RESERVED_PREFIX}_id"
_NAMESPACE = uuid.UUID("5b0f8d2e-6a53-4c1f-9d7e-6f6d6e697265")
#: named vectors of a collection with a funnel
FULL, SHORT = "full", "short"
#: the sparse (BM25) vector of a point, and the collection-metadata key of its analyser
SPARSE, META_KEY = "bm25", "omniret_lexical"


class QdrantOptions(TypedDict, total=False):
    """Settings passed through to Qdrant."""

    api_key: str
    shard_number: int
    replication_factor: int
    write_consistency_factor: int
    on_disk: bool
    timeout: int
    prefer_grpc: bool
    batch_size: int
    funnel_candidates: int  # funnel search: prefetch k · funnel_candidates points on the short vector
    server_fusion: bool     # hybrid RRF through Qdrant's Query API (default: on a server yes, local mode no)


def check_options(options: Mapping[str, object] | None) -> QdrantOptions:
    """The Qdrant options a caller or a manifest gives; ``ConfigError`` naming unknown ones."""
    given = dict(options or {})
    unknown = set(given) - set(QdrantOptions.__annotations__)
    if unknown:
        raise ConfigError(f"unknown Qdrant option(s) {sorted(unknown)}; known: "
                          f"{', '.join(QdrantOptions.__annotations__)}")
    return cast(QdrantOptions, given)


def _payload(point: qm.Record | qm.ScoredPoint) -> Payload:
    """A Qdrant point's payload as a new dict (``{}`` when it has none)."""
    return dict(point.payload or {})


def point_id(item_id: str) -> str:
    """The Qdrant point id (a UUID string) of an omniret id."""
    return str(uuid.uuid5(_NAMESPACE, item_id))


class QdrantStore:
    """A Qdrant collection behind the ``VectorStore`` protocol (see module docstring)."""

    def __init__(self, name: str, *, dim: int | None = None, path: str | Path | None = None, url: str | None = None,
                 options: QdrantOptions | None = None, create: bool = True, funnel_dim: int | None = None,
                 lexical: Mapping[str, object] | AnalyzerConfig | None = None) -> None:
        if (path is None) == (url is None):
            raise ConfigError("QdrantStore takes exactly one of path= (embedded local mode) or url= (server)")
        checked = check_options(options)
        from qdrant_client import QdrantClient, models

        self._models = models
        self.name = name
        self.options: QdrantOptions = checked
        self.location = str(path) if path is not None else str(url)
        self._server_fusion = bool(self.options.get("server_fusion", url is not None))
        self._batch = int(self.options.get("batch_size", 256))
        self._lock = threading.RLock()
        try:
            if str(path) == ":memory:":
                self._client = QdrantClient(location=":memory:", force_disable_check_same_thread=True)
            elif path is not None:
                Path(path).mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
            else:
                self._client = QdrantClient(url=url, api_key=self.options.get("api_key"),
                                            timeout=self.options.get("timeout"),
                                            prefer_grpc=self.options.get("prefer_grpc", False))
            exists = self._client.collection_exists(name)
        except OmniretError:
            raise
        except Exception as e:  # noqa: BLE001 - the client's errors become ours
            raise StoreError(f"cannot open Qdrant at {self.location}: {type(e).__name__}: {e}") from e
        if exists:
            try:
                config = self._client.get_collection(name).config
                params = config.params.vectors
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"Qdrant collection {name!r}: cannot read its config: {e}") from e
            self.lexical_ready = SPARSE in (config.params.sparse_vectors or {})
            stored = (config.metadata or {}).get(META_KEY)
            where = f"Qdrant collection {name!r}: lexical"
            lex_config = AnalyzerConfig.from_dict(stored if stored is not None else lexical, where=where)
            if stored is not None and lexical is not None and AnalyzerConfig.from_dict(lexical, where=where) != lex_config:
                self._client.close()
                raise ConfigError(f"{where}: the collection was created with analyser {lex_config.to_dict()}; "
                                  "the analyser is fixed at creation (use a new collection to change it)")
            if isinstance(params, dict):
                size = int(params[FULL].size)
                stored_funnel = int(params[SHORT].size) if SHORT in params else None
            else:
                size, stored_funnel = int(params.size), None  # type: ignore[union-attr]
            if dim is not None and dim != size:
                self._client.close()
                raise DimensionError(f"Qdrant collection {name!r}: expected dimension {size}, got {dim}")
            if funnel_dim is not None and funnel_dim != stored_funnel:
                self._client.close()
                raise DimensionError(f"Qdrant collection {name!r} was created with funnel_dim={stored_funnel}, "
                                     f"not {funnel_dim}")
            self.dim, self.funnel_dim, self._named = size, stored_funnel, isinstance(params, dict)
        else:
            if not create:
                self._client.close()
                raise StoreError(f"no Qdrant collection {name!r} at {self.location}")
            if dim is None or dim <= 0:
                self._client.close()
                raise ConfigError(f"a new Qdrant collection needs dim > 0, got {dim}")
            self.dim = int(dim)
            try:
                self.funnel_dim = check_funnel_dim(funnel_dim, self.dim, where=f"Qdrant collection {name!r}")
            except DimensionError:
                self._client.close()
                raise
            self._named = self.funnel_dim is not None
            try:
                lex_config = AnalyzerConfig.from_dict(lexical, where=f"Qdrant collection {name!r}: lexical")
            except ConfigError:
                self._client.close()
                raise
            self.lexical_ready = True
            cfg = {k: self.options[k] for k in ("shard_number", "replication_factor",  # type: ignore[literal-required]
                                                "write_consistency_factor") if k in self.options}
            full = models.VectorParams(size=self.dim, distance=models.Distance.COSINE,
                                       on_disk=self.options.get("on_disk"))
            vectors: qm.VectorParams | dict[str, qm.VectorParams] = full
            if self.funnel_dim is not None:
                vectors = {FULL: full, SHORT: models.VectorParams(size=self.funnel_dim,
                                                                  distance=models.Distance.COSINE)}
            self.call("create collection", "create_collection", collection_name=name, vectors_config=vectors,
                       sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                       metadata={META_KEY: lex_config.to_dict()}, **cfg)
        self.analyzer = Analyzer(lex_config)
        #: the dense vector's name ("" is Qdrant's unnamed default vector)
        self._dense = FULL if self._named else ""

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """qdrant-client's ``method`` under the store's lock, its errors raised as ``StoreError`` naming ``what``."""
        with self._lock:
            if self._client is None:
                raise StoreError(f"Qdrant store {self.name!r} is closed")
            try:
                return getattr(self._client, method)(*args, **kwargs)
            except OmniretError:
                raise
            except Exception as e:  # noqa: BLE001 - the client's errors become ours
                raise StoreError(f"Qdrant {what} on {self.name!r} failed: {type(e).__name__}: {e}") from e

    # -- VectorStore -----------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload] | None = None
               ) -> None:
        """Insert or replace by id, in batches; each batch is acknowledged (``wait=True``) before returning."""
        ids, m, pls = check_upsert(ids, vectors, payloads, self.dim)
        models = self._models
        short = truncate(m, self.funnel_dim) if self.funnel_dim is not None else None
        for s in range(0, len(ids), self._batch):
            vecs: list[dict[str, qm.Vector]] = [{self._dense: v} for v in m[s:s + self._batch].tolist()]
            if short is not None:
                for v, sv in zip(vecs, short[s:s + self._batch].tolist(), strict=True):
                    v[SHORT] = sv
            if self.lexical_ready:
                for v, p in zip(vecs, pls[s:s + self._batch], strict=True):
                    idx, val = bm25_doc_vector(self.analyzer.tokens(payload_text(p)), self.analyzer.config)
                    if idx:
                        v[SPARSE] = models.SparseVector(indices=idx, values=val)
            points = [models.PointStruct(id=point_id(i), vector=v, payload={**p, ID_KEY: i})
                      for i, v, p in zip(ids[s:s + self._batch], vecs, pls[s:s + self._batch], strict=True)]
            self.call("upsert", "upsert", collection_name=self.name, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            return
        selector = self._models.PointIdsList(points=[point_id(i) for i in ids])
        self.call("delete", "delete", collection_name=self.name, points_selector=selector, wait=True)

    def search(self, vectors: np.ndarray, k: int, filter: Filter | None = None,  # noqa: A002
               *, funnel: bool | None = None) -> list[list[Hit]]:
        """Best ``k`` hits per row; ``funnel`` as in ``FaissStore.search`` (prefetch on ``short``, score on ``full``)."""
        q = check_search(vectors, k, self.dim, funnel=funnel, funnel_dim=self.funnel_dim,
                         where=f"Qdrant collection {self.name!r}", create_hint="vector")
        qf = to_qdrant(parse_filter(filter))
        models = self._models
        using = FULL if self._named else None
        if self.funnel_dim is not None and funnel is not False:
            pool = funnel_pool(k, dict(self.options), f"Qdrant collection {self.name!r}")
            short = truncate(q, self.funnel_dim)
            requests = [models.QueryRequest(prefetch=models.Prefetch(query=sq.tolist(), using=SHORT, limit=pool),
                                            query=row.tolist(), using=FULL, limit=k, filter=qf, with_payload=True)
                        for row, sq in zip(q, short, strict=True)]
        else:
            requests = [models.QueryRequest(query=row.tolist(), using=using, limit=k, filter=qf, with_payload=True)
                        for row in q]
        results = self.call("search", "query_batch_points", collection_name=self.name,
                             requests=requests)
        return [[self._hit(p) for p in r.points] for r in results]

    # -- lexical and hybrid ----------------------------------------------------------------------
    def _check_lexical(self) -> None:
        if not self.lexical_ready:
            raise ConfigError(f"lexical search: Qdrant collection {self.name!r} was made before omniret's lexical "
                              f"index and has no "
                             f"sparse vector {SPARSE!r} (Qdrant cannot add one to an existing collection); "
                             "re-index its sources into a new collection for lexical or hybrid search")

    def _sparse_query(self, text: str) -> qm.SparseVector | None:
        idx, val = bm25_query_vector(self.analyzer.query_terms(text))
        return self._models.SparseVector(indices=idx, values=val) if idx else None

    def _dense_request(self, row: np.ndarray, k: int, qf: qm.Filter | None, funnel: bool | None
                       ) -> qm.QueryRequest:
        models = self._models
        if self.funnel_dim is not None and funnel is not False:
            pool = funnel_pool(k, dict(self.options), f"Qdrant collection {self.name!r}")
            sq = truncate(row[None, :], self.funnel_dim)[0]
            return models.QueryRequest(prefetch=models.Prefetch(query=sq.tolist(), using=SHORT, limit=pool, filter=qf),
                                       query=row.tolist(), using=FULL, limit=k, filter=qf, with_payload=True)
        return models.QueryRequest(query=row.tolist(), using=FULL if self._named else None, limit=k, filter=qf,
                                   with_payload=True)

    def lexical_search(self, texts: Sequence[str], k: int, filter: Filter | None = None,  # noqa: A002
                       ) -> list[list[Hit]]:
        """Best ``k`` points per query text by BM25 (sparse dot product with Qdrant's IDF)."""
        if k <= 0:
            raise ConfigError(f"k must be > 0, got {k}")
        self._check_lexical()
        qf = to_qdrant(parse_filter(filter))
        sparse = [self._sparse_query(t) for t in texts]
        requests = [self._models.QueryRequest(query=sq, using=SPARSE, limit=k, filter=qf, with_payload=True)
                    for sq in sparse if sq is not None]
        results = iter(self.call("lexical search", "query_batch_points", collection_name=self.name,
                                  requests=requests) if requests else [])
        return [[self._hit(p) for p in next(results).points] if sq is not None else [] for sq in sparse]

    def hybrid_search(self, vectors: np.ndarray, texts: Sequence[str], k: int, filter: Filter | None = None,  # noqa: A002
                      *, depth: int | None = None, fusion: str = "rrf", alpha: float = DEFAULT_ALPHA,
                      funnel: bool | None = None) -> list[list[Hit]]:
        """Dense and lexical lists (``depth`` each, default ``k``) fused into ``k`` hits, in one round trip.

        ``rrf`` is fused by Qdrant on a server (prefetch both, ``RrfQuery``); each hit also gets its side
        scores from the two lists fetched in the same call. ``weighted`` (and RRF in local mode) is fused
        client-side from those lists (see module docstring).
        """
        q = check_search(vectors, k, self.dim, funnel=funnel, funnel_dim=self.funnel_dim,
                         where=f"Qdrant collection {self.name!r}", create_hint="vector")
        if len(texts) != len(q):
            raise ConfigError(f"hybrid search: {len(q)} query vectors but {len(texts)} query texts")
        self._check_lexical()
        models = self._models
        depth = max(depth or k, k)
        qf = to_qdrant(parse_filter(filter))
        requests: list[qm.QueryRequest] = []
        plan: list[tuple[int, int, int]] = []  # per query: positions of dense, sparse, fused (-1: none)
        for row, text in zip(q, texts, strict=True):
            dense = self._dense_request(row, depth, qf, funnel)
            sq = self._sparse_query(text)
            d_at, s_at, f_at = len(requests), -1, -1
            requests.append(dense)
            if sq is not None:
                s_at = len(requests)
                requests.append(models.QueryRequest(query=sq, using=SPARSE, limit=depth, filter=qf, with_payload=True))
                if fusion == "rrf" and self._server_fusion:
                    f_at = len(requests)
                    prefetch = [models.Prefetch(query=dense.query, using=dense.using, prefetch=dense.prefetch,
                                                limit=depth, filter=qf),
                                models.Prefetch(query=sq, using=SPARSE, limit=depth, filter=qf)]
                    # Qdrant ranks from 0 (1 / (k + rank0)); k + 1 gives omniret's 1 / (k + rank1)
                    requests.append(models.QueryRequest(prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=RRF_K + 1)),
                                                        limit=k, filter=qf, with_payload=True))
            plan.append((d_at, s_at, f_at))
        results = self.call("hybrid search", "query_batch_points", collection_name=self.name, requests=requests)
        out: list[list[Hit]] = []
        for d_at, s_at, f_at in plan:
            dense_hits = [self._hit(p) for p in results[d_at].points]
            lex_hits = [self._hit(p) for p in results[s_at].points] if s_at >= 0 else []
            if f_at < 0:
                out.append(fuse(dense_hits, lex_hits, k, fusion=fusion, alpha=alpha))
                continue
            dense_s = {h.id: h.score for h in dense_hits}
            lex_s = {h.id: h.score for h in lex_hits}
            fused: list[Hit] = []
            for p in results[f_at].points:
                h = self._hit(p)
                h.fused_score = h.score
                h.dense_score, h.lexical_score = dense_s.get(h.id), lex_s.get(h.id)
                fused.append(h)
            out.append(fused)
        return out

    def lexical_count(self) -> int:
        """How many points carry a sparse (lexical) vector."""
        if not self.lexical_ready:
            return 0
        flt = self._models.Filter(must=[self._models.HasVectorCondition(has_vector=SPARSE)])
        return int(self.call("count", "count", collection_name=self.name, count_filter=flt, exact=True).count)

    def lexical_ids(self) -> list[str]:
        """The ids of the points that carry a sparse (lexical) vector."""
        if not self.lexical_ready:
            return []
        flt = self._models.Filter(must=[self._models.HasVectorCondition(has_vector=SPARSE)])
        out: list[str] = []
        offset = None
        while True:
            pts, offset = self.call("scroll", "scroll", collection_name=self.name, scroll_filter=flt, limit=1024,
                                     offset=offset, with_payload=[ID_KEY], with_vectors=False)
            out.extend(str(_payload(p).get(ID_KEY, p.id)) for p in pts)
            if offset is None:
                return out

    @staticmethod
    def _hit(p: qm.ScoredPoint) -> Hit:
        payload = _payload(p)
        item_id = payload.pop(ID_KEY, None)
        return Hit(id=item_id if isinstance(item_id, str) else str(p.id), score=float(p.score), payload=payload)

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        ids = [str(i) for i in ids]
        if not ids:
            return []
        pts = self.call("retrieve", "retrieve", collection_name=self.name, ids=[point_id(i) for i in ids],
                         with_payload=True, with_vectors=[self._dense] if self.lexical_ready or self._named else True)
        found: dict[str, StoredItem] = {}
        for p in pts:
            payload = _payload(p)
            item_id = str(payload.pop(ID_KEY, p.id))
            vectors: object = p.vector  # one unnamed vector, or {name: vector}
            vec = cast("dict[str, object]", vectors)[self._dense] if isinstance(vectors, dict) else vectors
            found[item_id] = {"id": item_id, "payload": payload, "vector": np.asarray(vec, dtype=np.float32)}
        return [found.get(i) for i in ids]

    def ids(self) -> list[str]:
        """Every stored id (scrolls the whole collection)."""
        out: list[str] = []
        offset = None
        while True:
            pts, offset = self.call("scroll", "scroll", collection_name=self.name, limit=1024,
                                     offset=offset, with_payload=[ID_KEY], with_vectors=False)
            out.extend(str(_payload(p).get(ID_KEY, p.id)) for p in pts)
            if offset is None:
                return out

    def count(self) -> int:
        return int(self.call("count", "count", collection_name=self.name, exact=True).count)

    def info(self) -> dict[str, JSON]:
        return {"backend": "qdrant", "index": "qdrant", "dim": self.dim, "funnel_dim": self.funnel_dim,
                "lexical": self.analyzer.config.to_dict(), "lexical_ready": self.lexical_ready,
                "location": self.location, "options": options_json(self.options, omit=("api_key",))}

    def drop(self) -> None:
        """Delete the Qdrant collection itself (used by ``delete_collection``)."""
        self.call("delete collection", "delete_collection", collection_name=self.name)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                # closing twice or a dead server is not an error
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transfer capability (``PointExport``; snapshots and copies), kept together at the end of the class
    @property
    def is_server(self) -> bool:
        """Whether this store talks to a Qdrant server (else it is embedded local mode)."""
        return "://" in self.location  # a URL; local mode's location is a folder (or ":memory:")

    def export_points(self, batch_size: int = 1000, after: str | None = None) -> Iterator[PointBatch]:
        """Every point as ``(ids, vectors, payloads)`` batches, in Qdrant's point-id order (a scroll).

        In local mode the store's lock is held from the first batch to the last, so writes through this store
        wait and the export is one point in time (local mode admits one process per folder). A server scroll is
        not isolated from concurrent writes: for a live server collection use the server's own snapshot
        (``omniret.index.qdrant_snapshots``).
        ``after``: resume past the point of this omniret id (the last id of a batch already taken).
        """
        with self._lock:
            skip = point_id(after) if after is not None else None
            offset: Any = skip
            first = True
            while first or offset is not None:
                first = False
                pts, offset = self.call("scroll", "scroll", collection_name=self.name, limit=batch_size,
                                         offset=offset, with_payload=True, with_vectors=[self._dense]
                                         if self._named or self.lexical_ready else True)
                if skip is not None and pts and str(pts[0].id) == skip:
                    pts = pts[1:]  # the scroll offset is inclusive; the cursor is the last point taken
                skip = None
                if not pts:
                    if offset is None:
                        return
                    continue
                records: list[Record] = pts
                payloads = [_payload(p) for p in records]
                ids = [str(pl.pop(ID_KEY, p.id)) for p, pl in zip(records, payloads, strict=True)]
                vecs = [p.vector[self._dense] if isinstance(p.vector, dict) else p.vector for p in records]
                yield ids, np.reshape(np.asarray(vecs, dtype=np.float32), (len(ids), self.dim)), payloads
