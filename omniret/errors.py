"""One error hierarchy for every part of omniret.

Leaves also subclass the builtin a caller would expect (``ItemError`` is a ``ValueError``), so code
written against plain Python exceptions keeps working.
"""

from __future__ import annotations

from typing import Any


class OmniretError(Exception):
    """Root of every error omniret raises on purpose."""


class ConfigError(OmniretError, ValueError):
    """A setting, option or argument is invalid (names the setting and the allowed values)."""


class FilterError(ConfigError):
    """A search filter is malformed (names the filter key and what is allowed)."""


class SearchModeError(ConfigError):
    """A search's first stage cannot run as asked: unknown ``mode`` or ``fusion``, ``alpha`` outside [0, 1], a
    lexical query without text, or a collection whose items have no text. ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "mode") -> None:
        super().__init__(message)
        self.field = field


class ModelLoadError(OmniretError, ValueError):
    """A checkpoint cannot be loaded as the kind of model that was asked for."""


class DimensionError(OmniretError, ValueError):
    """A vector or Matryoshka dimension does not fit the model or the collection."""


class ItemError(OmniretError, ValueError):
    """One input item cannot be used; names the item (index and id) and the reason.

    ``failures`` holds every bad item of the call as ``(index, id, reason)`` so a caller that wants the
    good items anyway knows exactly what was left out.
    """

    def __init__(self, message: str, *, index: int | None = None, item_id: str | None = None,
                 reason: str | None = None, failures: list[ItemFailure] | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.item_id = item_id
        self.reason = reason if reason is not None else message
        self.failures: list[ItemFailure] = failures if failures is not None else [
            ItemFailure(index=index if index is not None else -1, id=item_id, reason=self.reason)
        ]

    @classmethod
    def for_item(cls, index: int | None, item_id: Any, reason: str) -> ItemError:
        """Build the error for one item with the standard message shape."""
        where: list[str] = []
        if index is not None:
            where.append(f"item {index}")
        if item_id is not None:
            where.append(f"id={item_id!r}")
        prefix = " ".join(where) if where else "item"
        return cls(f"{prefix}: {reason}", index=index, item_id=None if item_id is None else str(item_id),
                   reason=reason)

    @classmethod
    def combine(cls, errors: list[ItemError]) -> ItemError:
        """Merge several item errors into one that lists them all (the first names the message)."""
        if len(errors) == 1:
            return errors[0]
        failures = [f for e in errors for f in e.failures]
        lines = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        first = errors[0]
        return cls(f"{len(errors)} items failed: {lines}{more}", index=first.index, item_id=first.item_id,
                   reason=first.reason, failures=failures)


class ItemFailure:
    """A bad item's position, id and reason, as reported beside the good items' results."""

    __slots__ = ("index", "id", "reason")

    def __init__(self, index: int, id: str | None, reason: str) -> None:  # noqa: A002 - mirrors Item.id
        self.index = index
        self.id = id
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason}

    def __repr__(self) -> str:
        return f"ItemFailure(index={self.index}, id={self.id!r}, reason={self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemFailure) and self.to_dict() == other.to_dict()


class StoreError(OmniretError, RuntimeError):
    """A vector store operation failed (both backends raise this, never their client's own errors)."""


class CollectionError(OmniretError, ValueError):
    """A collection cannot be used: missing, exists already, or opened with the wrong model or dimension."""


class CollectionNotFound(CollectionError, LookupError):
    """No collection of that name (a ``LookupError`` too, as a missing key is)."""


class CollectionExists(CollectionError):
    """A collection of that name exists already (creating it again would mix two collections)."""


class CollectionMismatch(CollectionError):
    """A collection is opened with another model, dimension, backend or index than it was built with."""


class DistributedError(OmniretError, RuntimeError):
    """A distributed run lost a rank (killed, hung past the timeout, network gone) or cannot form."""


class WorkerError(DistributedError):
    """A worker process (an embedding device worker, a Ray actor) died, hung or failed a batch; names the
    worker and its device. Work committed before it stays committed: re-running resumes."""
