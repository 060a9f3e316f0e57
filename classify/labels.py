"""Training labels for a collection's items: from the sub-folders recorded at embed time, or a table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lookalike.embedder.sources import (
    SPLIT_NAMES,
    ImageSource,
    check_label,
    split_name,
    split_of_path,
)
from lookalike.errors import InvalidArgument, LabelError
from lookalike.store.collection import Collection

FOLDERS = "folders"
SHOWN_LABELS = 10  # a summary names this many labels, then counts the rest


def split_label_warning(labels: Iterable[str]) -> str | None:
    """A warning when labels name dataset splits (``train``, ``test``, ``val``, ...) rather than
    classes: a ``train/<class>/``, ``test/<class>/`` tree labelled by its top folders."""
    splits = sorted({label for label in labels if split_name(str(label)) is not None})
    if not splits:
        return None
    return (
        f"labels {', '.join(map(repr, splits))} look like split names, not classes: a tree of "
        "train/<class>/ and test/<class>/ folders labelled by its top folders. Embed it again "
        "into a new collection with labels from folders (each image then takes the folder under "
        "its split as its label, and train can keep to one split), or give a labels file"
    )


def label_summary(counts: dict[str, int]) -> str:
    """``cat 12, dog 10, ... (N classes)``: the most common labels first, the rest counted."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{label} {count}" for label, count in ordered[:SHOWN_LABELS])
    rest = len(ordered) - SHOWN_LABELS
    return f"{shown}, and {rest} more ({len(ordered)} classes)" if rest > 0 else shown


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
    collection: Collection,
    labels: str | Path | Mapping[int, str] | None = None,
    split: str | None = None,
) -> LabelledItems:
    """The labelled items of `collection` (those of one `split` only, when given: see
    `in_split`), checked to be trainable.

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
    if split is not None:
        found = in_split(collection, found, split)
    check_trainable(found)
    return found


def check_split(split: str) -> str:
    """A split's one spelling (``Validation`` -> ``val``); `InvalidArgument` naming the known."""
    known = split_name(split)
    if known is None:
        raise InvalidArgument(
            f"unknown split {split!r}; a split is one of {', '.join(sorted(set(SPLIT_NAMES)))}"
        )
    return known


def in_split(collection: Collection, found: LabelledItems, split: str) -> LabelledItems:
    """The items of `found` in `split`: those whose path has a folder naming it (``train/``,
    ``training/``, ... : `split_of_path`, as the audit's leakage finds splits), so the test
    items of a train/test tree are never trained on."""
    wanted = check_split(split)
    items = collection.items(["id", "path"])
    paths = items["path"].to_pylist()
    split_of = dict(zip(items["id"].to_pylist(), map(split_of_path, paths), strict=True))
    keep = np.asarray([split_of.get(int(i)) == wanted for i in found.ids], dtype=bool)
    if not keep.any():
        present = Counter(str(split_of.get(int(i))) for i in found.ids)
        raise LabelError(
            f"no labelled item of {collection.path} lies in split {wanted!r}; their splits (from "
            f"the train/test/val folders on their paths): {label_summary(dict(present))}"
        )
    return LabelledItems(
        found.ids[keep], found.labels[keep], f"{found.source}, split {wanted!r} only"
    )


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
    for row, (item, value) in enumerate(zip(ids, values, strict=True), start=1):
        value = check_label(value, f"{path}, row {row}")
        if value is None:
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
    given = [check_label(str(labels[int(i)]), f"the label of item {i}") for i in ids]
    keep = np.asarray([label is not None for label in given], dtype=bool)
    values = np.asarray([label for label in given if label is not None], dtype=object)
    return LabelledItems(ids[keep], values, "labels given inline")


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
