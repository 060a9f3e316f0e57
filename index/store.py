"""Saving and loading an index so that a crash at any point leaves the last good one readable.

Layout, per layer, under the collection::

    DIR/index/<layer>/CURRENT            names the live generation, replaced atomically
    DIR/index/<layer>/gen-000007/        index.faiss, live.npy (deletion mask), meta.json
    DIR/index/<layer>/.tmp-*             a save in progress (or one a crash cut short: ignored)

A save writes a whole new generation under a temporary name, fsyncs it, renames it into place and
only then points CURRENT at it; older generations are removed afterwards. A reader follows CURRENT,
so it sees the old generation or the new one, never a torn file.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from urllib.parse import quote

import faiss
import numpy as np

from lookalike.durable import (
    acquire_lock,
    atomic_folder,
    disk_errors,
    remove_temporaries,
    write_atomic,
)
from lookalike.errors import CollectionError

from .vector_index import IndexMeta, VectorIndex

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
MMAP_MIN_BYTES = 256 * 2**20  # larger index files load memory-mapped when read-only


def index_dir(collection_path: Path, layer: str) -> Path:
    return Path(collection_path) / "index" / quote(layer, safe="")


def has_index(collection_path: Path, layer: str) -> bool:
    return (index_dir(collection_path, layer) / CURRENT).exists()


def save_index(index: VectorIndex, folder: Path) -> Path:
    """Write `index` as the next generation under `folder`; returns the generation's path. A full
    or read-only disk raises `StorageFull` / `StorageReadOnly` and leaves the last generation."""
    with disk_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with acquire_lock(folder / ".lock"), index.lock.read():
        remove_temporaries(folder)
        final = folder / f"gen-{_next_generation(folder):06d}"
        with atomic_folder(final) as tmp:
            _write_generation(index, tmp)
        write_atomic(folder / CURRENT, final.name.encode())
        for old in folder.glob("gen-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
    log.info("saved index %s (%d vectors)", final, len(index))
    return final


def _write_generation(index: VectorIndex, tmp: Path) -> None:
    """The index, its deletion mask and meta into `tmp` (`atomic_folder` makes them durable). FAISS
    writes through a Python file, so a failed write is the `OSError` it is, not a RuntimeError."""
    with open(tmp / "index.faiss", "wb") as handle:
        faiss.write_index(index.index, faiss.PyCallbackIOWriter(handle.write))
    np.save(tmp / "live.npy", index.live)
    (tmp / "meta.json").write_text(json.dumps(index.meta.to_dict(), indent=2))


def load_index(folder: Path, read_only: bool = False, mmap: bool | None = None) -> VectorIndex:
    """The generation CURRENT names. Read-only loads of large files are memory-mapped."""
    try:
        name = (folder / CURRENT).read_text().strip()
    except FileNotFoundError:
        raise CollectionError(
            f"no index in {folder}; build one with `lookalike index build`"
        ) from None
    generation = folder / name
    path = generation / "index.faiss"
    if not path.exists():
        raise CollectionError(f"{folder / CURRENT} names {name}, which is missing or incomplete")
    if mmap is None:
        mmap = read_only and path.stat().st_size >= MMAP_MIN_BYTES
    try:
        index = faiss.read_index(
            str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        )
    except RuntimeError:  # an index type FAISS cannot map: read it into memory instead
        if not mmap:
            raise
        index = faiss.read_index(str(path))
    meta = IndexMeta(**json.loads((generation / "meta.json").read_text()))
    live = np.load(generation / "live.npy")
    return VectorIndex(index, meta, live, read_only=read_only or mmap)


def _next_generation(folder: Path) -> int:
    numbers = [int(p.name[4:]) for p in folder.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1
