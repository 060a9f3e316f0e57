"""Synthetic collections for the classifier tests: Gaussian clusters on one layer, noise on the other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import make_spec

from lookalike.embedder.spec import BackboneSpec
from lookalike.store.collection import Collection

CLASSES = ("cat", "dog", "fox")
WIDTH = 16


def synthetic_spec(**changes) -> BackboneSpec:
    return make_spec(dims={"embedding": WIDTH, "layer3": WIDTH}, normalize=False, **changes)


def separable(per_class: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """Gaussian clusters, one per class, 4 standard deviations apart along their own axis."""
    rng = np.random.default_rng(seed)
    vectors, labels = [], []
    for number, label in enumerate(CLASSES):
        centre = np.zeros(WIDTH, np.float32)
        centre[number] = 4.0
        vectors.append(centre + spread * rng.standard_normal((per_class, WIDTH), np.float32))
        labels += [label] * per_class
    return np.concatenate(vectors), labels


def make_collection(
    path: Path,
    labels: list[str | None],
    informative: np.ndarray,
    spec: BackboneSpec | None = None,
    layer3: np.ndarray | None = None,
) -> Collection:
    """A collection whose `embedding` layer holds `informative` and whose `layer3` holds noise."""
    collection = Collection.create(path, spec or synthetic_spec())
    noise = np.random.default_rng(99).standard_normal((len(labels), WIDTH)).astype(np.float32)
    noise = noise if layer3 is None else layer3
    rows = [
        {
            "path": f"/img/{n}.jpg",
            "sha256": f"{n:064x}",
            "width": 8,
            "height": 8,
            "bytes": 1,
            "mtime_ns": 1,
            "label": label,
        }
        for n, label in enumerate(labels)
    ]
    with collection.writer(shard_size=40) as writer:
        writer.add(rows, {"embedding": informative, "layer3": noise})
    return collection
