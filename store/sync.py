"""Keep a collection in step with its folders: what to embed, what changed, what is gone.

A file is known by its path and its stat (size, mtime): a path whose latest item has another size
or mtime (or, with `checksum`, another SHA-256) changed, so it is embedded again as a new item and
its old item gets a tombstone; a deleted item whose file has not changed stays deleted. Files gone
from the roots are tombstoned only when asked (`prune`): a folder unmounted for a moment must not
empty a collection.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.embedder.sources import ImageSource, read_file
from lookalike.errors import BadImage, InvalidArgument
from lookalike.store.collection import UPLOADS, Collection


@dataclass(frozen=True)
class Known:
    """The latest item of a path: its id, stat and hash, and whether it is deleted."""

    id: int
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    deleted: bool


@dataclass
class SyncPlan:
    """What a run must do: sources to embed, items to tombstone, and the counts for the report."""

    todo: list[ImageSource] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)  # live items whose file changed
    gone: list[int] = field(default_factory=list)  # live items whose file left the roots
    unchanged: int = 0
    changed: int = 0
    known_bad: int = 0

    @property
    def tombstones(self) -> list[int]:
        return self.stale + self.gone


def plan_sync(
    collection: Collection,
    sources: Sequence[ImageSource],
    roots: Sequence[Path] = (),
    *,
    retry_failed: bool = False,
    prune: bool = False,
    checksum: bool = False,
    by_stat: bool = True,
) -> SyncPlan:
    """Compare `sources` (walked under `roots`) with the collection; see the module docstring.
    Without `by_stat` (a listing: a catalogue of objects, maybe remote, never stat-ed one by
    one), a path once embedded or failed is done whatever its file looks like now."""
    known = latest_items(collection)
    known_bad = {f["path"]: (f.get("bytes"), f.get("mtime_ns")) for f in collection.failures()}
    plan, seen = SyncPlan(), set()
    for source in sources:
        key = str(source.path)
        if key in seen:
            continue
        seen.add(key)
        item = known.get(key)
        stat = _stat(Path(source.path)) if by_stat else None
        if item is not None and (not by_stat or _unchanged(item, stat, source.path, checksum)):
            plan.unchanged += 1
            continue
        if item is not None:
            plan.changed += 1
            if not item.deleted:
                plan.stale.append(item.id)
        elif not retry_failed and key in known_bad and (not by_stat or known_bad[key] == stat):
            plan.known_bad += 1
            continue
        plan.todo.append(source)
    if prune:
        plan.gone = _gone(known, seen, roots)
    return plan


def latest_items(collection: Collection) -> dict[str, Known]:
    """Each path's latest item (the highest id), deleted or not."""
    table = collection.items(["id", "path", "bytes", "mtime_ns", "sha256"], include_deleted=True)
    deleted = set(collection.deleted_ids().tolist())
    known: dict[str, Known] = {}
    columns = [table[name].to_pylist() for name in ("id", "path", "bytes", "mtime_ns", "sha256")]
    for item_id, path, size, mtime, sha in zip(*columns, strict=True):
        if path not in known or known[path].id < item_id:
            known[path] = Known(item_id, size, mtime, sha, item_id in deleted)
    return known


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        info = path.stat()
    except OSError:
        return (None, None)
    return (info.st_size, info.st_mtime_ns)


def _unchanged(
    item: Known, stat: tuple[int | None, int | None], path: Path, checksum: bool
) -> bool:
    if (item.size, item.mtime_ns) != stat:
        return False
    return not checksum or item.sha256 is None or _sha256(path) == item.sha256


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_file(path).data).hexdigest()
    except (OSError, BadImage):  # gone, unreadable, or no longer a regular file: changed
        return None


def _gone(known: dict[str, Known], seen: set[str], roots: Sequence[Path]) -> list[int]:
    """Live items under one of `roots` whose path the walk did not find."""
    prefixes = [(str(root), str(root).rstrip(os.sep) + os.sep) for root in roots]
    return sorted(
        item.id
        for path, item in known.items()
        if not item.deleted
        and path not in seen
        and any(path == root or path.startswith(prefix) for root, prefix in prefixes)
    )


def missing_items(collection: Collection) -> np.ndarray:
    """Ids of live items whose file is no longer on disk (uploads live in the collection)."""
    items = collection.items(["id", "path"])
    uploads = str(collection.path / UPLOADS) + os.sep
    return np.asarray(
        [
            item_id
            for item_id, path in zip(
                items["id"].to_pylist(), items["path"].to_pylist(), strict=True
            )
            if not path.startswith(uploads) and not os.path.lexists(path)
        ],
        np.int64,
    )


def remove_items(
    collection: Collection, ids: Iterable[int], wait: float = 30.0, missing_ok: bool = False
) -> int:
    """Tombstone live items durably; how many. An unknown or deleted id raises `UnknownItem`
    before anything is written, unless `missing_ok` (then it is passed over). The collection's
    index follows at its next `update_index` (or a server's catch-up)."""
    ids = np.unique(np.fromiter(ids, np.int64))
    if not len(ids):
        return 0
    if (ids < 0).any():
        raise InvalidArgument(f"item ids are >= 0, got {ids[ids < 0][:5].tolist()}")
    with collection.writer(wait=wait) as writer:
        return writer.delete(ids, missing_ok=missing_ok)
