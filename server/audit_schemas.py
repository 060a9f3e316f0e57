"""Request and response schemas of the audit routes (`GET`/`POST .../audit`)."""

from __future__ import annotations

import marshmallow as ma

from .schemas import Labels, Layers, Strict, WholeNumber

PARTS = ("label_errors", "outliers", "leaks")


class Splits(Labels):
    """'folders', or an object mapping item ids to splits."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return super()._deserialize(value, attr, data, **kwargs)
        except ma.ValidationError:
            raise ma.ValidationError(
                "splits is 'folders' or an object of item id -> split"
            ) from None


class AuditQuery(Strict):
    top = WholeNumber(
        load_default=20, validate=ma.validate.Range(0, 100),
        metadata={"description": "Findings listed a part, first first (at most 100 are stored)."},
    )  # fmt: skip


class AuditJob(Strict):
    parts = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(PARTS)),
        load_default=lambda: list(PARTS),
        validate=ma.validate.Length(min=1),
        metadata={"description": "Which parts to run (default: all three)."},
    )
    labels = Labels(
        load_default="folders",
        metadata={"description": "'folders' (recorded at embed time) or item id -> label."},
    )
    splits = Splits(
        load_default="folders",
        metadata={"description": "'folders' (train, test, val on each path) or item id -> split."},
    )
    layer = Layers(
        load_default="auto",
        metadata={"description": "The label-error classifier's layer(s); 'auto' as in training."},
    )
    model = ma.fields.String(
        load_default="logreg", validate=ma.validate.OneOf(["logreg", "linear-svm", "knn", "mlp"])
    )
    k = WholeNumber(
        load_default=10, validate=ma.validate.Range(1, 100),
        metadata={"description": "Outliers: neighbours whose mean distance scores an item."},
    )  # fmt: skip
    threshold = ma.fields.Float(
        load_default=None, allow_nan=False, validate=ma.validate.Range(0, 2),
        metadata={"description": "Leaks: pairs within this distance (default: calibrated)."},
    )  # fmt: skip


class LabelErrors(ma.Schema):
    method = ma.fields.String(metadata={"description": "How the probabilities were made."})
    layers = ma.fields.List(ma.fields.String())
    audited = ma.fields.Integer(metadata={"description": "Labelled items ranked."})
    flagged = ma.fields.Integer(metadata={"description": "Called issues by confident learning."})
    top = ma.fields.List(
        ma.fields.Dict(),
        metadata={"description": "rank, id, path, label, suggested, quality, p_label, "
                  "p_suggested, flagged; most likely wrong first."},
    )  # fmt: skip


class Outliers(ma.Schema):
    k = ma.fields.Integer()
    layer = ma.fields.String()
    audited = ma.fields.Integer()
    flagged = ma.fields.Integer(metadata={"description": "Robust z-score above 3.5."})
    top = ma.fields.List(
        ma.fields.Dict(),
        metadata={"description": "rank, id, path, score (mean distance to the k nearest), "
                  "nearest, z, flagged; largest first."},
    )  # fmt: skip


class Leaks(ma.Schema):
    threshold = ma.fields.Float()
    threshold_from = ma.fields.String(metadata={"description": "calibration or given"})
    splits = ma.fields.Dict(ma.fields.String(), ma.fields.Integer())
    splits_from = ma.fields.String()
    pairs = ma.fields.Integer()
    top = ma.fields.List(
        ma.fields.Dict(),
        metadata={"description": "rank, id, path, split, other_id, other_path, other_split, "
                  "distance; closest first."},
    )  # fmt: skip


class AuditFound(ma.Schema):
    collection = ma.fields.String()
    items = ma.fields.Integer(metadata={"description": "Items when the audit ran."})
    label_errors = ma.fields.Nested(LabelErrors)
    outliers = ma.fields.Nested(Outliers)
    leaks = ma.fields.Nested(Leaks)
    skipped = ma.fields.Dict(
        ma.fields.String(), ma.fields.String(), metadata={"description": "part -> why"}
    )
    seconds = ma.fields.Dict(ma.fields.String(), ma.fields.Float())
    request = ma.fields.Dict()
    created = ma.fields.String()
    stale = ma.fields.Boolean(
        metadata={"description": "Items were added or deleted since the audit ran."}
    )
