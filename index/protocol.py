"""The ``VectorStore`` protocol both backends (FAISS, Qdrant) implement."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol, TypeAlias, TypedDict, runtime_checkable

import numpy as np
import numpy.typing as npt

from omniret.index.filters import Filter
from omniret.index.fusion import DEFAULT_ALPHA
from omniret.index.tuning import TuneResult
from omniret.types import JSON, Hit

#: an item's payload: a JSON object (its text, media path, page or span, and the caller's metadata)
Payload: TypeAlias = dict[str, JSON]


class StoredItem(TypedDict):
    """What ``VectorStore.get`` returns per id found."""

    id: str
    payload: Payload
    vector: np.ndarray


#: one batch of exported points: ids, their float32 vectors ``(n, dim)`` and payloads, row for row
PointBatch: TypeAlias = tuple[list[str], np.ndarray, list[Payload]]

#: the payload key under which a store may keep reserved data; user payloads must not use it
RESERVED_PREFIX = "_omniret"


@runtime_checkable
class VectorStore(Protocol):
    """Vectors with string ids and JSON payloads; similarity is inner product on L2-normalised rows.

    - ``upsert``: insert or replace by id; durable when it returns.
    - ``search``: one list of ``Hit`` per query row, best first, at most ``k``; ``filter`` is the dict
      described in ``omniret.index.filters`` and never costs hits (``k`` is honoured when enough match).
    - ``get``: per id, ``{"id", "payload", "vector"}`` or ``None`` when absent.
    - Wrong-width vectors raise ``DimensionError``; backend failures raise ``StoreError``.
    - Both built-in stores also take ``search(..., funnel=None|True|False)`` and a ``funnel_dim`` at creation
      (short-prefix candidates re-scored at full dim); callers pass ``funnel`` only when they mean it.
    """

    dim: int

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Payload] | None = None
               ) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def search(self, vectors: np.ndarray, k: int, filter: Filter | None = None  # noqa: A002
               ) -> list[list[Hit]]: ...

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...

    def info(self) -> dict[str, JSON]:
        """Backend facts (backend, index kind, dim, options) for ``Collection.info()``."""
        ...


@runtime_checkable
class LexicalStore(Protocol):
    """A store that also keeps a BM25 index of its items' text (both built-in stores do).

    ``lexical_search`` analyses each query text with the store's recorded analyser and returns the best
    ``k`` items by BM25 (higher is better), ``filter`` as in ``search``; ``lexical_count`` is how many items
    have a lexical entry (items without text have none).
    """

    def lexical_search(self, texts: Sequence[str], k: int, filter: Filter | None = None  # noqa: A002
                       ) -> list[list[Hit]]: ...

    def lexical_count(self) -> int: ...


@runtime_checkable
class LexicalBackfill(LexicalStore, Protocol):
    """A store whose lexical index can lag its items and be built from the stored payload text (FAISS: a
    store made before the lexical index existed). Qdrant cannot: an older collection cannot gain a sparse
    vector, so it is not one.

    ``lexical_ready``: whether every item is in the lexical index. ``build_lexical(progress)`` fills it,
    resumably, calling ``progress(done, total)`` after each committed batch; returns the items indexed.
    """

    @property
    def lexical_ready(self) -> bool: ...

    def build_lexical(self, progress: Callable[[int, int], None] | None = None) -> int: ...


@runtime_checkable
class TunableStore(Protocol):
    """A store whose index search setting can be chosen from a recall target (FAISS; Qdrant takes
    ``hnsw_ef`` / ``ef_construct`` as store options instead).

    ``tune`` measures recall@k on held-out stored vectors, keeps the cheapest setting that meets
    ``recall`` (applied on every later open) and returns it (``TuneResult.settings``); ``recall_tuning``
    is the last result as recorded, or None.
    """

    def tune(self, recall: float, *, k: int = 10, sample: int = 1000) -> TuneResult: ...

    def recall_tuning(self) -> dict[str, JSON] | None: ...


@runtime_checkable
class PointExport(Protocol):
    """A store that streams out every point it holds (both built-in stores), for snapshots and copies.

    ``export_points`` yields ``(ids, vectors, payloads)`` batches of at most ``batch_size`` from one point in
    time where the backend allows it, each id once, past the id ``after`` when given (a resumed copy);
    ``ids`` lists every stored id (what a verification samples from).
    """

    def export_points(self, batch_size: int = 1000, after: str | None = None) -> Iterator[PointBatch]: ...

    def ids(self) -> list[str]: ...


@runtime_checkable
class HybridStore(Protocol):
    """A store that fuses its dense and lexical lists itself (Qdrant's Query API)."""

    def hybrid_search(self, vectors: np.ndarray, texts: Sequence[str], k: int,
                      filter: Filter | None = None, *, depth: int | None = None,  # noqa: A002
                      fusion: str = "rrf", alpha: float = DEFAULT_ALPHA, funnel: bool | None = None) -> list[list[Hit]]: ...


def as_matrix(vectors: npt.ArrayLike, dim: int, *, what: str = "vectors") -> np.ndarray:
    """Vectors as a C-contiguous float32 ``(n, dim)`` matrix; ``DimensionError`` names expected and got."""
    from omniret.errors import DimensionError, StoreError

    try:
        m = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what}: cannot read as a float32 matrix ({e})") from e
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise DimensionError(f"{what}: expected a (n, {dim}) matrix, got shape {m.shape}")
    if m.shape[1] != dim:
        raise DimensionError(f"{what}: expected dimension {dim}, got {m.shape[1]}")
    if not np.isfinite(m).all():
        raise StoreError(f"{what}: contain NaN or infinite values")
    return np.ascontiguousarray(m)


def check_upsert(ids: Sequence[str], vectors: npt.ArrayLike, payloads: Sequence[Payload] | None, dim: int
                 ) -> tuple[list[str], np.ndarray, list[Payload]]:
    """Validate one upsert batch (ids unique strings, one vector and payload per id, JSON payloads)."""
    import json

    from omniret.errors import StoreError

    ids = [str(i) for i in ids]
    m = as_matrix(vectors, dim) if len(ids) else np.zeros((0, dim), dtype=np.float32)
    if m.shape[0] != len(ids):
        raise StoreError(f"upsert: {len(ids)} ids but {m.shape[0]} vectors")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise StoreError(f"upsert: id {dup!r} appears twice in one batch")
    if any(not i for i in ids):
        raise StoreError("upsert: ids must be non-empty strings")
    pls: list[Payload] = ([dict(p) if p else {} for p in payloads] if payloads is not None
                                 else [{} for _ in ids])
    if len(pls) != len(ids):
        raise StoreError(f"upsert: {len(ids)} ids but {len(pls)} payloads")
    for i, p in zip(ids, pls, strict=True):
        bad = [k for k in p if str(k).startswith(RESERVED_PREFIX)]
        if bad:
            raise StoreError(f"upsert: id {i!r}: payload key {bad[0]!r} is reserved")
        try:
            json.dumps(p)
        except (TypeError, ValueError) as e:
            raise StoreError(f"upsert: id {i!r}: payload is not JSON-serialisable ({e})") from e
    return ids, m, pls


def check_search(vectors: npt.ArrayLike, k: int, dim: int, *, funnel: bool | None, funnel_dim: int | None,
                 where: str, create_hint: str) -> np.ndarray:
    """The query matrix of a ``search`` call, after the checks both stores make: the width, ``k > 0``, and
    ``funnel=True`` only on a store that has a funnel index."""
    from omniret.errors import ConfigError

    q = as_matrix(vectors, dim, what="query vectors")
    if k <= 0:
        raise ConfigError(f"k must be > 0, got {k}")
    if funnel and funnel_dim is None:
        raise ConfigError(f"funnel=True but {where} has no funnel {create_hint} (create it with funnel_dim=...)")
    return q


#: default funnel pool: k·10 short-prefix candidates re-scored at full dim
FUNNEL_CANDIDATES = 10


def check_funnel_dim(funnel_dim: object, dim: int, *, where: str) -> int | None:
    """``funnel_dim`` as an int in (0, dim), or None; ``DimensionError`` naming the store otherwise."""
    if funnel_dim is None:
        return None
    if isinstance(funnel_dim, bool) or not isinstance(funnel_dim, int) or not 0 < funnel_dim < dim:
        from omniret.errors import DimensionError

        raise DimensionError(f"{where}: funnel_dim={funnel_dim!r} must be an int between 1 and {dim - 1} "
                             f"(a prefix shorter than the stored dimension {dim})")
    return funnel_dim


def options_json(options: Mapping[str, object], *, omit: Sequence[str] = ()) -> dict[str, JSON]:
    """A store's options as the JSON ``info()`` reports, less the ``omit`` keys (secrets, machine facts).

    Store options are JSON scalars by their ``TypedDict``; anything else is shown by its ``repr``.
    """
    return {k: v if v is None or isinstance(v, (str, int, float, bool)) else repr(v)
            for k, v in options.items() if k not in omit}


def funnel_pool(k: int, options: Mapping[str, object], where: str) -> int:
    """How many short-prefix candidates a funnel search re-scores for ``k`` hits."""
    mult = options.get("funnel_candidates", FUNNEL_CANDIDATES)
    if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1:
        from omniret.errors import ConfigError

        raise ConfigError(f"{where}: funnel_candidates={mult!r} must be an int >= 1 (the pool is k times it)")
    return k * mult
