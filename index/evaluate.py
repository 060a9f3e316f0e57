"""`lookalike index eval`: recall@k of the index against exact search, and the QPS of both, one run."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lookalike.errors import InvalidArgument
from lookalike.store.collection import Collection

from .knn import drop_own, exact_neighbours, recall_at_k
from .vector_index import VectorIndex
from .vector_store import VectorStore, as_store, padded


@dataclass
class Evaluation:
    factory: str
    params: str
    vectors: int
    queries: int
    k: int
    recall: float
    index_qps: float
    exact_qps: float

    @property
    def speedup(self) -> float:
        return self.index_qps / self.exact_qps if self.exact_qps else float("inf")

    def summary(self) -> str:
        return (
            f"{self.factory} ({self.params}) over {self.vectors} vectors, {self.queries} queries: "
            f"recall@{self.k} {self.recall:.3f}; {self.index_qps:.0f} QPS vs exact "
            f"{self.exact_qps:.0f} QPS ({self.speedup:.1f}x)"
        )


def evaluate_index(
    collection: Collection,
    index: VectorIndex | VectorStore,
    layer: str,
    k: int = 10,
    queries: int = 1000,
    seed: int = 2,
) -> Evaluation:
    """Stored vectors as held-out queries: exact (raw vectors, blockwise) vs the index (or any
    vector store), timed alike."""
    store = as_store(index)
    ids = store.ids()
    if len(ids) < 2:
        raise InvalidArgument("the index needs at least 2 vectors to evaluate")
    chosen = np.sort(np.random.default_rng(seed).choice(ids, min(queries, len(ids)), replace=False))
    xq = collection.vectors(chosen, layer)
    started = time.perf_counter()
    truth = exact_neighbours(collection.iter_embeddings(layer), xq, k + 1, store.metric)[1]
    exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    results = store.search(xq, k + 1)
    index_seconds = time.perf_counter() - started
    found = padded(results, k + 1, store.metric)[1]
    recall = recall_at_k(drop_own(found, chosen, k), drop_own(truth, chosen, k), k)
    factory, params = store.describe()
    return Evaluation(
        factory=factory,
        params=params,
        vectors=len(ids),
        queries=len(chosen),
        k=k,
        recall=recall,
        index_qps=len(chosen) / index_seconds,
        exact_qps=len(chosen) / exact_seconds,
    )
