"""Likely label errors: out-of-sample class probabilities by cross-validation on the cached
features (the estimator and layer choice `lookalike train` uses), scored by cleanlab.

Each labelled item gets cleanlab's label quality score (low: the given label is unlikely) and the
label the classifier suggests; the ranking is by that score, lowest first. Confident learning
(`cleanlab.filter.find_label_issues`, pruned by the estimated noise rate per class) flags the
items it believes mislabelled. (Putting the flagged items first ranked fewer flipped labels in the
top 100 than the score alone, on four draws of flipped Fashion-MNIST labels: see the bench.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import cross_val_predict

from lookalike.classify.labels import LabelledItems, load_labels
from lookalike.classify.layer_choice import (
    AUTO,
    asked_layers,
    choose_layers,
    side_by_side,
    stratified_folds,
)
from lookalike.classify.models import DEFAULT_MODEL, make_model
from lookalike.classify.train import DEFAULT_FOLDS, smallest_fold
from lookalike.errors import InvalidArgument
from lookalike.store.collection import Collection

QUALITY = (
    "self_confidence"  # cleanlab's score (see the bench: flagged-first ranking beats it alone)
)
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass(frozen=True)
class LabelErrors:
    """Every labelled item ranked, most likely mislabelled first."""

    ids: np.ndarray  # ranked
    given: np.ndarray  # the label each item has
    suggested: np.ndarray  # the classifier's most likely label
    quality: np.ndarray  # cleanlab's label quality, 0 (surely wrong) to 1
    p_given: np.ndarray  # the out-of-sample probability of the given label
    p_suggested: np.ndarray
    flagged: np.ndarray  # bool: confident learning calls it an issue
    probabilities: np.ndarray  # (items, classes): out-of-sample, in `classes` order
    classes: np.ndarray
    layers: tuple[str, ...]
    model: str
    method: str  # how the probabilities were made, in words

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """The `top` first findings (every ranked item when None) as plain rows."""
        end = len(self.ids) if top is None else min(top, len(self.ids))
        return [
            {
                "rank": rank + 1,
                "id": int(self.ids[rank]),
                "label": str(self.given[rank]),
                "suggested": str(self.suggested[rank]),
                "quality": round(float(self.quality[rank]), 4),
                "p_label": round(float(self.p_given[rank]), 4),
                "p_suggested": round(float(self.p_suggested[rank]), 4),
                "flagged": bool(self.flagged[rank]),
            }
            for rank in range(end)
        ]


def out_of_sample_probabilities(
    collection: Collection,
    labelled: LabelledItems,
    model: str = DEFAULT_MODEL,
    layer: str | Sequence[str] | None = AUTO,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Each item's class probabilities from a model that never saw it (stratified k-fold CV),
    on `layer` (``auto``: chosen among the cached layers as `train` chooses); (probabilities in
    `labelled.classes` order, the layers read, the method in words)."""
    asked = asked_layers(layer, collection.spec.layers)
    targets = np.searchsorted(labelled.classes, labelled.labels.astype(str))
    by_layer = {
        one: collection.vectors(labelled.ids, one) for one in asked or collection.spec.layers
    }
    estimator = make_model(model, *smallest_fold(targets, folds, None), seed)
    cv = stratified_folds(targets, folds, seed)
    layers = tuple(asked or ())
    if asked is None:
        choice, _ = choose_layers(by_layer, targets, estimator, cv)
        layers = choice.chosen.layers
    features = side_by_side(by_layer, layers)
    probabilities = cross_val_predict(estimator, features, targets, cv=cv, method="predict_proba")
    method = f"{model} on {'+'.join(layers)}, stratified {cv.get_n_splits()}-fold CV"
    return probabilities, layers, method


def rank_label_errors(
    targets: np.ndarray, probabilities: np.ndarray, quality_method: str = QUALITY
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, quality, flagged): cleanlab's label quality of each item, confident learning's
    flags, and the ranking (by quality, lowest first)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if quality_method not in QUALITY_METHODS:
        raise InvalidArgument(
            f"unknown quality_method {quality_method!r}; known: {', '.join(QUALITY_METHODS)}"
        )
    quality = get_label_quality_scores(targets, probabilities, method=quality_method)
    # n_jobs=1: cleanlab's default forks a process pool, which can hang a threaded server
    flagged = find_label_issues(targets, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)
    order = np.argsort(quality, kind="stable")
    return order, quality, flagged


def find_label_errors(
    collection: Collection | str | Path,
    labels: str | Path | Mapping[int, str] | None = None,
    model: str = DEFAULT_MODEL,
    layer: str | Sequence[str] | None = AUTO,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    quality_method: str = QUALITY,
) -> LabelErrors:
    """Rank the labelled items of `collection` by how likely their label is wrong (module doc).

    `labels` as `train` takes them (None: the folder labels recorded at embed time).
    """
    if not isinstance(collection, Collection):
        collection = Collection.open(collection)
    labelled = load_labels(collection, labels)
    classes = np.asarray(labelled.classes, dtype=object)
    targets = np.searchsorted(labelled.classes, labelled.labels.astype(str))
    probabilities, layers, method = out_of_sample_probabilities(
        collection, labelled, model, layer, folds, seed
    )
    order, quality, flagged = rank_label_errors(targets, probabilities, quality_method)
    best = probabilities.argmax(axis=1)
    rows = np.arange(len(targets))
    return LabelErrors(
        ids=labelled.ids[order],
        given=classes[targets][order],
        suggested=classes[best][order],
        quality=quality[order],
        p_given=probabilities[rows, targets][order],
        p_suggested=probabilities[rows, best][order],
        flagged=flagged[order],
        probabilities=probabilities[order],
        classes=classes,
        layers=tuple(layers),
        model=model,
        method=method,
    )
