"""Classifiers on cached features: train (scikit-learn, skops), predict, and the layer probe.

The names below load on first use (PEP 562), so a light import (`classify.models` for the CLI's
choices) does not pull in skops and FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "LabelledItems": "labels",
    "load_labels": "labels",
    "DEFAULT_MODEL": "models",
    "MODELS": "models",
    "make_model": "models",
    "Prediction": "predict",
    "Predictor": "predict",
    "ProbeReport": "probing",
    "ProbeRow": "probing",
    "probe": "probing",
    "probe_collection": "probing",
    "probe_features": "probing",
    "probe_folder": "probing",
    "delete_classifier": "store",
    "list_classifiers": "store",
    "load_classifier": "store",
    "read_card": "store",
    "save_classifier": "store",
    "Evaluation": "train",
    "TrainReport": "train",
    "train_classifier": "train",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value
