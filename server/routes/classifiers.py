"""Classifiers of a collection: list them, predict with one (probabilities + neighbours)."""

from __future__ import annotations

from lookalike.classify import list_classifiers

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
    served().live(name).delete_classifier(classifier)


@blp.route("/<name>/classifiers/<classifier>/predict", methods=["POST"])
@blp.arguments(schemas.PredictUpload(), location="multipart")
@blp.response(200, schemas.Predictions)
def predict(form: dict, name: str, classifier: str) -> dict:
    """Class probabilities and labelled neighbours of uploaded images, in one answer."""
    library = served().live(name)
    library.predictor(classifier)  # an unknown classifier: 404 before any image is read
    images, names, pixels = read_uploads(form)
    with served().decode_budget.take(pixels):
        predictions = library.predict_images(
            classifier, images, form["k"], form["embedding"], settings().max_pixels
        )
    return _answer(classifier, names, predictions)


@blp.route("/<name>/classifiers/<classifier>/predict/items", methods=["POST"])
@blp.arguments(schemas.PredictIds())
@blp.response(200, schemas.Predictions)
def predict_items(body: dict, name: str, classifier: str) -> dict:
    """Predict stored items by id, from their cached embeddings (no image is sent or decoded)."""
    library = served().live(name)
    predictions = library.predict_ids(classifier, body["ids"], body["k"], body["embedding"])
    return _answer(classifier, [f"id {i}" for i in body["ids"]], predictions)


def _answer(classifier: str, sources: list[str], predictions: list) -> dict:
    out = []
    for source, prediction in zip(sources, predictions, strict=True):
        answer = prediction.to_dict()
        answer["source"] = source
        out.append(answer)
    return {"classifier": classifier, "predictions": out}
