"""Train a classifier on a collection's cached embeddings: evaluate it, fit it, save it with a card."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.metrics import precision_recall_fscore_support as per_class_scores
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline

from lookalike import __version__
from lookalike.checks import TRAIN, check_ranges
from lookalike.errors import LabelError
from lookalike.store.collection import Collection

from .labels import LabelledItems, load_labels
from .models import DEFAULT_MODEL, make_model
from .plots import confusion_png
from .store import check_free, check_name, save_classifier

CONFUSION_FILE = "confusion.png"
DEFAULT_FOLDS = 5


@dataclass
class Evaluation:
    """Out-of-sample scores: from stratified k-fold CV, or from one held-out split."""

    method: str
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
        }


@dataclass
class TrainReport:
    card: dict[str, Any]
    evaluation: Evaluation
    path: Path

    def summary(self) -> str:
        card, scores = self.card, self.evaluation
        lines = [
            f"classifier {card['name']!r} ({card['model']}, layer {'+'.join(card['layers'])}) trained on "
            f"{card['n_train']} items, {len(card['classes'])} classes, "
            f"in {card['fit_seconds']:.2f} s from cached features",
            f"{scores.method}: accuracy {scores.accuracy:.3f}, macro-F1 {scores.macro_f1:.3f}",
            f"{'class':<20} {'precision':>9} {'recall':>7} {'support':>8}",
        ]
        for label, row in scores.per_class.items():
            lines.append(
                f"{label[:20]:<20} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                f"{row['support']:>8d}"
            )
        lines.append(f"saved to {self.path} (confusion matrix: {self.path / CONFUSION_FILE})")
        return "\n".join(lines)


def evaluate(
    model: Pipeline,
    features: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    folds: int = DEFAULT_FOLDS,
    holdout: float | None = None,
    seed: int = 0,
) -> Evaluation:
    """Scores on data the model did not see: stratified k-fold CV, or a stratified held-out split."""
    check_ranges({"folds": folds, "holdout": holdout, "seed": seed}, TRAIN)
    if holdout is not None:
        fit_rows, test_rows = train_test_split(
            np.arange(len(targets)), test_size=holdout, stratify=targets, random_state=seed
        )
        fitted = clone(model).fit(features[fit_rows], targets[fit_rows])
        truth, predicted = targets[test_rows], fitted.predict(features[test_rows])
        method = f"held-out {holdout:.0%} ({len(test_rows)} items)"
    else:
        splits = min(folds, int(np.bincount(targets).min()))
        if splits < 2:
            raise LabelError("cross-validation needs at least 2 examples of every class")
        cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
        truth, predicted = targets, cross_val_predict(model, features, targets, cv=cv)
        method = f"stratified {splits}-fold CV"
    labels = np.arange(len(classes))
    precision, recall, f1, support = per_class_scores(
        truth, predicted, labels=labels, zero_division=0
    )
    return Evaluation(
        method=method,
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        per_class={
            label: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for label, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        confusion=confusion_matrix(truth, predicted, labels=labels),
    )


def train_classifier(
    collection: Collection | str | Path,
    name: str,
    labels: str | Path | Mapping[int, str] | None = None,
    model: str = DEFAULT_MODEL,
    layer: str | Sequence[str] | None = None,
    folds: int = DEFAULT_FOLDS,
    holdout: float | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> TrainReport:
    """Fit `model` on the cached `layer` embeddings of the labelled items; evaluate, then save.

    Several layers are read side by side (their vectors concatenated): stages of one backbone
    often transfer better together than any one alone.

    The backbone never runs: features come from the collection's shards.
    """
    check_ranges({"folds": folds, "holdout": holdout, "seed": seed}, TRAIN)
    if not isinstance(collection, Collection):
        collection = Collection.open(collection)
    check_name(name)
    check_free(collection, name, overwrite)
    layers = [layer] if isinstance(layer, str) else list(layer or collection.spec.layers[:1])
    labelled = load_labels(collection, labels)
    classes = labelled.classes
    targets = np.searchsorted(classes, labelled.labels.astype(str))
    started = time.perf_counter()
    features = np.hstack([collection.vectors(labelled.ids, one) for one in layers])
    load_seconds = time.perf_counter() - started

    smallest_fit, fold_min_count = _smallest_fold(targets, folds, holdout)
    estimator = make_model(model, smallest_fit, fold_min_count, seed)
    evaluation = evaluate(estimator, features, targets, classes, folds, holdout, seed)

    started = time.perf_counter()
    fitted = clone(estimator).fit(features, targets)
    fit_seconds = time.perf_counter() - started
    card = _card(name, model, fitted, layers, collection, labelled, evaluation)
    card.update(load_seconds=round(load_seconds, 3), fit_seconds=round(fit_seconds, 3))
    figure = confusion_png(
        evaluation.confusion,
        classes,
        f"{name}: {model} on {'+'.join(layers)} ({evaluation.method}, acc {evaluation.accuracy:.3f})",
    )
    path = save_classifier(
        collection, name, fitted, card, {CONFUSION_FILE: figure}, overwrite=overwrite
    )
    return TrainReport(card=card, evaluation=evaluation, path=path)


def _smallest_fold(targets: np.ndarray, folds: int, holdout: float | None) -> tuple[int, int]:
    """Rows, and fewest examples of a class, that the model is fitted on during evaluation."""
    counts = np.bincount(targets)
    if holdout is not None:
        keep = 1 - holdout
        return int(len(targets) * keep), int(counts.min() * keep)
    splits = max(2, min(folds, int(counts.min())))
    return len(targets) - -(-len(targets) // splits), int(counts.min() - -(-counts.min() // splits))


def _card(
    name: str,
    model: str,
    fitted: Pipeline,
    layers: list[str],
    collection: Collection,
    labelled: LabelledItems,
    evaluation: Evaluation,
) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "estimator": " -> ".join(type(step).__name__ for _, step in fitted.steps),
        "classes": labelled.classes,
        "class_counts": labelled.counts(),
        "n_train": len(labelled),
        "labels_source": labelled.source,
        "layer": layers[0],  # the neighbours' layer
        "layers": layers,
        "metrics": evaluation.to_dict(),
        "spec": collection.spec.to_dict(),
        "spec_fingerprint": collection.spec.fingerprint(),
        "collection": str(collection.path),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": {"lookalike": __version__, "scikit-learn": sklearn.__version__},
    }
