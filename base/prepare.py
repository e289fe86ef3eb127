""""Prepare every item, then run the model": the shared first half of every embed and score call.

Each item is coerced, checked against the modalities the model reads and pre-processed (media decoded,
tokens built) before any model work is spent. A bad item becomes an ``ItemError`` in its place instead
of aborting the call, so the caller can raise them all together or report them beside the good results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from omniret.errors import ItemError, ItemFailure
from omniret.types import Item, ItemLike

P = TypeVar("P")
T = TypeVar("T")


def prepare_item(raw: ItemLike, index: int | None, prepare: Callable[[Item], P], *, model: str,
                 accepted: frozenset[str], verb: str) -> P:
    """``prepare(item)`` for one raw input: ``ItemError`` naming the item if it cannot be coerced, holds a
    modality the model does not ``verb`` (embed, read), or ``prepare`` fails with a plain error."""
    item = Item.coerce(raw, index=index)
    missing = sorted(item.modalities - set(accepted))
    if missing:
        raise ItemError.for_item(index, item.id, f"model {model} cannot {verb} {', '.join(missing)} "
                                                 f"(it accepts {', '.join(sorted(accepted))})")
    try:
        return prepare(item)
    except ItemError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise ItemError.for_item(index, item.id, f"{type(e).__name__}: {e}") from e


def prepare_each(inputs: Sequence[T], prepare: Callable[[int, T], P], *, workers: int = 0) -> list[P | ItemError]:
    """``prepare(i, x)`` for every input, in order, on ``workers`` threads (0 or 1: inline); an
    ``ItemError`` takes the place of a bad input."""
    def one(pair: tuple[int, T]) -> P | ItemError:
        i, raw = pair
        try:
            return prepare(i, raw)
        except ItemError as e:
            return e

    pairs = list(enumerate(inputs))
    if workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, pairs))
    return [one(p) for p in pairs]


@dataclass(frozen=True)
class Prepared(Generic[P]):
    """The good inputs of a call with their input positions, and the errors of the bad ones."""

    inputs: list[P]
    indices: list[int]
    errors: list[ItemError]

    @property
    def failures(self) -> list[ItemFailure]:
        return [f for e in self.errors for f in e.failures]


def split_prepared(prepared: Sequence[P | ItemError], *, raise_on_error: bool) -> Prepared[P]:
    """Separate good inputs from errors; with ``raise_on_error`` every error is raised as one ``ItemError``."""
    errors = [p for p in prepared if isinstance(p, ItemError)]
    if errors and raise_on_error:
        raise ItemError.combine(errors)
    good = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ItemError)]
    return Prepared(inputs=[p for _, p in good], indices=[i for i, _ in good], errors=errors)
