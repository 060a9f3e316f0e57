"""Request and response schemas: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

import marshmallow as ma
from flask_smorest.fields import Upload

from lookalike.index.vector_index import MAX_K


class Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class Filters(Strict):
    k = ma.fields.Integer(load_default=10, validate=ma.validate.Range(1, MAX_K))
    threshold = ma.fields.Float(
        load_default=None, allow_nan=False, validate=ma.validate.Range(0, None),
        metadata={"description": "Only neighbours within this distance (cosine distance 1-cos)."},
    )  # fmt: skip
    labels = ma.fields.List(ma.fields.String(), load_default=list)
    path_prefix = ma.fields.String(load_default=None)


class SearchJson(Filters):
    vector = ma.fields.List(
        ma.fields.Float(allow_nan=False), metadata={"description": "A query embedding."}
    )
    id = ma.fields.Integer(metadata={"description": "Search from a stored item."})
    spec_fingerprint = ma.fields.String(
        metadata={"description": "The embedder fingerprint the vector came from (checked)."}
    )

    @ma.validates_schema
    def one_query(self, data: dict, **kwargs) -> None:
        if ("vector" in data) == ("id" in data):
            raise ma.ValidationError("give exactly one of 'vector' and 'id'", "_schema")


class SearchForm(Filters):
    """Form fields beside uploaded images (labels: repeat the field)."""


class Images(ma.Schema):
    image = ma.fields.List(
        Upload(), required=True, metadata={"description": "One or more image files."}
    )


class ItemsForm(Strict):
    label = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 200))


class AddedItem(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    path = ma.fields.String()
    created = ma.fields.Boolean(
        metadata={"description": "False: these bytes were already an item."}
    )


class AddedItems(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(AddedItem))


class PredictForm(Strict):
    k = ma.fields.Integer(load_default=5, validate=ma.validate.Range(0, 100))
    embedding = ma.fields.Boolean(load_default=False)


class Hit(ma.Schema):
    id = ma.fields.Integer()
    distance = ma.fields.Float()
    similarity = ma.fields.Float(allow_none=True)
    path = ma.fields.String()
    label = ma.fields.String(allow_none=True)


class SearchResult(ma.Schema):
    query = ma.fields.String()
    hits = ma.fields.List(ma.fields.Nested(Hit))


class SearchResults(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(SearchResult))


class Embedding(ma.Schema):
    source = ma.fields.String()
    vector = ma.fields.List(ma.fields.Float())


class Embeddings(ma.Schema):
    spec_fingerprint = ma.fields.String()
    layer = ma.fields.String()
    embeddings = ma.fields.List(ma.fields.Nested(Embedding))


class Prediction(ma.Schema):
    source = ma.fields.String()
    label = ma.fields.String()
    probabilities = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float())
    neighbours = ma.fields.List(ma.fields.Nested(Hit))
    embedding = ma.fields.List(ma.fields.Float())


class Predictions(ma.Schema):
    classifier = ma.fields.String()
    predictions = ma.fields.List(ma.fields.Nested(Prediction))


class EmbedJob(Strict):
    collection = ma.fields.String(required=True)
    folder = ma.fields.String(required=True, metadata={"description": "A folder on the server."})
    labels_from_folders = ma.fields.Boolean(load_default=False)


class Labels(ma.fields.Field):
    """'folders', or an object mapping item ids to labels."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "folders" or (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            return value
        raise ma.ValidationError("labels is 'folders' or an object of item id -> label")


class TrainJob(Strict):
    name = ma.fields.String(required=True)
    model = ma.fields.String(
        load_default="logreg", validate=ma.validate.OneOf(["logreg", "linear-svm", "knn", "mlp"])
    )
    labels = Labels(load_default="folders")
    folds = ma.fields.Integer(load_default=5, validate=ma.validate.Range(2, 20))
    holdout = ma.fields.Float(
        validate=ma.validate.Range(0, 1, min_inclusive=False, max_inclusive=False)
    )
    overwrite = ma.fields.Boolean(load_default=False)


class Job(ma.Schema):
    id = ma.fields.String()
    kind = ma.fields.String()
    collection = ma.fields.String()
    state = ma.fields.String(metadata={"description": "queued, running, succeeded or failed"})
    done = ma.fields.Integer()
    total = ma.fields.Integer(allow_none=True)
    result = ma.fields.Dict(allow_none=True)
    error = ma.fields.Dict(allow_none=True)
    created = ma.fields.String()
    finished = ma.fields.String(allow_none=True)
