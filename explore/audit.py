"""One audit of a collection: likely label errors, outliers, and near-duplicates across splits.

Each part runs on what the collection holds already (cached features, the index); nothing is
embedded again except dedup's calibration copies, the first time. A part that the collection
cannot answer with the defaults (no labels, no splits, too few items) is skipped with the reason;
the same problem with inputs the caller gave is an error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from lookalike.classify.layer_choice import AUTO
from lookalike.classify.models import DEFAULT_MODEL
from lookalike.classify.train import DEFAULT_FOLDS
from lookalike.errors import InvalidArgument, LabelError
from lookalike.index.search import Searcher

from .label_errors import QUALITY, LabelErrors, find_label_errors
from .leakage import Leaks, Splits, find_leaks
from .outliers import DEFAULT_K, Outliers, find_outliers

PARTS = ("label_errors", "outliers", "leaks")
DEFAULT_TOP = 20
TABLE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("rank", pa.int64()),
        ("id", pa.int64()),
        ("path", pa.string()),
        ("label", pa.string()),
        (
            "score",
            pa.float64(),
        ),  # quality (label errors), mean distance (outliers), distance (leaks)
        ("flagged", pa.bool_()),
        ("suggested", pa.string()),
        ("other_id", pa.int64()),
        ("other_path", pa.string()),
        ("split", pa.string()),
        ("other_split", pa.string()),
    ]
)


@dataclass
class AuditReport:
    """The three rankings (None where skipped, with the reason in `skipped`), and their seconds."""

    collection: str
    items: int
    label_errors: LabelErrors | None = None
    outliers: Outliers | None = None
    leaks: Leaks | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict, repr=False)

    def path(self, item_id: int) -> str | None:
        return self.paths.get(int(item_id))

    def to_dict(self, top: int = DEFAULT_TOP) -> dict[str, Any]:
        """The `top` findings of each part (with paths), counts, and what was skipped and why."""
        out: dict[str, Any] = {"collection": self.collection, "items": self.items}
        if self.label_errors is not None:
            errors = self.label_errors
            out["label_errors"] = {
                "method": errors.method,
                "layers": list(errors.layers),
                "audited": len(errors),
                "flagged": int(errors.flagged.sum()),
                "top": [self._with_paths(row) for row in errors.rows(top)],
            }
        if self.outliers is not None:
            outliers = self.outliers
            out["outliers"] = {
                "k": outliers.k,
                "layer": outliers.layer,
                "audited": len(outliers.ids),
                "flagged": int(outliers.flagged.sum()),
                "top": [self._with_paths(row) for row in outliers.rows(top)],
            }
        if self.leaks is not None:
            leaks = self.leaks
            out["leaks"] = {
                "threshold": leaks.threshold,
                "threshold_from": "calibration" if leaks.calibration else "given",
                "splits": leaks.splits,
                "splits_from": leaks.source,
                "pairs": len(leaks),
                "top": [self._with_paths(row) for row in leaks.rows(top)],
            }
        out["skipped"] = dict(self.skipped)
        out["seconds"] = {part: round(s, 2) for part, s in self.seconds.items()}
        return out

    def _with_paths(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "path": self.path(row["id"])}
        if "other_id" in row:
            row["other_path"] = self.path(row["other_id"])
        return row

    def table(self) -> pa.Table:
        """Every ranked item of every part, one row each (a leak: one row a pair)."""
        rows = []
        if self.label_errors is not None:
            for row in self.label_errors.rows():
                rows.append(
                    {
                        **row,
                        "kind": "label_error",
                        "score": row["quality"],
                        "path": self.path(row["id"]),
                    }
                )
        if self.outliers is not None:
            for row in self.outliers.rows():
                rows.append({**row, "kind": "outlier", "path": self.path(row["id"])})
        if self.leaks is not None:
            for row in self.leaks.rows():
                extra = {"kind": "leak", "score": row["distance"], "flagged": True}
                rows.append({**self._with_paths(row), **extra})
        wanted = [{name: row.get(name) for name in TABLE_SCHEMA.names} for row in rows]
        return pa.Table.from_pylist(wanted, schema=TABLE_SCHEMA)


def audit_collection(
    collection_dir: str | Path,
    labels: str | Path | Mapping[int, str] | None = None,
    splits: Splits = None,
    parts: Sequence[str] = PARTS,
    layer: str | Sequence[str] | None = AUTO,
    model: str = DEFAULT_MODEL,
    folds: int = DEFAULT_FOLDS,
    k: int = DEFAULT_K,
    threshold: float | None = None,
    quality_method: str = QUALITY,
    searcher: Searcher | None = None,
    progress: bool = True,
    **calibration: Any,
) -> AuditReport:
    """Audit a collection (module doc). `labels` as `train` takes them (None: folder labels);
    `splits` as `leakage.item_splits` takes them (None: folders named train/test/val); `layer`
    and `model` are the label-error classifier's (``auto``: chosen as `train` chooses); `k` the
    outliers' neighbours; `threshold` the leaks' distance (None: calibrated and stored)."""
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise InvalidArgument(f"unknown audit parts {unknown}; known: {', '.join(PARTS)}")
    with contextlib.ExitStack() as opened:
        if searcher is None:
            searcher = opened.enter_context(contextlib.closing(Searcher.open(collection_dir)))
        report = _empty_report(searcher)
        if "label_errors" in parts:
            report.label_errors = _attempt(
                report,
                "label_errors",
                labels is not None,
                lambda: find_label_errors(
                    searcher.collection, labels, model, layer, folds, quality_method=quality_method
                ),
            )
        if "outliers" in parts and report.items <= k:
            report.skipped["outliers"] = f"{report.items} items: outliers need more than k={k}"
        elif "outliers" in parts:
            report.outliers = _attempt(
                report, "outliers", True, lambda: find_outliers(searcher, k, progress)
            )
        if "leaks" in parts:
            report.leaks = _attempt(
                report,
                "leaks",
                splits is not None,
                lambda: find_leaks(searcher, splits, threshold, progress, **calibration),
            )
    return report


def _empty_report(searcher: Searcher) -> AuditReport:
    items = searcher.collection.items(["id", "path"])
    paths = dict(zip(items["id"].to_pylist(), items["path"].to_pylist(), strict=True))
    return AuditReport(str(searcher.collection.path), len(items), paths=paths)


def _attempt(report: AuditReport, part: str, given: bool, work: Callable[[], Any]) -> Any:
    """`work()`, timed; a `LabelError` (no labels, no splits) skips the part, with the reason,
    unless the caller `given` the labels or splits that failed."""
    started = time.perf_counter()
    try:
        return work()
    except LabelError as error:
        if given:
            raise
        report.skipped[part] = str(error)
        return None
    finally:
        report.seconds[part] = time.perf_counter() - started
