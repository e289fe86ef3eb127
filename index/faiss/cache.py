"""The FAISS files of a store: caches of SQLite, one path for the main index and the funnel index.

``NAME.faiss`` is written first, then its sidecar ``NAME.json`` (the SQLite generation it reflects and a
few facts), each by temp file + rename. A missing or unreadable pair, or one of another width, reads as
absent: the caller rebuilds it from SQLite, which holds every vector. A ``CacheCopy`` is the same pair
taken in memory at one generation, so a background thread can write it while the live index changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from omniret.index.faiss.items import ItemTable

#: faiss ships SWIG bindings without usable types (``downcast_index``, ``SearchParameters*``, ``IDSelector*``):
#: the package handles the library and its index objects untyped, under these two names
FaissModule: TypeAlias = Any
FaissIndex: TypeAlias = Any


def read_cache(faiss: FaissModule, folder: Path, name: str, dim: int, *, flags: int = 0) -> tuple[FaissIndex, dict[str, object]]:
    """The saved index (read with FAISS IO ``flags``, e.g. memory-mapped) and its sidecar, or ``(None, {})``."""
    f, side = folder / f"{name}.faiss", folder / f"{name}.json"
    if not (f.exists() and side.exists()):
        return None, {}
    try:
        saved: dict[str, object] = json.loads(side.read_text())
        index = faiss.read_index(str(f), flags)
    except (RuntimeError, ValueError, OSError):
        return None, {}
    if index.d != dim:
        return None, {}
    return index, saved


def write_cache(faiss: FaissModule, folder: Path, name: str, index: FaissIndex, generation: int, facts: dict[str, object]) -> None:
    """Write ``NAME.faiss`` and then its sidecar (``generation``, ``facts``, ``ntotal``) atomically."""
    tmp = folder / f"{name}.faiss.tmp"
    faiss.write_index(index, str(tmp))
    _publish(folder, name, tmp, {"generation": generation, **facts, "ntotal": int(index.ntotal)})


def _publish(folder: Path, name: str, tmp: Path, sidecar: dict[str, object]) -> None:
    """Rename the written ``tmp`` to ``NAME.faiss``, then write the sidecar ``NAME.json`` the same way."""
    os.replace(tmp, folder / f"{name}.faiss")
    side_tmp = folder / f"{name}.json.tmp"
    side_tmp.write_text(json.dumps(sidecar))
    os.replace(side_tmp, folder / f"{name}.json")


@dataclass(frozen=True)
class CacheCopy:
    """A FAISS file's contents taken at one generation, to be written later without the index: the index
    serialised (a copy in memory; the live index keeps changing) and its sidecar."""

    name: str
    blob: np.ndarray
    sidecar: dict[str, object]


def copy_cache(faiss: FaissModule, name: str, index: FaissIndex, generation: int,
               facts: dict[str, object]) -> CacheCopy:
    """``index`` serialised now, with the sidecar ``write_cache`` would write for it."""
    return CacheCopy(name, faiss.serialize_index(index),
                     {"generation": generation, **facts, "ntotal": int(index.ntotal)})


def write_copy(folder: Path, copy: CacheCopy) -> None:
    """Write a ``CacheCopy`` as ``write_cache`` writes an index: the file, then its sidecar, each atomically."""
    tmp = folder / f"{copy.name}.faiss.tmp"
    copy.blob.tofile(str(tmp))
    _publish(folder, copy.name, tmp, copy.sidecar)


def out_of_date(faiss: FaissModule, index: FaissIndex, items: ItemTable) -> tuple[np.ndarray, np.ndarray]:
    """``(stale, missing)``: fids the index holds that SQLite no longer has, and the reverse."""
    in_index = faiss.vector_to_array(index.id_map).astype(np.int64)
    live = items.all_fids()
    return (np.setdiff1d(in_index, live, assume_unique=True),
            np.setdiff1d(live, in_index, assume_unique=True))
