"""Request and response schemas: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

import marshmallow as ma
import numpy as np
from flask_smorest.fields import Upload
from werkzeug.datastructures import FileStorage

from lookalike.embedder.sources import MAX_LABEL_LENGTH
from lookalike.index.vector_index import MAX_K

MAX_ID = 2**63 - 1  # ids are int64


class Vector(ma.fields.List):
    """An embedding: a JSON array of finite numbers, loaded as one float32 array in one step.

    Documented as an array of numbers; validating element by element (`List(Float)`) cost
    ~13 ms a request for 1280 values, this costs ~0.05 ms.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(ma.fields.Float(allow_nan=False), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> np.ndarray:
        if not isinstance(value, list) or not value:
            raise ma.ValidationError("expected a non-empty array of numbers")
        if not set(map(type, value)) <= {float, int}:  # no bools, strings, lists (set: C speed)
            raise ma.ValidationError("expected an array of numbers")
        with np.errstate(over="ignore"):
            vector = np.array(value, dtype=np.float32)
        if not np.isfinite(vector).all():
            raise ma.ValidationError("expected finite numbers (float32 range, no NaN)")
        return vector

    def _serialize(self, value, attr, obj, **kwargs) -> list[float] | None:
        return None if value is None else np.asarray(value, dtype=np.float32).tolist()


class WholeNumber(ma.fields.Integer):
    """An integer: a number with a fraction is refused, not truncated (marshmallow's Integer reads
    1.5 as 1, so `{"id": 1.5}` searched from item 1). Integer strings stay valid: multipart form
    fields are strings."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class File(Upload):
    """An uploaded file part; a plain form field of the same name (no bytes to read) is refused."""

    def _deserialize(self, value, attr, data, **kwargs) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ma.ValidationError("expected a file part (with a filename), not a plain field")
        return value


class Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class Filters(Strict):
    k = WholeNumber(load_default=10, validate=ma.validate.Range(1, MAX_K))
    threshold = ma.fields.Float(
        load_default=None, allow_nan=False, validate=ma.validate.Range(0, None),
        metadata={"description": "Only neighbours within this distance (cosine distance 1-cos)."},
    )  # fmt: skip
    labels = ma.fields.List(ma.fields.String(), load_default=list)
    path_prefix = ma.fields.String(load_default=None)


class SearchJson(Filters):
    vector = Vector(metadata={"description": "A query embedding."})
    id = WholeNumber(
        validate=ma.validate.Range(0, MAX_ID),
        metadata={"description": "Search from a stored item."},
    )
    spec_fingerprint = ma.fields.String(
        metadata={"description": "The embedder fingerprint the vector came from (checked)."}
    )

    @ma.validates_schema
    def one_query(self, data: dict, **kwargs) -> None:
        if ("vector" in data) == ("id" in data):
            raise ma.ValidationError("give exactly one of 'vector' and 'id'", "_schema")


class Images(Strict):
    """Multipart: the `image` files (repeat the part for several)."""

    image = ma.fields.List(
        File(),
        required=True,
        validate=ma.validate.Length(min=1),
        metadata={"description": "One or more image files (JPEG, PNG, WebP, GIF, BMP, TIFF)."},
    )


class SearchUpload(Images, Filters):
    """Images and search options in one multipart body (labels: repeat the field)."""


class ItemsUpload(Images):
    label = ma.fields.String(load_default=None, validate=ma.validate.Length(1, MAX_LABEL_LENGTH))


class AddedItem(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    path = ma.fields.String()
    created = ma.fields.Boolean(
        metadata={"description": "False: these bytes were already an item."}
    )


class AddedItems(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(AddedItem))


class PredictUpload(Images):
    k = WholeNumber(load_default=5, validate=ma.validate.Range(0, 100))
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
    vector = Vector()


class Embeddings(ma.Schema):
    collection = ma.fields.String()
    spec_fingerprint = ma.fields.String()
    layer = ma.fields.String()
    embeddings = ma.fields.List(ma.fields.Nested(Embedding))


class PredictIds(Strict):
    ids = ma.fields.List(
        WholeNumber(validate=ma.validate.Range(0, MAX_ID)),
        required=True,
        validate=ma.validate.Length(1, 1000),
        metadata={"description": "Stored item ids: predicted from their cached embeddings."},
    )
    k = WholeNumber(load_default=5, validate=ma.validate.Range(0, 100))
    embedding = ma.fields.Boolean(load_default=False)


class EmbedUpload(Images):
    collection = ma.fields.String(
        load_default=None,
        metadata={
            "description": "The served collection whose embedder to use (a name from "
            "GET /v1/collections); required when the server serves several, may be left out "
            "when it serves one."
        },
    )


class Prediction(ma.Schema):
    source = ma.fields.String()
    label = ma.fields.String()
    probabilities = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float())
    neighbours = ma.fields.List(ma.fields.Nested(Hit))
    embedding = Vector()


class Predictions(ma.Schema):
    classifier = ma.fields.String()
    predictions = ma.fields.List(ma.fields.Nested(Prediction))


class EmbedJob(Strict):
    collection = ma.fields.String(required=True)
    folder = ma.fields.String(required=True, metadata={"description": "A folder on the server."})
    labels_from_folders = ma.fields.Boolean(load_default=False)
    prune = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "Remove the items of files no longer in the folder."},
    )


class Labels(ma.fields.Field):
    """'folders', or an object mapping item ids to labels."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "folders" or (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            return value
        raise ma.ValidationError("labels is 'folders' or an object of item id -> label")


class Layers(ma.fields.Field):
    """'auto', a cached layer's name, or a list of them (read side by side)."""

    def _deserialize(self, value, attr, data, **kwargs):
        names = [value] if isinstance(value, str) else value
        if (
            isinstance(names, list)
            and names
            and all(isinstance(name, str) and 0 < len(name) <= 200 for name in names)
        ):
            return value
        raise ma.ValidationError("layer is 'auto', a layer name or a list of layer names")


class TrainJob(Strict):
    name = ma.fields.String(required=True)
    model = ma.fields.String(
        load_default="logreg", validate=ma.validate.OneOf(["logreg", "linear-svm", "knn", "mlp"])
    )
    labels = Labels(load_default="folders")
    layer = Layers(
        load_default="auto",
        metadata={
            "description": "'auto' (choose among the collection's cached layers, and all of them "
            "side by side, by inner CV: the card records every candidate's score), a cached "
            "layer, or a list of them read side by side."
        },
    )
    folds = WholeNumber(load_default=5, validate=ma.validate.Range(2, 20))
    holdout = ma.fields.Float(
        validate=ma.validate.Range(0, 1, min_inclusive=False, max_inclusive=False)
    )
    split = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Train on one split only (train, val, ...: the items with a folder of "
            "that name on their path); the others stay unseen."
        },
    )
    overwrite = ma.fields.Boolean(load_default=False)


class Job(ma.Schema):
    id = ma.fields.String()
    kind = ma.fields.String()
    collection = ma.fields.String()
    state = ma.fields.String(
        metadata={
            "description": "queued, running, succeeded, failed, cancelled, or interrupted (its "
            "process died: resume it)"
        }
    )
    done = ma.fields.Integer()
    total = ma.fields.Integer(allow_none=True)
    result = ma.fields.Dict(allow_none=True)
    error = ma.fields.Dict(allow_none=True)
    cancel_requested = ma.fields.Boolean()
    created = ma.fields.String()
    started = ma.fields.String(allow_none=True)
    finished = ma.fields.String(allow_none=True)


class Problem(ma.Schema):
    """RFC 9457 problem details: every error answer (`application/problem+json`)."""

    class Meta:
        unknown = ma.INCLUDE  # extension members: `errors`, `collections`, ...

    type = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String()
    errors = ma.fields.Dict(metadata={"description": "Validation messages, by location and field."})


class Health(Strict):
    status = ma.fields.String(required=True)


class Readiness(Strict):
    status = ma.fields.String(required=True)
    collections = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())


class CollectionSummary(Strict):
    name = ma.fields.String(required=True)
    items = ma.fields.Integer(required=True)
    backbone = ma.fields.String(required=True)
    spec_fingerprint = ma.fields.String(required=True)
    dims = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())


class Collections(Strict):
    collections = ma.fields.List(ma.fields.Nested(CollectionSummary))


class CollectionDetail(Strict):
    name = ma.fields.String(required=True)
    items = ma.fields.Integer(required=True)
    spec = ma.fields.Dict(metadata={"description": "The embedder spec (backbone, weights, ...)."})
    spec_fingerprint = ma.fields.String(required=True)


class Item(Strict):
    id = ma.fields.Integer(required=True)
    path = ma.fields.String(required=True)
    sha256 = ma.fields.String(allow_none=True)
    width = ma.fields.Integer(allow_none=True)
    height = ma.fields.Integer(allow_none=True)
    bytes = ma.fields.Integer(allow_none=True)
    mtime_ns = ma.fields.Integer(allow_none=True)
    label = ma.fields.String(allow_none=True)


class Classifiers(Strict):
    classifiers = ma.fields.List(
        ma.fields.Dict(), metadata={"description": "Model cards: classes, metrics, embedder spec."}
    )


class Jobs(Strict):
    jobs = ma.fields.List(ma.fields.Nested(Job))


class DedupJson(Strict):
    threshold = ma.fields.Float(
        load_default=None, allow_nan=False, validate=ma.validate.Range(0, 2),
        metadata={"description": "Pairs within this distance are duplicates (default: calibrated "
                  "on the collection, stored and reused until its item count moves by 25 %)."},
    )  # fmt: skip
    clusters = WholeNumber(
        load_default=100, validate=ma.validate.Range(0, 10_000),
        metadata={"description": "List at most this many clusters, largest first."},
    )  # fmt: skip
    labels = ma.fields.List(
        ma.fields.String(), load_default=list,
        metadata={"description": "Only items with one of these labels."},
    )  # fmt: skip
    path_prefix = ma.fields.String(
        load_default=None, metadata={"description": "Only items whose path starts with this."}
    )


class Calibration(ma.Schema):
    threshold = ma.fields.Float()
    bound = ma.fields.String(
        metadata={"description": "What set the threshold. variants: the 99th percentile of copies' "
                  "distances; precision: lowered below that until at most 2% of pairs are distinct "
                  "items; no items / no distinct items: nothing to measure (threshold 0, not stored)."}
    )  # fmt: skip
    layer = ma.fields.String()
    items = ma.fields.Integer()
    images = ma.fields.Integer(metadata={"description": "Images copied with edits and embedded."})
    variants = ma.fields.Dict(ma.fields.String(), ma.fields.Float())
    distinct = ma.fields.Dict(ma.fields.String(), ma.fields.Float())
    by_edit = ma.fields.Dict(ma.fields.String(), ma.fields.Float())
    seconds = ma.fields.Float()
    created = ma.fields.String()
    reused = ma.fields.Boolean()
    stored = ma.fields.Boolean(
        metadata={"description": "false: the collection's disk (read-only or full) refused it, "
                  "so the next request calibrates again."}
    )  # fmt: skip


class ClusterItem(ma.Schema):
    id = ma.fields.Integer()
    path = ma.fields.String()
    label = ma.fields.String(allow_none=True)


class Cluster(ma.Schema):
    size = ma.fields.Integer()
    items = ma.fields.List(
        ma.fields.Nested(ClusterItem), metadata={"description": "The first 50 members, by id."}
    )


class DuplicatesFound(ma.Schema):
    threshold = ma.fields.Float()
    calibration = ma.fields.Nested(Calibration, allow_none=True)
    pairs = ma.fields.Integer(
        metadata={"description": "Pairs of items within the threshold (copies' pairs counted)."}
    )
    items_in_clusters = ma.fields.Integer()
    cluster_count = ma.fields.Integer()
    exact_groups = ma.fields.Integer(
        metadata={"description": "Groups of identical items (same vector or file) among them."}
    )
    clusters = ma.fields.List(ma.fields.Nested(Cluster))
