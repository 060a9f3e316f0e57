"""Dedup's threshold, calibrated on the collection itself.

Two distance distributions, both in the collection's own embedding space:

- **variants**: a sample of the collection's images, each given near-duplicate edits (see
  `variants.EDITS`), embedded with the collection's embedder; the distance of each variant to its
  original's stored vector. This is how far a copy lands.
- **neighbours**: for a sample of items, the distances to their nearest items, read nearest
  first (with 0 before the first); the largest step between two consecutive distances ends the
  item's own group of copies (none when the step to the first neighbour is the largest; all when
  no step rises), and the neighbours after it are distinct items. So copies already in the
  collection do not pass for distinct items.

The threshold is the 99th percentile of the variant distances (recall of realistic copies),
lowered, where needed, to the largest distance at which at most `FALSE_SHARE` (2 %) of the
sampled neighbour pairs within it are distinct items: an estimate of dedup's precision that
follows the collection (a few look-alikes among many copies cost little; among few copies,
much). Which of the two set it is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from tqdm.auto import tqdm

from lookalike.durable import store_if_possible, write_atomic
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS, decode_image, read_file
from lookalike.errors import BadImage, CannotCalibrate, InvalidArgument

from .equal import equal_groups
from .metric import pair_distances
from .search import Filters, Searcher
from .variants import EDITS, variant_bytes

CALIBRATION = "calibration.json"  # in the collection: one calibration per layer
VARIANT_QUANTILE = 99.0
FALSE_SHARE = 0.02  # of the pairs found, at most this share may be distinct items
DEFAULT_IMAGES = 96  # originals varied (three edits each)
EDITS_PER_IMAGE = 3
MIN_IMAGES = 8
DISTINCT_ITEMS = 4000  # items whose neighbourhood is read
NEIGHBOURS = 8
KEPT = 16  # calibrations stored per collection, the newest
REUSE_CHANGE = 0.25  # recalibrate once the item count moved by more than this share
BATCH = 32
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)

MayRead = Callable[[Path, str], bool]  # (real path opened, recorded path) -> may it be read

BOUNDS = {  # what set a calibration's threshold: every value `Calibration.bound` takes
    "variants": f"the {VARIANT_QUANTILE:g}th percentile of copies' distances to their originals",
    "precision": f"lowered below that until at most {FALSE_SHARE:.0%} of pairs are distinct items",
    "no items": "nothing in scope to calibrate on: threshold 0, not stored",
    "no distinct items": "every item in scope is a copy of one image: threshold 0, not stored",
}
MEASURED = ("variants", "precision")  # the bounds of a threshold that was measured


@dataclass(frozen=True)
class Calibration:
    """Dedup's calibrated threshold, how it was found and the distributions it came from.

    `bound` says what set the threshold, one of `BOUNDS`: "variants" (the copies' 99th
    percentile), "precision" (lowered below that for precision), or, with nothing measured
    (threshold 0, never stored), "no items" or "no distinct items"."""

    threshold: float
    bound: str  # a key of `BOUNDS`
    layer: str
    scope: str  # which items: "" for all, else the filters (see `scope_of`)
    fingerprint: str
    items: int  # live items in scope when calibrated
    images: int  # originals varied
    variants: dict[str, float]  # percentile -> distance of a variant to its original
    distinct: dict[str, float]  # percentile -> distance of an item to its nearest distinct one
    by_edit: dict[str, float]  # edit -> median variant distance
    seconds: float
    created: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:  # an undocumented bound (or an older version's, stored)
            raise ValueError(
                f"unknown calibration bound {self.bound!r}; known: {', '.join(BOUNDS)}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**data)

    @property
    def measured(self) -> bool:
        """Whether a threshold was measured: not where the scope held under 2 distinct images."""
        return self.bound in MEASURED

    @property
    def worth_keeping(self) -> bool:
        """Measured, and above 0: a 0 finds only identical items, found at any threshold (and
        one stored by an older version came from copies taken for distinct items at 0)."""
        return self.measured and self.threshold > 0

    def lines(self) -> list[str]:
        def row(values: dict[str, float]) -> str:
            return ", ".join(f"p{p} {v:.3f}" for p, v in values.items()) or "none"

        scope = self.scope and " with " + self.scope
        if not self.measured:
            held = {
                0: f"no items{scope}",
                1: f"the 1 item{scope} has nothing to be compared with",
            }.get(self.items, f"the {self.items} items{scope} are copies of one image")
            return [
                f"threshold 0: nothing to calibrate: {held} (nothing stored); identical items "
                "are one cluster at any threshold"
            ]
        return [
            f"threshold {self.threshold:.3f}: {BOUNDS[self.bound]}; calibrated on {self.images} images "
            f"({self.items} items{scope}, layer {self.layer}) "
            f"in {self.seconds:.1f} s",
            f"  copy to original:        {row(self.variants)}",
            f"  item to nearest distinct: {row(self.distinct)}",
            "  by edit (median): " + ", ".join(f"{e} {d:.3f}" for e, d in self.by_edit.items()),
        ]


def calibrate_threshold(
    searcher: Searcher,
    images: int = DEFAULT_IMAGES,
    seed: int = 0,
    filters: Filters | None = None,
    may_read: MayRead | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> Calibration:
    """Measure both distributions on `searcher`'s collection and pick the threshold (module doc)."""
    if images < MIN_IMAGES:
        raise InvalidArgument(f"images must be at least {MIN_IMAGES}, got {images}")
    started = time.perf_counter()
    rng = random.Random(seed)
    items, distinct = _items_in_scope(searcher, filters)
    if len(distinct) < 2:  # nothing to tell apart: no threshold to measure, none to store
        return _unmeasured(searcher, filters, len(items), started)
    short_side = 2 * searcher.collection.spec.preprocess.resize
    originals = _readable_sample(distinct, images, rng, may_read, max_pixels, short_side)
    if len(originals) < min(MIN_IMAGES, len(distinct)) or not originals:
        raise CannotCalibrate(
            f"only {len(originals)} of the collection's images could be read to calibrate "
            f"(at least {MIN_IMAGES} are needed); give a threshold instead"
        )
    variants, edits = _variant_distances(searcher, originals, rng, max_pixels, progress)
    sampled = rng.sample(items, min(len(items), DISTINCT_ITEMS))
    near = neighbourhoods(searcher, [item["id"] for item in sampled], filters)
    threshold, bound = _pick(variants, near)
    return Calibration(
        threshold=math.floor(threshold * 1e6) / 1e6,  # never rounded up onto a distinct pair
        bound=bound,
        layer=searcher.layer,
        scope=scope_of(filters),
        fingerprint=searcher.collection.spec.fingerprint(),
        items=len(items),
        images=len(originals),
        variants=_percentiles(variants),
        distinct=_percentiles(near.nearest_distinct()),
        by_edit={
            e: round(float(np.median(variants[edits == e])), 4) for e in EDITS if (edits == e).any()
        },
        seconds=round(time.perf_counter() - started, 2),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _unmeasured(
    searcher: Searcher, filters: Filters | None, items: int, started: float
) -> Calibration:
    """The answer for a scope with under 2 distinct images: threshold 0 (copies are found at any
    threshold), a bound that says why, nothing measured (so never stored)."""
    return Calibration(
        threshold=0.0,
        bound="no items" if items == 0 else "no distinct items",
        layer=searcher.layer,
        scope=scope_of(filters),
        fingerprint=searcher.collection.spec.fingerprint(),
        items=items,
        images=0,
        variants={},
        distinct={},
        by_edit={},
        seconds=round(time.perf_counter() - started, 2),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _readable_sample(items, count, rng, may_read, max_pixels, short_side) -> list[tuple[int, Any]]:
    """Up to `count` (id, decoded image) of random items whose file still reads as an image,
    each scaled down to `short_side` (twice the model's input: a copy is still larger than what
    the model sees, and 96 decoded 40-megapixel photos would hold 11 GB)."""
    from lookalike.embedder.preprocess import resized_size  # torch: only where images are varied

    order = rng.sample(items, len(items))
    found = []
    for item in order[: count * 3]:
        try:
            read = read_file(item["path"])
            if may_read is not None and not may_read(read.real_path, item["path"]):
                continue
            image = decode_image(read.data, max_pixels, short_side)
            if min(image.size) > short_side:
                size = resized_size(*image.size, short_side)
                image = image.resize(size, Image.Resampling.BILINEAR)
            found.append((item["id"], image))
        except (OSError, BadImage):
            continue
        if len(found) == count:
            break
    return found


def _variant_distances(
    searcher, originals, rng, max_pixels, progress
) -> tuple[np.ndarray, np.ndarray]:
    ids = [item_id for item_id, _ in originals]
    stored = searcher.collection.vectors(ids, searcher.layer)
    jobs = [
        (row, edit)
        for row in range(len(originals))
        for edit in rng.sample(list(EDITS), EDITS_PER_IMAGE)
    ]
    distances = np.empty(len(jobs), np.float32)
    with tqdm(total=len(jobs), unit="img", desc="calibrate", disable=not progress) as bar:
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]
            encoded = [variant_bytes(originals[row][1], edit, rng) for row, edit in batch]
            vectors = searcher.embed_images(encoded, max_pixels)
            rows = [row for row, _ in batch]
            distances[start : start + len(batch)] = pair_distances(
                searcher.metric, vectors, stored[rows]
            )
            bar.update(len(batch))
    return distances, np.array([edit for _, edit in jobs])


@dataclass(frozen=True)
class Neighbourhoods:
    """The nearest neighbours' distances of sampled items (rows sorted, NaN where none), and
    for each item how many of them are its own copies (those before the largest step)."""

    distances: np.ndarray  # (items, NEIGHBOURS)
    copies: np.ndarray  # (items,)

    def nearest_distinct(self) -> np.ndarray:
        rows = np.arange(len(self.copies))
        held = self.copies < self.distances.shape[1]
        found = self.distances[rows[held], self.copies[held]]
        return found[~np.isnan(found)]

    def false_share(self, threshold: float) -> float:
        """Of the neighbour pairs within `threshold`, the share with a distinct item: an estimate
        of the share of false pairs dedup would report at it."""
        within = self.distances <= threshold  # NaN compares False
        distinct = within & (np.arange(self.distances.shape[1]) >= self.copies[:, None])
        return float(distinct.sum() / within.sum()) if within.any() else 0.0


def neighbourhoods(
    searcher: Searcher, ids: list[int], filters: Filters | None = None
) -> Neighbourhoods:
    """Each item's `NEIGHBOURS` nearest others; its group of copies ends at the largest step
    between consecutive distances (0 counted first: no copies when the first step is the largest;
    all of them when none rises: 8 neighbours at 0 are copies, not distinct items at 0)."""
    distances = np.full((len(ids), NEIGHBOURS), np.nan, np.float32)
    for start in range(0, len(ids), 1024):
        block = ids[start : start + 1024]
        found = searcher.search_ids(block, k=NEIGHBOURS + 1, filters=filters)
        for row, (me, hits) in enumerate(zip(block, found, strict=True), start):
            near = [hit.distance for hit in hits if hit.id != me][:NEIGHBOURS]
            distances[row, : len(near)] = near
    steps = np.diff(np.nan_to_num(distances, nan=-1.0), axis=1, prepend=0.0)
    present = (~np.isnan(distances)).sum(axis=1)  # no step up at all: every neighbour a copy
    return Neighbourhoods(
        distances, np.where(steps.max(axis=1) > 0, np.argmax(steps, axis=1), present)
    )


def _pick(variants: np.ndarray, near: Neighbourhoods) -> tuple[float, str]:
    """The largest distance, up to the copies' high percentile, at which the estimated share
    of false pairs stays within `FALSE_SHARE` (see the module doc)."""
    if not len(variants):
        return 0.0, "no items"
    copies = float(np.percentile(variants, VARIANT_QUANTILE))
    if near.false_share(copies) <= FALSE_SHARE:
        return copies, "variants"
    candidates = np.unique(near.distances[near.distances < copies])[::-1]
    for candidate in candidates:  # from the largest down: the first that keeps precision
        below = np.nextafter(np.float32(candidate), np.float32(0))
        if near.false_share(below) <= FALSE_SHARE:
            return float(below), "precision"
    return 0.0, "precision"


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    return {str(p): round(float(np.percentile(values, p)), 4) for p in PERCENTILES}


# ----- stored with the collection -----------------------------------------------------------------


def scope_of(filters: Filters | None) -> str:
    if not filters:
        return ""
    parts = [f"label {' or '.join(filters.labels)}"] if filters.labels else []
    parts += [f"path under {filters.path_prefix}"] if filters.path_prefix else []
    return " and ".join(parts)


def _key(layer: str, scope: str) -> str:
    return f"{layer} ({scope})" if scope else layer


def _items_in_scope(
    searcher: Searcher, filters: Filters | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The items in scope, and one of each group of identical files among them (the images to
    vary: a thousand copies of one placeholder are one image)."""
    table = searcher.collection.items(["id", "path"])
    if filters:
        table = table.filter(pc.is_in(table["id"], pa.array(searcher.allowed_ids(filters))))
    representatives = equal_groups(searcher, filters, vectors=False).representatives
    distinct = table.filter(pc.is_in(table["id"], pa.array(representatives)))
    return table.to_pylist(), distinct.to_pylist()


def load_calibration(searcher: Searcher, filters: Filters | None = None) -> Calibration | None:
    """The stored calibration of the searcher's layer (and filters), if it fits the collection
    as it is now: the same embedder, and an item count within `REUSE_CHANGE` of the calibrated
    one; never a threshold of 0 (`Calibration.worth_keeping`)."""
    try:
        stored = json.loads((searcher.collection.path / CALIBRATION).read_text())
        calibration = Calibration.from_dict(stored[_key(searcher.layer, scope_of(filters))])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None
    if (
        not calibration.worth_keeping
        or calibration.fingerprint != searcher.collection.spec.fingerprint()
    ):
        return None
    items = len(searcher.allowed_ids(filters)) if filters else len(searcher.collection)
    return (
        calibration if abs(items - calibration.items) <= REUSE_CHANGE * calibration.items else None
    )


def save_calibration(searcher: Searcher, calibration: Calibration) -> None:
    """Store it beside the others (by layer and scope), keeping the `KEPT` newest: scopes are
    the callers' filters, so their number must not grow without bound."""
    path = searcher.collection.path / CALIBRATION
    try:
        stored = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        stored = {}
    key = _key(calibration.layer, calibration.scope)
    stored = {k: v for k, v in stored.items() if k != key and isinstance(v, dict)}
    newest = sorted(stored, key=lambda k: str(stored[k].get("created", "")))[-(KEPT - 1) :]
    kept = {k: stored[k] for k in newest} | {key: calibration.to_dict()}
    write_atomic(path, json.dumps(kept, indent=2).encode())


class Calibrated(NamedTuple):
    calibration: Calibration
    reused: bool  # the stored one, still fitting
    stored: bool  # kept in the collection (False: a new one its full or read-only disk refused)


def calibrated_threshold(
    searcher: Searcher,
    recalibrate: bool = False,
    filters: Filters | None = None,
    save: bool = True,
    **options: Any,
) -> Calibrated:
    """The stored calibration when it still fits (see `load_calibration`), else a new one,
    stored when it measured something, `save` is true and the collection's disk allows it (a
    warning where it does not)."""
    stored = None if recalibrate else load_calibration(searcher, filters)
    if stored is not None:
        return Calibrated(stored, reused=True, stored=True)
    calibration = calibrate_threshold(searcher, filters=filters, **options)
    if not (save and calibration.worth_keeping):  # nothing measured: asked again next time
        return Calibrated(calibration, reused=False, stored=False)
    kept = store_if_possible(
        lambda: save_calibration(searcher, calibration),
        f"the calibration of {searcher.collection.path} (threshold {calibration.threshold:.3f})",
    )
    return Calibrated(calibration, reused=False, stored=kept)
