"""Groups of equal items: the same stored vector (its bytes, hashed), or the same file (its
recorded SHA-256), found in one pass over the vectors with no index and no pairs.

Dedup collapses each group to one representative before its range search, so a thousand copies
of one placeholder cost one query, not half a million pairs; calibration varies one image per
group. Identical files group even where their vectors differ by rounding (batches of another
size); identical pixels in different files group by their equal vectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from .search import Searcher
from .vector_store import Filters

DIGEST_BYTES = 16  # 128-bit vector digests: a collision among 10^9 vectors has odds of 10^-21


@dataclass(frozen=True)
class EqualGroups:
    """The items in scope, one group per distinct item. `representatives`: each group's smallest
    id, sorted (an item alone is its own); `groups`: the groups of 2+ items, each sorted (its
    first id its representative), largest first."""

    representatives: np.ndarray
    groups: list[np.ndarray]
    _members: np.ndarray = field(init=False, repr=False)  # ids in groups, sorted
    _heads: np.ndarray = field(init=False, repr=False)  # their representatives, in that order

    def __post_init__(self) -> None:
        members = np.concatenate([np.empty(0, np.int64), *self.groups])
        heads = np.repeat([int(g[0]) for g in self.groups], [len(g) for g in self.groups])
        order = np.argsort(members, kind="stable")
        object.__setattr__(self, "_members", members[order])
        object.__setattr__(self, "_heads", heads[order].astype(np.int64))

    def representative_of(self, ids: np.ndarray) -> np.ndarray:
        """Each id's group representative (the id itself where it is alone), vectorised."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self._members):
            return ids
        where = np.minimum(np.searchsorted(self._members, ids), len(self._members) - 1)
        return np.where(self._members[where] == ids, self._heads[where], ids)


def equal_groups(
    searcher: Searcher, filters: Filters | None = None, vectors: bool = True
) -> EqualGroups:
    """The items `filters` keeps (all without), grouped by equal vectors of the searcher's layer
    and by identical recorded files; with `vectors=False`, by the files alone (no vector read)."""
    table = searcher.collection.items(["id", "sha256"]).sort_by("id")
    if filters:
        table = table.filter(pc.is_in(table["id"], pa.array(searcher.allowed_ids(filters))))
    ids = table["id"].to_numpy()
    keys = [_file_keys(table["sha256"])]
    if vectors:
        keys.append(_vector_keys(searcher, ids))
    return _grouped(ids, keys)


def _file_keys(digests: pa.ChunkedArray) -> np.ndarray:
    """A number per distinct recorded SHA-256, -1 where none is recorded."""
    digests = pc.if_else(pc.equal(digests, ""), pa.scalar(None, pa.string()), digests)
    codes = digests.combine_chunks().dictionary_encode().indices
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _vector_keys(searcher: Searcher, ids: np.ndarray) -> np.ndarray:
    """A number per distinct stored vector of `ids` (sorted), read shard by shard."""
    found_ids, digests = [], []
    for block_ids, block in searcher.collection.iter_embeddings(searcher.layer):
        keep = np.isin(block_ids, ids)
        rows = np.ascontiguousarray(np.asarray(block)[keep], dtype=np.float32) + np.float32(0)
        found_ids.append(block_ids[keep])  # + 0 above: -0.0 and 0.0 hash alike
        digests.append(
            np.array(
                [hashlib.blake2b(row, digest_size=DIGEST_BYTES).digest() for row in rows],
                dtype=f"S{DIGEST_BYTES}",
            )
        )
    if not found_ids:
        return np.full(len(ids), -1, np.int64)
    found, digest = np.concatenate(found_ids), np.concatenate(digests)
    codes = np.unique(digest, return_inverse=True)[1].reshape(-1)
    keys = np.full(len(ids), -1, np.int64)
    where = np.searchsorted(ids, found)
    keys[where] = codes
    return keys


def _grouped(ids: np.ndarray, keys: list[np.ndarray]) -> EqualGroups:
    """Items linked by any equal key (-1: no key) joined into groups: connected components of
    the graph item - key value."""
    n = len(ids)
    rows, cols, offset = [], [], n
    for key in keys:
        held = key >= 0
        rows.append(np.flatnonzero(held))
        cols.append(key[held] + offset)
        offset += int(key.max()) + 1 if held.any() else 0
    edges = np.ones(sum(len(r) for r in rows), np.int8)
    graph = scipy.sparse.coo_matrix(
        (edges, (np.concatenate(rows or [[]]), np.concatenate(cols or [[]]))),
        shape=(offset, offset),
    )
    component = connected_components(graph, directed=False)[1][:n]
    order = np.lexsort((ids, component))  # by group, then id: each group's smallest id first
    sorted_ids, sorted_groups = ids[order], component[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]) if n else order
    lengths = np.diff(np.r_[starts, n])
    groups = [sorted_ids[s : s + size] for s, size in zip(starts, lengths, strict=True) if size > 1]
    groups.sort(key=lambda group: (-len(group), int(group[0])))
    return EqualGroups(np.sort(sorted_ids[starts]), groups)
