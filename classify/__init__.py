"""Classifiers on cached features: train (scikit-learn, skops), predict, and the layer probe."""

from .labels import LabelledItems, load_labels
from .models import DEFAULT_MODEL, MODELS, make_model
from .predict import Prediction, Predictor
from .probe import ProbeReport, ProbeRow, probe, probe_collection, probe_features, probe_folder
from .store import delete_classifier, list_classifiers, load_classifier, read_card, save_classifier
from .train import Evaluation, TrainReport, train_classifier

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "Evaluation",
    "LabelledItems",
    "Prediction",
    "Predictor",
    "ProbeReport",
    "ProbeRow",
    "TrainReport",
    "delete_classifier",
    "list_classifiers",
    "load_classifier",
    "load_labels",
    "make_model",
    "probe",
    "probe_collection",
    "probe_features",
    "probe_folder",
    "read_card",
    "save_classifier",
    "train_classifier",
]
