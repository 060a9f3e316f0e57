"""Classifiers of a collection: list them, predict with one (probabilities + neighbours)."""

from __future__ import annotations

from lookalike.classify import delete_classifier, list_classifiers

from .. import schemas
from ..auth import WRITE, requires
from ..json import Blueprint
from .common import read_uploads, served, settings

blp = Blueprint("classifiers", __name__, url_prefix="/v1/collections", description="Classifiers.")


@blp.route("/<name>/classifiers")
@blp.response(200, schemas.Classifiers())
def classifiers(name: str) -> dict:
    """The cards of the collection's classifiers (classes, metrics, embedder spec)."""
    return {"classifiers": list_classifiers(served().collection(name))}


@blp.route("/<name>/classifiers/<classifier>", methods=["DELETE"])
@blp.response(204)
@requires(WRITE)
def delete(name: str, classifier: str) -> None:
    """Delete a classifier (needs a write key)."""
    served().forget_predictor(name, classifier)
    delete_classifier(served().collection(name), classifier)


@blp.route("/<name>/classifiers/<classifier>/predict", methods=["POST"])
@blp.arguments(schemas.PredictUpload(), location="multipart")
@blp.response(200, schemas.Predictions)
def predict(form: dict, name: str, classifier: str) -> dict:
    """Class probabilities and labelled neighbours of uploaded images, in one answer."""
    predictor = served().predictor(name, classifier)
    images, names, pixels = read_uploads(form)
    with served().decode_budget.take(pixels):
        predictions = predictor.predict_images(
            images, form["k"], form["embedding"], settings().max_pixels
        )
    return _answer(classifier, names, predictions)


@blp.route("/<name>/classifiers/<classifier>/predict/items", methods=["POST"])
@blp.arguments(schemas.PredictIds())
@blp.response(200, schemas.Predictions)
def predict_items(body: dict, name: str, classifier: str) -> dict:
    """Predict stored items by id, from their cached embeddings (no image is sent or decoded)."""
    predictor = served().predictor(name, classifier)
    predictions = predictor.predict_ids(body["ids"], body["k"], body["embedding"])
    return _answer(classifier, [f"id {i}" for i in body["ids"]], predictions)


def _answer(classifier: str, sources: list[str], predictions: list) -> dict:
    out = []
    for source, prediction in zip(sources, predictions, strict=True):
        answer = prediction.to_dict()
        answer["source"] = source
        out.append(answer)
    return {"classifier": classifier, "predictions": out}
