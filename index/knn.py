"""Exact k nearest neighbours and recall@k: the one reference every recall figure is measured
against (index tuning, `index eval`, the benches, distillation's neighbour agreement, the probe's
k-NN score), as faiss's `contrib.exhaustive_search.knn_ground_truth` keeps it: exact search block by
block, merged in a result heap, never an index's compressed copy."""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

from lookalike.errors import InvalidArgument

from .metric import METRICS, worst_score


def as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InvalidArgument(f"expected a vector or a matrix of vectors, got shape {x.shape}")
    return np.ascontiguousarray(x)


def no_results(n: int, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), worst_score(metric), np.float32), np.full((n, k), -1, np.int64)


def pad_results(
    scores: np.ndarray, ids: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to k columns with id -1, and give missing results the worst score."""
    pad_scores, pad_ids = no_results(len(ids), k, metric)
    pad_scores[:, : scores.shape[1]] = scores
    pad_ids[:, : ids.shape[1]] = ids
    pad_scores[pad_ids < 0] = worst_score(metric)
    return pad_scores, pad_ids


def drop_own(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row without its query's own id, cut to k columns."""
    rows = [row[row != me][:k] for row, me in zip(found, own, strict=True)]
    return np.array([np.pad(r, (0, k - len(r)), constant_values=-1) for r in rows])


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k ids that `found`'s top-k contains."""
    hits = [
        len(np.intersect1d(f[:k][f[:k] >= 0], t[:k][t[:k] >= 0]))
        for f, t in zip(found, truth, strict=True)
    ]
    wanted = [max(1, int((t[:k] >= 0).sum())) for t in truth]
    return float(np.mean(np.array(hits) / np.array(wanted)))


def exact_neighbours(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], xq: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (scores, ids) of the top-k of `xq` over (ids, vectors) blocks, merged block by block.

    The reference for recall: it reads the raw vectors, never an index's compressed copy.
    """
    xq = as_matrix(xq)
    heap = faiss.ResultHeap(len(xq), k, keep_max=metric == "ip")
    for ids, xb in blocks:
        if len(ids) == 0:  # a shard whose items were all deleted
            continue
        # faiss.knn reads the block where it lies (a memory-mapped shard is not copied)
        scores, rows = faiss.knn(xq, as_matrix(xb), min(k, len(ids)), METRICS[metric])
        found = np.where(rows >= 0, np.asarray(ids)[np.maximum(rows, 0)], -1)
        heap.add_result(*pad_results(scores, found, k, metric))
    heap.finalize()
    return heap.D, heap.I


def held_out_truth(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    own_ids: np.ndarray,
    k: int,
    metric: str,
) -> np.ndarray:
    """Exact top-k ids of stored vectors used as queries, each without the query's own id."""
    return drop_own(exact_neighbours(blocks, queries, k + 1, metric)[1], own_ids, k)


def self_neighbours(xb: np.ndarray, k: int, metric: str = "ip") -> np.ndarray:
    """Each row's `k` nearest other rows (exact; the row itself left out), as row numbers."""
    if not 0 < k < len(xb):
        raise InvalidArgument(f"k={k} neighbours need more than {k} vectors, got {len(xb)}")
    rows = np.arange(len(xb))
    found = exact_neighbours([(rows, xb)], xb, k + 1, metric)[1]
    return drop_own(found, rows, k)
