"""Training labels for a collection's items: from the sub-folders recorded at embed time, or a table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lookalike.embedder.sources import ImageSource
from lookalike.errors import LabelError
from lookalike.store.collection import Collection

FOLDERS = "folders"


@dataclass(frozen=True)
class LabelledItems:
    """Item ids with one label each, in collection order, and where the labels came from."""

    ids: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels.tolist()).items()))


def load_labels(
    collection: Collection, labels: str | Path | Mapping[int, str] | None = None
) -> LabelledItems:
    """The labelled items of `collection`, checked to be trainable.

    `labels` is None or ``"folders"`` (the labels recorded at embed time by
    ``--labels-from-folders``), or a CSV/parquet file with a ``label`` column and an ``id`` or
    ``path`` column; relative paths are taken from the table's own folder. Items without a label
    are left out; a label for an item the collection does not hold is an error. A mapping
    gives labels by item id directly (the HTTP API's inline labels).
    """
    if isinstance(labels, Mapping):
        found = _from_mapping(collection, labels)
    elif labels is None or str(labels) == FOLDERS:
        items = collection.items(["id", "label"])
        keep = pc.is_valid(items["label"])
        found = LabelledItems(
            items["id"].filter(keep).to_numpy(),
            np.asarray(items["label"].filter(keep).to_pylist(), dtype=object),
            "folder names recorded at embed time",
        )
        if not len(found):
            raise LabelError(
                f"no item in {collection.path} has a label: embed with labels from folders, "
                "or give a labels file (a CSV or parquet with id or path, and label)"
            )
    else:
        found = _from_table(collection, Path(labels))
    check_trainable(found)
    return found


def labelled_sources(
    collection: Collection, labels: str | Path | Mapping[int, str] | None = None
) -> list[ImageSource]:
    """The labelled items of `collection` as image files with their labels (see `load_labels`)."""
    found = load_labels(collection, labels)
    items = collection.items(["id", "path"])
    path_of = dict(zip(items["id"].to_pylist(), items["path"].to_pylist(), strict=True))
    return [
        ImageSource(Path(path_of[int(i)]), str(label))
        for i, label in zip(found.ids, found.labels, strict=True)
    ]


def _read_table(path: Path, column: str = "label") -> pa.Table:
    if not path.is_file():
        raise LabelError(f"no such {column}s file: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        return pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types={column: pa.string()})
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise LabelError(f"cannot read {column}s file {path}: {error}") from error


def _from_table(collection: Collection, path: Path) -> LabelledItems:
    return read_item_values(collection, path, "label")


def read_item_values(collection: Collection, path: Path, column: str) -> LabelledItems:
    """One value per item from `column` of a CSV/parquet with an ``id`` or ``path`` column
    (training labels; an audit's splits). Empty values are left out; an unknown item, or an
    item given two values, is a `LabelError`."""
    table = _read_table(path, column)
    if column not in table.column_names:
        raise LabelError(f"{path} has no {column!r} column (it has {table.column_names})")
    items = collection.items(["id", "path"])
    values = pc.cast(table[column], pa.string()).to_pylist()
    if "id" in table.column_names:
        wanted = [int(v) if v is not None else None for v in table["id"].to_pylist()]
        known = set(items["id"].to_pylist())
        ids = [v if v in known else None for v in wanted]
        keys = wanted
    elif "path" in table.column_names:
        by_path = dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))
        keys = table["path"].to_pylist()
        ids = [by_path.get(_resolve(key, path.parent)) if key else None for key in keys]
    else:
        raise LabelError(f"{path} needs an 'id' or a 'path' column (it has {table.column_names})")
    unknown = [str(key) for key, item in zip(keys, ids, strict=True) if item is None]
    if unknown:
        raise LabelError(
            f"{len(unknown)} of {len(keys)} {column}s in {path} name no item of {collection.path}, "
            f"e.g. {', '.join(unknown[:3])}"
        )
    chosen: dict[int, str] = {}
    for item, value in zip(ids, values, strict=True):
        if value is None or not str(value).strip():
            continue
        if chosen.setdefault(item, value) != value:
            raise LabelError(
                f"item {item} has two {column}s in {path}: {chosen[item]!r}, {value!r}"
            )
    order = sorted(chosen)
    return LabelledItems(
        np.asarray(order, np.int64),
        np.asarray([chosen[i] for i in order], dtype=object),
        str(path),
    )


def _from_mapping(collection: Collection, labels: Mapping[int, str]) -> LabelledItems:
    ids = np.asarray(sorted(int(i) for i in labels), np.int64)
    known = collection.items(["id"])["id"].to_numpy()
    unknown = ids[~np.isin(ids, known)]
    if len(unknown):
        raise LabelError(
            f"{len(unknown)} of {len(ids)} labels name no item of {collection.path}, "
            f"e.g. {', '.join(map(str, unknown[:3].tolist()))}"
        )
    return LabelledItems(
        ids, np.asarray([str(labels[int(i)]) for i in ids], dtype=object), "labels given inline"
    )


def _resolve(value: str, base: Path) -> str:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return str(candidate.resolve())


def check_trainable(found: LabelledItems) -> None:
    """At least two classes, and at least two examples of each (one cannot be validated)."""
    counts = found.counts()
    if len(counts) < 2:
        raise LabelError(
            f"a classifier needs at least 2 classes; the labels give {len(counts)} "
            f"({', '.join(counts) or 'none'})"
        )
    single = [label for label, count in counts.items() if count < 2]
    if single:
        raise LabelError(
            f"every class needs at least 2 examples; {len(single)} class(es) have one: "
            f"{', '.join(single[:5])}"
        )
