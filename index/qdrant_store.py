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
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from omniret.embed.matryoshka import truncate
from omniret.errors import ConfigError, DimensionError, OmniretError, StoreError
from omniret.index.filters import Filter, parse_filter, to_qdrant
from omniret.index.protocol import (
    RESERVED_PREFIX,
    check_funnel_dim,
    check_search,
    check_upsert,
    funnel_pool,
)
from omniret.types import Hit

ID_KEY = f"{RESERVED_PREFIX}_id"
_NAMESPACE = uuid.UUID("5b0f8d2e-6a53-4c1f-9d7e-6f6d6e697265")
#: named vectors of a collection with a funnel
FULL, SHORT = "full", "short"


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


def point_id(item_id: str) -> str:
    """The Qdrant point id (a UUID string) of an omniret id."""
    return str(uuid.uuid5(_NAMESPACE, item_id))


class QdrantStore:
    """A Qdrant collection behind the ``VectorStore`` protocol (see module docstring)."""

    def __init__(self, name: str, *, dim: int | None = None, path: str | Path | None = None, url: str | None = None,
                 options: QdrantOptions | None = None, create: bool = True, funnel_dim: int | None = None) -> None:
        if (path is None) == (url is None):
            raise ConfigError("QdrantStore takes exactly one of path= (embedded local mode) or url= (server)")
        unknown = set(options or {}) - set(QdrantOptions.__annotations__)
        if unknown:
            raise ConfigError(f"unknown Qdrant option(s) {sorted(unknown)}; known: "
                              f"{', '.join(QdrantOptions.__annotations__)}")
        from qdrant_client import QdrantClient, models

        self._models = models
        self.name = name
        self.options: QdrantOptions = dict(options or {})  # type: ignore[assignment]
        self.location = str(path) if path is not None else str(url)
        self._batch = int(self.options.get("batch_size", 256))
        self._lock = threading.RLock()
        try:
            if str(path) == ":memory:":
                self._client = QdrantClient(location=":memory:", force_disable_check_same_thread=True)
            elif path is not None:
                Path(path).mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
            else:
                kw: dict[str, Any] = {k: self.options[k] for k in ("api_key", "timeout", "prefer_grpc")  # type: ignore[literal-required]
                                      if k in self.options}
                self._client = QdrantClient(url=url, **kw)
            exists = self._client.collection_exists(name)
        except OmniretError:
            raise
        except Exception as e:  # noqa: BLE001 - the client's errors become ours
            raise StoreError(f"cannot open Qdrant at {self.location}: {type(e).__name__}: {e}") from e
        if exists:
            try:
                params = self._client.get_collection(name).config.params.vectors
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"Qdrant collection {name!r}: cannot read its config: {e}") from e
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
            cfg = {k: self.options[k] for k in ("shard_number", "replication_factor",  # type: ignore[literal-required]
                                                "write_consistency_factor") if k in self.options}
            full = models.VectorParams(size=self.dim, distance=models.Distance.COSINE,
                                       on_disk=self.options.get("on_disk"))
            vectors: Any = full
            if self.funnel_dim is not None:
                vectors = {FULL: full, SHORT: models.VectorParams(size=self.funnel_dim,
                                                                  distance=models.Distance.COSINE)}
            self._call("create collection", "create_collection", collection_name=name, vectors_config=vectors,
                       **cfg)

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
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
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]] | None = None
               ) -> None:
        """Insert or replace by id, in batches; each batch is acknowledged (``wait=True``) before returning."""
        ids, m, pls = check_upsert(ids, vectors, payloads, self.dim)
        models = self._models
        short = truncate(m, self.funnel_dim) if self.funnel_dim is not None else None
        for s in range(0, len(ids), self._batch):
            vecs: list[Any] = m[s:s + self._batch].tolist()
            if short is not None:
                vecs = [{FULL: v, SHORT: sv} for v, sv in zip(vecs, short[s:s + self._batch].tolist(), strict=True)]
            points = [models.PointStruct(id=point_id(i), vector=v, payload={**p, ID_KEY: i})
                      for i, v, p in zip(ids[s:s + self._batch], vecs, pls[s:s + self._batch], strict=True)]
            self._call("upsert", "upsert", collection_name=self.name, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            return
        selector = self._models.PointIdsList(points=[point_id(i) for i in ids])
        self._call("delete", "delete", collection_name=self.name, points_selector=selector, wait=True)

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
        results = self._call("search", "query_batch_points", collection_name=self.name,
                             requests=requests)
        return [[self._hit(p) for p in r.points] for r in results]

    @staticmethod
    def _hit(p: Any) -> Hit:
        payload = dict(p.payload or {})
        item_id = payload.pop(ID_KEY, str(p.id))
        return Hit(id=item_id, score=float(p.score), payload=payload)

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        ids = [str(i) for i in ids]
        if not ids:
            return []
        pts = self._call("retrieve", "retrieve", collection_name=self.name, ids=[point_id(i) for i in ids],
                         with_payload=True, with_vectors=[FULL] if self._named else True)
        found = {}
        for p in pts:
            payload = dict(p.payload or {})
            item_id = payload.pop(ID_KEY, str(p.id))
            vec = p.vector[FULL] if isinstance(p.vector, dict) else p.vector
            found[item_id] = {"id": item_id, "payload": payload, "vector": np.asarray(vec, dtype=np.float32)}
        return [found.get(i) for i in ids]

    def ids(self) -> list[str]:
        """Every stored id (scrolls the whole collection)."""
        out: list[str] = []
        offset = None
        while True:
            pts, offset = self._call("scroll", "scroll", collection_name=self.name, limit=1024,
                                     offset=offset, with_payload=[ID_KEY], with_vectors=False)
            out.extend(str((p.payload or {}).get(ID_KEY, p.id)) for p in pts)
            if offset is None:
                return out

    def count(self) -> int:
        return int(self._call("count", "count", collection_name=self.name, exact=True).count)

    def info(self) -> dict[str, Any]:
        return {"backend": "qdrant", "index": "qdrant", "dim": self.dim, "funnel_dim": self.funnel_dim,
                "location": self.location,
                "options": {k: v for k, v in self.options.items() if k != "api_key"}}

    def drop(self) -> None:
        """Delete the Qdrant collection itself (used by ``delete_collection``)."""
        self._call("delete collection", "delete_collection", collection_name=self.name)

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
