"""The FAISS files of a store: caches of SQLite, one path for the main index and the funnel index.

``NAME.faiss`` is written first, then its sidecar ``NAME.json`` (the SQLite generation it reflects and a
few facts), each by temp file + rename. A missing or unreadable pair, or one of another width, reads as
absent: the caller rebuilds it from SQLite, which holds every vector. A ``CacheCopy`` is a clone of the
index at one generation, so a background thread can write the pair while the live index changes.
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
    f = folder / f"{name}.faiss"
    tmp = f.with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, f)
    side_tmp = folder / f"{name}.json.tmp"
    side_tmp.write_text(json.dumps({"generation": generation, **facts, "ntotal": int(index.ntotal)}))
    os.replace(side_tmp, folder / f"{name}.json")


@dataclass(frozen=True)
class CacheCopy:
    """What ``write_cache`` would write now, kept for later: a clone of the index (the live one keeps
    changing) and the generation it reflects."""

    name: str
    index: FaissIndex
    generation: int
    facts: dict[str, object]


def copy_cache(faiss: FaissModule, name: str, index: FaissIndex, generation: int,
               facts: dict[str, object]) -> CacheCopy:
    """``index`` cloned now. ``clone_index`` is a memory copy (about 1 s for 1M x 384 flat here); FAISS's
    own serialisation to a buffer took 2 to 20 s for the same index, and a file write 1 to 4 s."""
    return CacheCopy(name, faiss.clone_index(index), generation, facts)


def write_copy(faiss: FaissModule, folder: Path, copy: CacheCopy) -> None:
    """Write a ``CacheCopy`` exactly as ``write_cache`` writes a live index."""
    write_cache(faiss, folder, copy.name, copy.index, copy.generation, copy.facts)


def out_of_date(faiss: FaissModule, index: FaissIndex, items: ItemTable) -> tuple[np.ndarray, np.ndarray]:
    """``(stale, missing)``: fids the index holds that SQLite no longer has, and the reverse."""
    in_index = faiss.vector_to_array(index.id_map).astype(np.int64)
    live = items.all_fids()
    return (np.setdiff1d(in_index, live, assume_unique=True),
            np.setdiff1d(live, in_index, assume_unique=True))
