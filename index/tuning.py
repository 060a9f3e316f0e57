"""The one tuning loop for every vector store (FAISS or Milvus): the cheapest search parameter
(`nprobe`, `efSearch`) that reaches a target recall@k on held-out stored vectors, measured against
exact k-NN (`lookalike.index.knn`), with the grids and the query count they all use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from .knn import drop_own, recall_at_k

P = TypeVar("P")

TUNING_QUERIES = 500  # held-out stored vectors a search parameter is tuned on
TUNING_PLATEAU = 0.002  # recall gained by doubling the search parameter below which tuning stops
HNSW_EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def nprobe_grid(nlist: int) -> list[int]:
    """IVF lists probed, cheapest first: powers of two up to `nlist`, then `nlist` (exact)."""
    grid = [2**i for i in range(int(np.log2(nlist)) + 1)]
    return grid if grid[-1] == nlist else [*grid, nlist]


def query_rows(candidates: int, count: int = TUNING_QUERIES, seed: int = 1) -> np.ndarray:
    """Which of `candidates` stored vectors (row numbers) to tune on: `count` drawn at random."""
    return np.random.default_rng(seed).choice(candidates, min(count, candidates), replace=False)


def tune_parameter(
    search_with: Callable[[P, np.ndarray, int], np.ndarray],
    grid: Sequence[P],
    queries: np.ndarray,
    own_ids: np.ndarray,
    truth: np.ndarray,
    target_recall: float = 0.95,
    k: int = 10,
    plateau: float | None = TUNING_PLATEAU,
) -> tuple[P, float]:
    """The cheapest parameter of `grid` reaching `target_recall`@k, with its recall; where none
    does, the one past which recall rises less than `plateau` (compressed codes cap recall:
    searching wider no longer finds more), else the last.

    `search_with(p, xq, n)` is a store's search with parameter `p`: the ids (n columns, -1 for
    none) of each query's `n` nearest. `queries` are stored vectors held out of their own answers:
    each query's own id (`own_ids`) is dropped, and `truth` holds the exact top-k without it.
    """
    previous: tuple[P, float] | None = None
    for param in grid:
        found = drop_own(search_with(param, queries, k + 1), own_ids, k)
        recall = recall_at_k(found, truth, k)
        if recall >= target_recall:
            return param, recall
        if plateau is not None and previous is not None and recall - previous[1] < plateau:
            return previous
        previous = (param, recall)
    if previous is None:
        raise ValueError("tune_parameter needs a grid of at least one parameter")
    return previous
