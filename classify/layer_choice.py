"""``layer="auto"``: which cached layer(s) a classifier reads, chosen by inner cross-validation.

The candidates are each layer the collection caches and, when it caches several, all of them side
by side. Each is scored by the same estimator under the same stratified folds (one seed) as the
evaluation; the best wins (a tie goes to the narrower). Every candidate's score goes to the report
and the classifier card.

The winner's score is a *selection score*: the folds that chose it also scored it, so it is a
little optimistic (as the probe's best row is). ``nested=True`` chooses inside each outer fold
instead, which is honest and costs (folds + 1) times the fits.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from lookalike.errors import InvalidArgument, LabelError, UnknownLayer

AUTO = "auto"


@dataclass(frozen=True)
class Candidate:
    """One candidate feature set and its cross-validated accuracy."""

    layers: tuple[str, ...]
    dim: int
    accuracy: float
    accuracy_std: float

    @property
    def key(self) -> str:
        return "+".join(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "key": self.key,
            "dim": self.dim,
            "accuracy": round(self.accuracy, 4),
            "accuracy_std": round(self.accuracy_std, 4),
        }


@dataclass
class LayerChoice:
    """The candidates, best first, scored by stratified `folds`-fold CV over `rows` items."""

    candidates: list[Candidate]
    folds: int
    rows: int

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": AUTO,
            "chosen": list(self.chosen.layers),
            "scored_by": f"stratified {self.folds}-fold CV over {self.rows} items",
            "candidates": [candidate.to_dict() for candidate in self.candidates],
        }

    def table(self) -> str:
        lines = [f"{'candidate (--layer auto)':<44} {'dim':>5} {'CV acc':>7} {'± std':>6}"]
        for candidate in self.candidates:
            mark = " <- chosen" if candidate is self.chosen else ""
            lines.append(
                f"{candidate.key[:44]:<44} {candidate.dim:>5} {candidate.accuracy:>7.3f} "
                f"{candidate.accuracy_std:>6.3f}{mark}"
            )
        return "\n".join(lines)


def asked_layers(layer: str | Sequence[str] | None, cached: Sequence[str]) -> list[str] | None:
    """The layers a caller named (each one of the `cached`), or None for ``auto`` (the default)."""
    names = [layer] if isinstance(layer, str) else list(layer or [AUTO])
    if AUTO in names:
        if len(names) > 1:
            raise InvalidArgument(f"layer {AUTO!r} chooses among the cached layers: give it alone")
        return None
    for name in names:
        if name not in cached:
            close = difflib.get_close_matches(name, cached, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else "."
            raise UnknownLayer(
                f"layer {name!r} is not cached in this collection{hint} It caches "
                f"{', '.join(cached)} (or give {AUTO!r} to choose among them)"
            )
    return names


def candidate_sets(layers: Sequence[str]) -> list[tuple[str, ...]]:
    """Each layer alone, then (for several) all of them side by side."""
    alone = [(layer,) for layer in layers]
    return [*alone, tuple(layers)] if len(layers) > 1 else alone


def stratified_folds(targets: np.ndarray, folds: int, seed: int) -> StratifiedKFold:
    """The folds every score uses: `folds`, fewer when a class has fewer examples, shuffled."""
    splits = min(folds, int(np.bincount(targets).min()))
    if splits < 2:
        raise LabelError("cross-validation needs at least 2 examples of every class")
    return StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)


def side_by_side(by_layer: Mapping[str, np.ndarray], layers: Sequence[str]) -> np.ndarray:
    return np.hstack([by_layer[layer] for layer in layers])


def choose_layers(
    by_layer: Mapping[str, np.ndarray],
    targets: np.ndarray,
    estimator: Pipeline,
    cv: StratifiedKFold,
) -> tuple[LayerChoice, np.ndarray]:
    """Score every candidate by `cv`; the choice, and the winner's out-of-fold predictions."""
    scored = []
    for layers in candidate_sets(list(by_layer)):
        features = side_by_side(by_layer, layers)
        predicted = cross_val_predict(estimator, features, targets, cv=cv)
        per_fold = [
            float(np.mean(predicted[test] == targets[test]))
            for _, test in cv.split(features, targets)
        ]
        accuracy = float(np.mean(predicted == targets))
        candidate = Candidate(layers, features.shape[1], accuracy, float(np.std(per_fold)))
        scored.append((candidate, predicted))
    scored.sort(key=lambda pair: (-pair[0].accuracy, pair[0].dim))
    choice = LayerChoice([candidate for candidate, _ in scored], cv.get_n_splits(), len(targets))
    return choice, scored[0][1]


def nested_predictions(
    by_layer: Mapping[str, np.ndarray],
    targets: np.ndarray,
    estimator: Pipeline,
    outer: StratifiedKFold,
    seed: int,
) -> np.ndarray:
    """Out-of-fold predictions with the layer chosen inside each outer training fold (its own
    inner stratified CV, as many folds as the outer one): an honest score of ``auto``."""
    predicted = np.empty_like(targets)
    for fit, test in outer.split(targets, targets):
        if np.bincount(targets[fit], minlength=targets.max() + 1).min() < 2:
            raise LabelError(
                "nested CV needs at least 2 examples of every class in each outer training "
                "fold: label more, or score the choice without nesting"
            )
        _, predicted[test] = choose_fit_predict(
            by_layer, targets, estimator, fit, test, outer.get_n_splits(), seed
        )
    return predicted


def choose_fit_predict(
    by_layer: Mapping[str, np.ndarray],
    targets: np.ndarray,
    estimator: Pipeline,
    fit: np.ndarray,
    test: np.ndarray,
    folds: int,
    seed: int,
) -> tuple[LayerChoice, np.ndarray]:
    """Choose the layer(s) by inner CV on the `fit` rows only, fit on them, predict the `test`
    rows: the choice, and those predictions (an outer fold, or a held-out split)."""
    inner = stratified_folds(targets[fit], folds, seed)
    chosen_on = {layer: vectors[fit] for layer, vectors in by_layer.items()}
    choice, _ = choose_layers(chosen_on, targets[fit], estimator, inner)
    features = side_by_side(by_layer, choice.chosen.layers)
    fitted = clone(estimator).fit(features[fit], targets[fit])
    return choice, fitted.predict(features[test])
