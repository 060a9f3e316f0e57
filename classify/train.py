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
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline

from lookalike import __version__
from lookalike.checks import TRAIN, check_ranges
from lookalike.errors import InvalidArgument
from lookalike.store.collection import Collection

from .labels import LabelledItems, check_split, load_labels, split_label_warning
from .layer_choice import (
    AUTO,
    LayerChoice,
    asked_layers,
    choose_fit_predict,
    choose_layers,
    nested_predictions,
    side_by_side,
    stratified_folds,
)
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
    choice: LayerChoice | None = None  # the candidates' scores, with layer ``auto``

    def summary(self) -> str:
        card, scores = self.card, self.evaluation
        lines = [self.choice.table()] if self.choice else []
        split = f" of split {card['split']!r}" if card.get("split") else ""
        lines += [
            f"classifier {card['name']!r} ({card['model']}, layer {'+'.join(card['layers'])}) trained on "
            f"{card['n_train']} items{split}, {len(card['classes'])} classes, "
            f"in {card['fit_seconds']:.2f} s from cached features",
            f"{scores.method}: accuracy {scores.accuracy:.3f}, macro-F1 {scores.macro_f1:.3f} "
            f"(majority-class baseline {card['majority_baseline']:.3f})",
            f"{'class':<20} {'precision':>9} {'recall':>7} {'support':>8}",
        ]
        for label, row in scores.per_class.items():
            lines.append(
                f"{label[:20]:<20} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                f"{row['support']:>8d}"
            )
        lines.append(f"saved to {self.path} (confusion matrix: {self.path / CONFUSION_FILE})")
        lines += [f"warning: {warning}" for warning in card["warnings"]]
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
        fit_rows, test_rows = _held_out(targets, holdout, seed)
        fitted = clone(model).fit(features[fit_rows], targets[fit_rows])
        truth, predicted = targets[test_rows], fitted.predict(features[test_rows])
        method = f"held-out {holdout:.0%} ({len(test_rows)} items)"
    else:
        cv = stratified_folds(targets, folds, seed)
        truth, predicted = targets, cross_val_predict(model, features, targets, cv=cv)
        method = f"stratified {cv.get_n_splits()}-fold CV"
    return scores(truth, predicted, classes, method)


def evaluate_auto(
    model: Pipeline,
    by_layer: Mapping[str, np.ndarray],
    targets: np.ndarray,
    classes: list[str],
    folds: int = DEFAULT_FOLDS,
    holdout: float | None = None,
    seed: int = 0,
    nested: bool = False,
) -> tuple[LayerChoice, Evaluation]:
    """Choose the layer(s) by inner CV (`layer_choice`) and score the choice: on the held-out
    split (chosen on the rest), by nested CV, or by its selection score, labelled as such."""
    if holdout is not None:
        fit_rows, test_rows = _held_out(targets, holdout, seed)
        choice, predicted = choose_fit_predict(
            by_layer, targets, model, fit_rows, test_rows, folds, seed
        )
        method = f"held-out {holdout:.0%} ({len(test_rows)} items; layer chosen by CV on the rest)"
        return choice, scores(targets[test_rows], predicted, classes, method)
    cv = stratified_folds(targets, folds, seed)
    choice, predicted = choose_layers(by_layer, targets, model, cv)
    method, count = f"stratified {cv.get_n_splits()}-fold CV", len(choice.candidates)
    if nested:
        predicted = nested_predictions(by_layer, targets, model, cv, seed)
        method = f"nested {method} (the layer chosen inside each fold, among {count})"
    elif count > 1:
        method += f", selection score (these folds chose the layer among {count})"
    return choice, scores(targets, predicted, classes, method)


def _held_out(targets: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return train_test_split(
        np.arange(len(targets)), test_size=holdout, stratify=targets, random_state=seed
    )


def scores(truth: np.ndarray, predicted: np.ndarray, classes: list[str], method: str) -> Evaluation:
    """Accuracy, macro-F1, per-class scores and the confusion matrix of out-of-sample predictions."""
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
    layer: str | Sequence[str] | None = AUTO,
    folds: int = DEFAULT_FOLDS,
    holdout: float | None = None,
    overwrite: bool = False,
    seed: int = 0,
    nested: bool = False,
    split: str | None = None,
) -> TrainReport:
    """Fit `model` on the cached embeddings of the labelled items; evaluate, then save.

    `split` (``train``, ``val``, ...) keeps to the items whose path has a folder naming that
    split (`labels.in_split`): a train/test tree's test items are then never trained on.

    `layer` ``auto`` (the default, or None) chooses among the collection's cached layers and all
    of them side by side by inner stratified CV (`layer_choice`), and records every candidate's
    score in the card; `nested` scores that choice by nested CV. Named layers (several are read
    side by side) are used as given. The backbone never runs: features come from the shards.
    """
    check_ranges({"folds": folds, "holdout": holdout, "seed": seed}, TRAIN)
    if not isinstance(collection, Collection):
        collection = Collection.open(collection)
    check_name(name)
    check_free(collection, name, overwrite)
    asked = asked_layers(layer, collection.spec.layers)
    if nested and (asked is not None or holdout is not None):
        raise InvalidArgument("nested CV scores the choice of layer 'auto', without a holdout")
    labelled = load_labels(collection, labels, split)
    targets = np.searchsorted(labelled.classes, labelled.labels.astype(str))
    started = time.perf_counter()
    by_layer = {
        one: collection.vectors(labelled.ids, one) for one in asked or collection.spec.layers
    }
    load_seconds = time.perf_counter() - started

    depth = 1 + (asked is None and (nested or holdout is not None))  # CV inside CV or a split
    estimator = make_model(model, *smallest_fold(targets, folds, holdout, depth), seed)
    if asked is None:
        choice, evaluation = evaluate_auto(
            estimator, by_layer, targets, labelled.classes, folds, holdout, seed, nested
        )
        layers = list(choice.chosen.layers)
    else:
        features = side_by_side(by_layer, asked)
        evaluation = evaluate(estimator, features, targets, labelled.classes, folds, holdout, seed)
        choice, layers = None, asked
    started = time.perf_counter()
    fitted = clone(estimator).fit(side_by_side(by_layer, layers), targets)
    card = _card(name, model, fitted, layers, collection, labelled, evaluation, choice)
    card.update(
        load_seconds=round(load_seconds, 3), fit_seconds=round(time.perf_counter() - started, 3)
    )
    card["split"] = None if split is None else check_split(split)
    path = _save(collection, fitted, card, evaluation, overwrite)
    return TrainReport(card=card, evaluation=evaluation, path=path, choice=choice)


def majority_baseline(labelled: LabelledItems) -> float:
    """The accuracy of always answering the most common class: what a classifier must beat."""
    return max(labelled.counts().values()) / len(labelled)


def training_warnings(labelled: LabelledItems, evaluation: Evaluation) -> list[str]:
    """Labels that name splits rather than classes; an accuracy no better than the baseline."""
    warnings = [warning] if (warning := split_label_warning(labelled.classes)) else []
    baseline = majority_baseline(labelled)
    if evaluation.accuracy < baseline:
        counts = labelled.counts()
        common = max(counts, key=counts.__getitem__)
        warnings.append(
            f"accuracy {evaluation.accuracy:.3f} ({evaluation.method}) is below the majority-class "
            f"baseline {baseline:.3f} (always answering {common!r}): the features do not separate "
            "these labels; check what the labels mean"
        )
    return warnings


def _save(
    collection: Collection,
    fitted: Pipeline,
    card: dict[str, Any],
    evaluation: Evaluation,
    overwrite: bool,
) -> Path:
    """The classifier, its card and its confusion matrix, in the collection."""
    figure = confusion_png(
        evaluation.confusion,
        card["classes"],
        f"{card['name']}: {card['model']} on {'+'.join(card['layers'])} "
        f"({evaluation.method.split(',')[0]}, acc {evaluation.accuracy:.3f})",
    )
    files = {CONFUSION_FILE: figure}
    return save_classifier(collection, card["name"], fitted, card, files, overwrite=overwrite)


def smallest_fold(
    targets: np.ndarray, folds: int, holdout: float | None, depth: int = 1
) -> tuple[int, int]:
    """Rows, and fewest examples of a class, that the model is fitted on during evaluation:
    after the held-out split and/or `depth` levels of CV (2 when one chooses the layer inside
    another, or inside the split's training part)."""
    rows, fewest = len(targets), int(np.bincount(targets).min())
    if holdout is not None:
        keep = 1 - holdout
        rows, fewest, depth = int(rows * keep), int(fewest * keep), depth - 1
    for _ in range(depth):
        splits = max(2, min(folds, fewest))
        rows, fewest = rows - -(-rows // splits), fewest - -(-fewest // splits)
    return rows, fewest


def _card(
    name: str,
    model: str,
    fitted: Pipeline,
    layers: list[str],
    collection: Collection,
    labelled: LabelledItems,
    evaluation: Evaluation,
    choice: LayerChoice | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "estimator": " -> ".join(type(step).__name__ for _, step in fitted.steps),
        "classes": labelled.classes,
        "class_counts": labelled.counts(),
        "n_train": len(labelled),
        "labels_source": labelled.source,
        # the neighbours' layer: with `auto`, the collection's searched one (its first)
        "layer": collection.spec.layers[0] if choice else layers[0],
        "layers": layers,  # what the classifier reads, side by side
        "layer_choice": choice.to_dict() if choice else None,
        "metrics": evaluation.to_dict(),
        "majority_baseline": round(majority_baseline(labelled), 4),
        "warnings": training_warnings(labelled, evaluation),
        "spec": collection.spec.to_dict(),
        "spec_fingerprint": collection.spec.fingerprint(),
        "collection": str(collection.path),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": {"lookalike": __version__, "scikit-learn": sklearn.__version__},
    }
