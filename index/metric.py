"""The metric rule, in one place: which metric a collection's vectors are searched with, and how a
vector store's raw score becomes the distance every result reports (smaller is closer).

- ``"ip"`` (inner product) on L2-normalised embeddings: the score is the cosine, the distance is
  the cosine distance ``1 - cos`` (0 = same direction, 2 = opposite).
- ``"l2"`` otherwise: the score is the squared Euclidean distance (FAISS's and Milvus's unit), the
  distance is the Euclidean distance.
"""

from __future__ import annotations

import faiss
import numpy as np

from lookalike.embedder.spec import BackboneSpec
from lookalike.errors import InvalidArgument

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def metric_for(spec: BackboneSpec) -> str:
    """Inner product on L2-normalised embeddings (cosine), L2 otherwise."""
    return "ip" if spec.normalize else "l2"


def worst_score(metric: str) -> float:
    """The score of no result at all (padding)."""
    return -np.inf if metric == "ip" else np.inf


def distances(metric: str, scores: np.ndarray) -> np.ndarray:
    """The distances (float64) of raw scores; see the module's docstring."""
    scores = np.asarray(scores, dtype=np.float64)
    if metric == "ip":
        return np.clip(1.0 - scores, 0.0, 2.0)
    return np.sqrt(np.maximum(scores, 0.0))


def pair_distances(metric: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distance of each row of `a` to the same row of `b`, as a search would report it."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    scores = np.sum(a * b, axis=1) if metric == "ip" else np.sum((a - b) ** 2, axis=1)
    return distances(metric, scores)


def radius(metric: str, threshold: float) -> float:
    """The raw-score radius of a range search for every result within distance `threshold`."""
    if not np.isfinite(threshold) or threshold < 0:
        raise InvalidArgument(f"threshold must be a distance >= 0, got {threshold}")
    if metric == "ip":
        if threshold > 2:
            raise InvalidArgument(f"a cosine distance is at most 2, got threshold {threshold}")
        return 1.0 - threshold - 1e-6  # FAISS keeps inner products above the radius
    return threshold**2
