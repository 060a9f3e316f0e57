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


class AuditPart(ma.Schema):
    """One part's method, counts and first findings (rows differ by part)."""

    class Meta:
        unknown = ma.INCLUDE

    top = ma.fields.List(ma.fields.Dict())


class AuditFound(ma.Schema):
    collection = ma.fields.String()
    items = ma.fields.Integer(metadata={"description": "Items when the audit ran."})
    label_errors = ma.fields.Nested(AuditPart)
    outliers = ma.fields.Nested(AuditPart)
    leaks = ma.fields.Nested(AuditPart)
    skipped = ma.fields.Dict(
        ma.fields.String(), ma.fields.String(), metadata={"description": "part -> why"}
    )
    seconds = ma.fields.Dict(ma.fields.String(), ma.fields.Float())
    request = ma.fields.Dict()
    created = ma.fields.String()
    stale = ma.fields.Boolean(
        metadata={"description": "Items were added or deleted since the audit ran."}
    )
