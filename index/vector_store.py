"""The one vector-store interface everything above the index goes through, and its FAISS form.

A store holds one vector per item id and answers searches in FAISS's units: inner products
(metric ``ip``, larger is closer) or squared L2 (``l2``, smaller is closer); `Searcher` turns them
into distances. Two implementations: `FaissStore` (the embedded, saved `VectorIndex`: the
default) and `MilvusStore` (`milvus_store`: a shared database, for several servers at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lookalike.errors import InvalidArgument

from .metric import worst_score
from .vector_index import VectorIndex

Results = list[tuple[np.ndarray, np.ndarray]]  # per query: (scores, ids), best first


@dataclass(frozen=True)
class Filters:
    """Restrict results to items with one of `labels` and/or a path under `path_prefix`."""

    labels: tuple[str, ...] = ()
    path_prefix: str | None = None

    def __bool__(self) -> bool:
        return bool(self.labels or self.path_prefix)


@runtime_checkable
class VectorStore(Protocol):
    """Vectors by item id: add/upsert, remove, search by vectors with k and/or a radius and
    filters, count, ids. `fields` (optional `label` and `path` per id) feed stores that filter
    themselves; the FAISS store filters through the collection's item table instead."""

    metric: str  # "ip" or "l2"
    dim: int
    shared: bool  # other processes write it directly: a catch-up need not copy their writes

    def __len__(self) -> int: ...
    def ids(self) -> np.ndarray: ...
    def has(self, ids: Sequence[int] | np.ndarray) -> np.ndarray: ...
    def add(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None: ...
    def upsert(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None: ...
    def remove(self, ids: Sequence[int] | np.ndarray) -> int: ...
    def search(
        self,
        xq: np.ndarray,
        k: int | None = 10,
        radius: float | None = None,
        filters: Filters | None = None,
    ) -> Results: ...
    def describe(self) -> tuple[str, str]: ...


class FaissStore:
    """A `VectorIndex` behind the store interface; `allowed` turns filters into the item ids
    they keep (the searcher's item table)."""

    shared = False

    def __init__(
        self, index: VectorIndex, allowed: Callable[[Filters], np.ndarray] | None = None
    ) -> None:
        self.index = index
        self.allowed = allowed
        self.metric = index.meta.metric
        self.dim = index.meta.dim

    def __len__(self) -> int:
        return len(self.index)

    def ids(self) -> np.ndarray:
        return self.index.ids()

    def has(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(ids, dtype=np.int64), self.index.ids())

    def add(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None:
        self.index.add(ids, xb)

    def upsert(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None:
        self.index.upsert(ids, xb)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        return self.index.remove(ids)

    def search(
        self,
        xq: np.ndarray,
        k: int | None = 10,
        radius: float | None = None,
        filters: Filters | None = None,
    ) -> Results:
        """Top `k`, everything within `radius`, or both (the top `k` of those within it)."""
        if k is None and radius is None:
            raise InvalidArgument("give k, a radius, or both")
        allowed = None
        if filters:
            if self.allowed is None:
                raise TypeError("this FaissStore was made without a way to apply filters")
            allowed = self.allowed(filters)
        if radius is None:
            scores, found = self.index.search(xq, k, allowed)
            return list(zip(scores, found, strict=True))
        results = self.index.range_search(xq, radius, allowed)
        return [(s[:k], i[:k]) if k else (s, i) for s, i in results]

    def describe(self) -> tuple[str, str]:
        return self.index.meta.factory, self.index.param_text()


def as_store(
    index: VectorIndex | VectorStore, allowed: Callable[[Filters], np.ndarray] | None = None
) -> VectorStore:
    """A store as is; a `VectorIndex` wrapped in a `FaissStore`."""
    return FaissStore(index, allowed) if isinstance(index, VectorIndex) else index


def padded(results: Results, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) matrices of `k` columns from per-query results; missing ones are id -1."""
    scores = np.full((len(results), k), worst_score(metric), np.float32)
    ids = np.full((len(results), k), -1, np.int64)
    for row, (s, i) in enumerate(results):
        keep = (np.asarray(i) >= 0)[:k]
        scores[row, : keep.sum()] = np.asarray(s)[:k][keep]
        ids[row, : keep.sum()] = np.asarray(i)[:k][keep]
    return scores, ids
