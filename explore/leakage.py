"""Leakage: near-duplicates that cross a split (a training image copied into the test set).

Each item's split comes from its path (a folder named like a split: ``train``, ``test``, ``val``,
... anywhere on the way; the default), or from a table (a CSV/parquet with an ``id`` or ``path``
column and a ``split`` column), or a mapping of item ids. Duplicates are found with dedup's own
range search at its calibrated threshold (`index.calibrate`), stored in the collection and reused,
unless a threshold is given; a pair is a leak when its two items lie in different splits. Each
leaking item is listed once per other split, with its nearest copy there (`leak_pairs`): copies
are grouped, never paired all with all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.classify.labels import read_item_values
from lookalike.embedder.sources import SPLIT_NAMES, split_of_path
from lookalike.errors import LabelError
from lookalike.index.calibrate import Calibration, calibrated_threshold
from lookalike.index.dedup import Duplicates, find_duplicates
from lookalike.index.search import Searcher

FOLDERS = "folders"
SPLIT_COLUMN = "split"

Splits = str | Path | Mapping[int, str] | None
__all__ = ["SPLIT_NAMES", "Leaks", "Splits", "find_leaks", "item_splits", "split_of_path"]


@dataclass(frozen=True)
class Leaks:
    """Near-duplicate pairs across splits, closest first, at `threshold`."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray
    split_a: np.ndarray
    split_b: np.ndarray
    threshold: float
    calibration: Calibration | None  # None when the threshold was given
    splits: dict[str, int]  # split -> items in it
    source: str

    def __len__(self) -> int:
        return len(self.a)

    def rows(self, top: int | None = None) -> list[dict[str, Any]]:
        end = len(self.a) if top is None else min(top, len(self.a))
        return [
            {
                "rank": rank + 1,
                "id": int(self.a[rank]),
                "split": str(self.split_a[rank]),
                "other_id": int(self.b[rank]),
                "other_split": str(self.split_b[rank]),
                "distance": round(float(self.distance[rank]), 6),
            }
            for rank in range(end)
        ]


def item_splits(searcher: Searcher, splits: Splits = None) -> tuple[dict[int, str], str]:
    """Each item's split (items in none are left out) and where the splits came from."""
    collection = searcher.collection
    if isinstance(splits, Mapping):
        known = set(collection.items(["id"])["id"].to_pylist())
        unknown = [item for item in splits if int(item) not in known]
        if unknown:
            raise LabelError(
                f"{len(unknown)} splits name no item of {collection.path}, e.g. {unknown[0]}"
            )
        return {int(item): str(split) for item, split in splits.items()}, "splits given inline"
    if splits is None or str(splits) == FOLDERS:
        items = collection.items(["id", "path"])
        found = {
            int(item): split
            for item, path in zip(items["id"].to_pylist(), items["path"].to_pylist(), strict=True)
            if (split := split_of_path(path)) is not None
        }
        return found, "folder names on each item's path"
    values = read_item_values(collection, Path(splits), SPLIT_COLUMN)
    return dict(zip(values.ids.tolist(), values.labels.tolist(), strict=True)), values.source


def find_leaks(
    searcher: Searcher,
    splits: Splits = None,
    threshold: float | None = None,
    progress: bool = True,
    **calibration: Any,
) -> Leaks:
    """Near-duplicate pairs whose items lie in different splits (module doc); `calibration`
    options go to `calibrated_threshold` (what may be read, the pixel limit)."""
    split_of, source = item_splits(searcher, splits)
    counts = dict(sorted(Counter(split_of.values()).items()))
    if len(counts) < 2:
        raise LabelError(
            f"leakage needs items in at least 2 splits; {source} give {len(counts)} "
            f"({', '.join(counts) or 'none'}): put splits in folders named train, test, val, "
            "or give a table with an id or path column and a split column"
        )
    calibrated = None
    if threshold is None:
        calibrated, _, _ = calibrated_threshold(searcher, progress=progress, **calibration)
        threshold = calibrated.threshold
    found = find_duplicates(searcher, threshold, progress=progress)
    a, b, distance = leak_pairs(found, split_of)
    order = np.argsort(distance, kind="stable")
    a, b, distance = a[order], b[order], distance[order]
    return Leaks(
        a=a,
        b=b,
        distance=distance,
        split_a=np.array([split_of[int(i)] for i in a], dtype=object),
        split_b=np.array([split_of[int(i)] for i in b], dtype=object),
        threshold=float(threshold),
        calibration=calibrated,
        splits=counts,
        source=source,
    )


def leak_pairs(
    found: Duplicates, split_of: Mapping[int, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, distance) arrays: each item with a copy or near-duplicate in another split, paired
    with its nearest one there (the smallest id of a group). One row per leaking item and other
    split, never one per pair: 5,000 copies in train and 5,000 in test are 10,000 rows, not 25
    million."""
    members = {group[0]: group for group in found.exact}
    firsts = {head: _first_in_each_split(group, split_of) for head, group in members.items()}
    near: dict[int, list[tuple[int, float]]] = {}
    for pair in found.pairs.to_pylist():
        near.setdefault(pair["a"], []).append((pair["b"], pair["distance"]))
        near.setdefault(pair["b"], []).append((pair["a"], pair["distance"]))
        for head in (pair["a"], pair["b"]):
            firsts.setdefault(head, _first_in_each_split([head], split_of))
    rows: dict[tuple[int, int], float] = {}
    for head in firsts:
        across: dict[str, tuple[float, int]] = {}  # split -> (distance, its nearest item there)
        for other, distance in [(head, 0.0), *near.get(head, [])]:
            for split, item in firsts[other].items():
                across[split] = min(across.get(split, (distance, item)), (distance, item))
        for item in members.get(head, [head]):
            own = split_of.get(item)
            for split, (distance, other) in across.items():
                if own is not None and split != own:
                    pair = (min(item, other), max(item, other))
                    rows[pair] = min(distance, rows.get(pair, distance))
    a = np.array([pair[0] for pair in rows], np.int64)
    b = np.array([pair[1] for pair in rows], np.int64)
    return a, b, np.array(list(rows.values()), np.float64)


def _first_in_each_split(group: list[int], split_of: Mapping[int, str]) -> dict[str, int]:
    """Split -> the smallest id of `group` in it (sorted ids: the first met)."""
    first: dict[str, int] = {}
    for item in group:
        split = split_of.get(item)
        if split is not None:
            first.setdefault(split, item)
    return first
