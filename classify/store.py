"""Classifiers on disk: ``DIR/classifiers/NAME/`` holds the skops model, a JSON card and figures.

Never pickle: skops loads only the types it trusts by default plus the few our estimators need
(an explicit list, not a module prefix), and the card
records the embedder spec the features came from, so a classifier is refused by a collection (or
an embedder) with another spec.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import skops.io as sio
from sklearn.pipeline import Pipeline

from lookalike.durable import RETIRED_PREFIX, acquire_lock, atomic_folder, disk_errors, fsync_path
from lookalike.embedder.spec import BackboneSpec
from lookalike.errors import ClassifierError, ClassifierExists, UnknownClassifier
from lookalike.store.collection import Collection

CLASSIFIERS = "classifiers"
MODEL_FILE = "model.skops"
CARD_FILE = "card.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Types our estimators hold beyond skops's own trusted defaults; anything else is refused.
EXTRA_TRUSTED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    }
)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ClassifierError(
            f"bad classifier name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def classifiers_root(collection: Collection) -> Path:
    return collection.path / CLASSIFIERS


def classifier_dir(collection: Collection, name: str) -> Path:
    return classifiers_root(collection) / check_name(name)


def list_classifiers(collection: Collection) -> list[dict[str, Any]]:
    """The card of every classifier saved in the collection, by name."""
    root = classifiers_root(collection)
    if not root.is_dir():
        return []
    return [
        json.loads((folder / CARD_FILE).read_text())
        for folder in sorted(root.iterdir())
        if NAME_PATTERN.match(folder.name) and (folder / CARD_FILE).is_file()
    ]


def check_free(collection: Collection, name: str, overwrite: bool) -> None:
    """Refuse to replace an existing classifier unless asked to (checked before any training)."""
    if classifier_dir(collection, name).exists() and not overwrite:
        raise ClassifierExists(
            f"a classifier named {name!r} already exists in {collection.path}; "
            "pass --overwrite to replace it"
        )


def save_classifier(
    collection: Collection,
    name: str,
    model: Pipeline,
    card: Mapping[str, Any],
    files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write model, card and extra files (e.g. a confusion matrix PNG) as one atomic swap."""
    target = classifier_dir(collection, name)
    root = target.parent
    with disk_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    with acquire_lock(root / ".lock"):
        check_free(collection, name, overwrite)
        with atomic_folder(target, replace=True) as staging:
            sio.dump(model, staging / MODEL_FILE)
            (staging / CARD_FILE).write_text(json.dumps(dict(card), indent=2) + "\n")
            for filename, data in (files or {}).items():
                (staging / filename).write_bytes(data)
    return target


def delete_classifier(collection: Collection, name: str) -> None:
    """Remove a classifier (renamed away first, so readers never see half of one)."""
    target = classifier_dir(collection, name)
    read_card(collection, name)  # unknown -> UnknownClassifier
    with acquire_lock(target.parent / ".lock"):
        retired = target.parent / f"{RETIRED_PREFIX}{name}-{uuid.uuid4().hex}"
        target.rename(retired)
        fsync_path(target.parent)
        shutil.rmtree(retired, ignore_errors=True)


def read_card(collection: Collection, name: str) -> dict[str, Any]:
    folder = classifier_dir(collection, name)
    if not (folder / CARD_FILE).is_file():
        known = [card["name"] for card in list_classifiers(collection)]
        raise UnknownClassifier(
            f"no classifier named {name!r} in {collection.path}; "
            f"known: {', '.join(known) or 'none (train one with `lookalike train`)'}"
        )
    return json.loads((folder / CARD_FILE).read_text())


def check_card_spec(card: Mapping[str, Any], spec: BackboneSpec) -> None:
    """Refuse a classifier whose features came from another embedder spec than `spec`."""
    spec.check_same(
        card.get("spec") or card["spec_fingerprint"],
        f"classifier {card['name']!r}",
        "the features it is asked to predict on",
        "train it again on these features",
    )


def load_classifier(
    collection: Collection, name: str, spec: BackboneSpec | None = None
) -> tuple[Pipeline, dict[str, Any]]:
    """The fitted pipeline and its card, after checking the embedder spec (the collection's by default)."""
    card = read_card(collection, name)
    check_card_spec(card, spec or collection.spec)
    path = classifier_dir(collection, name) / MODEL_FILE
    untrusted = sio.get_untrusted_types(file=path)
    refused = [kind for kind in untrusted if kind not in EXTRA_TRUSTED_TYPES]
    if refused:
        raise ClassifierError(
            f"{path} holds types lookalike does not trust ({', '.join(refused[:5])}); "
            "refusing to load it"
        )
    return sio.load(path, trusted=untrusted), card
