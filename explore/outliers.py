"""Outliers and uniqueness: each item's mean distance to its k nearest other items.

An item far from everything else (a photo among clothes, a blank scan, a mis-filed image) has a
large mean distance; copies and crowded look-alikes have a small one. The distances come from the
collection's own index (the `Searcher`), block by block, so memory stays bounded. Items whose
score is far above the rest (a robust z-score, median and MAD, above `FLAG_Z`) are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lookalike.errors import InvalidArgument
from lookalike.index.search import Searcher

DEFAULT_K = 10
MAX_K = 100
FLAG_Z = 3.5  # Iglewicz and Hoaglin's cut for a modified z-score
BLOCK = 1024


@dataclass(frozen=True)
class Outliers:
    """Every item ranked by its mean distance to its `k` nearest others, largest first."""

    ids: np.ndarray
    scores: np.ndarray  # mean distance to the k nearest other items
    nearest: np.ndarray  # distance to the nearest other item
    z: np.ndarray  # robust z-score of the mean distance
    k: int
    layer: str

    @property
    def flagged(self) -> np.ndarray:
        return self.z > FLAG_Z

    def rows(self, top: int | None = None) -> list[dict[str, Any]]:
        end = len(self.ids) if top is None else min(top, len(self.ids))
        return [
            {
                "rank": rank + 1,
                "id": int(self.ids[rank]),
                "score": round(float(self.scores[rank]), 6),
                "nearest": round(float(self.nearest[rank]), 6),
                "z": round(float(self.z[rank]), 3),
                "flagged": bool(self.flagged[rank]),
            }
            for rank in range(end)
        ]


def robust_z(scores: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD): how unusual each score is, unmoved by the outliers themselves."""
    median = np.median(scores)
    spread = 1.4826 * np.median(np.abs(scores - median))
    if spread == 0:
        spread = float(np.std(scores)) or 1.0
    return (scores - median) / spread


def mean_neighbour_distances(
    searcher: Searcher, k: int = DEFAULT_K, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, mean distance to the k nearest others, distance to the nearest) of every item."""
    if not 0 < k <= MAX_K:
        raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {k}")
    if len(searcher.collection) <= k:
        raise InvalidArgument(
            f"k={k} neighbours need more than {k} items; the collection holds "
            f"{len(searcher.collection)}"
        )
    all_ids, means, nearest = [], [], []
    with tqdm(
        total=len(searcher.collection), unit="item", desc="outliers", disable=not progress
    ) as bar:
        for ids, vectors in searcher.collection.iter_embeddings(searcher.layer):
            for start in range(0, len(ids), BLOCK):
                block = ids[start : start + BLOCK]
                found = searcher.search_vectors(np.asarray(vectors[start : start + BLOCK]), k + 1)
                for me, hits in zip(block, found, strict=True):
                    near = [hit.distance for hit in hits if hit.id != me][:k]
                    means.append(float(np.mean(near)) if near else np.inf)
                    nearest.append(near[0] if near else np.inf)
                all_ids.append(block)
                bar.update(len(block))
    return np.concatenate(all_ids), np.asarray(means), np.asarray(nearest)


def find_outliers(searcher: Searcher, k: int = DEFAULT_K, progress: bool = True) -> Outliers:
    """Rank every item of `searcher`'s collection by its mean distance to its `k` nearest
    others (on the searched layer), largest first."""
    ids, scores, nearest = mean_neighbour_distances(searcher, k, progress)
    order = np.argsort(-scores, kind="stable")
    z = robust_z(scores)
    return Outliers(ids[order], scores[order], nearest[order], z[order], k, searcher.layer)
