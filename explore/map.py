"""A 2-D map of a collection's embeddings: PCA to ~50 dimensions, then UMAP with a fixed seed.

Stored in the collection, one file per layer, written atomically::

    DIR/maps/<layer>.npz   ids, xy (float32, n x 2), the PCA (mean, components), the fit's
                           inputs in PCA space (`reference`), and meta (JSON: the spec
                           fingerprint, parameters, how many rows the fit laid out)

Items embedded after the fit are placed on it (UMAP's transform, `map_place.place`) without
moving the others; the map is fitted again when the spec or parameters changed, or when more
items are new than were fitted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from tqdm.auto import tqdm

from lookalike.checks import check_range
from lookalike.durable import atomic_path, disk_errors
from lookalike.errors import CollectionError, InvalidArgument
from lookalike.store.collection import Collection

from .map_place import fit_pca, nearest_neighbours, place, project

log = logging.getLogger(__name__)

MAPS = "maps"
MIN_ITEMS = 4  # UMAP needs a few neighbours to lay anything out
PCA_SAMPLE = 25_000  # rows the PCA is fitted on: plenty for 50 axes


@dataclass(frozen=True)
class MapParams:
    """How a map is laid out: UMAP's `n_neighbors` and `min_dist`, the PCA width, the seed."""

    neighbours: int = 15
    min_dist: float = 0.1
    pca_dims: int = 50
    seed: int = 0

    def check(self) -> None:
        check_range("neighbours", self.neighbours, 2, 200, integer=True)
        check_range("min_dist", self.min_dist, 0, 1)
        check_range("pca_dims", self.pca_dims, 2, 1024, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


@dataclass
class EmbeddingMap:
    """A stored map: `xy[i]` is where item `ids[i]` lies; the first `fitted` rows were laid out
    by the fit (their PCA coordinates are `reference`), the rest placed on it afterwards."""

    layer: str
    fingerprint: str
    params: MapParams
    ids: np.ndarray
    xy: np.ndarray
    fitted: int
    mean: np.ndarray
    components: np.ndarray
    reference: np.ndarray
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def meta(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "fingerprint": self.fingerprint,
            "params": dataclasses.asdict(self.params),
            "fitted": self.fitted,
            "created": self.created,
        }


@dataclass
class MapReport:
    """What `compute_map` did: `fitted` items laid out by a new fit, `placed` put on the old one."""

    layer: str
    items: int
    fitted: int
    placed: int
    seconds: dict[str, float]
    path: Path

    def summary(self) -> str:
        stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in self.seconds.items())
        if self.fitted:
            what = f"laid out {self.fitted} items"
        elif self.placed:
            what = f"placed {self.placed} new items on the map"
        else:
            what = "the map is up to date"
        return f"{what} ({self.items} on the map, layer {self.layer})" + (
            f": {stages}" if stages else ""
        )


def map_path(collection_path: Path, layer: str) -> Path:
    return Path(collection_path) / MAPS / f"{quote(layer, safe='')}.npz"


def save_map(collection: Collection, emap: EmbeddingMap) -> Path:
    """Write the map atomically (readers see the old map or the new one)."""
    path = map_path(collection.path, emap.layer)
    with disk_errors(path.parent):
        path.parent.mkdir(exist_ok=True)
    meta = np.frombuffer(json.dumps(emap.meta()).encode(), np.uint8)
    arrays = {name: getattr(emap, name) for name in ("ids", "xy", "mean", "components")}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, meta=meta, reference=emap.reference, **arrays)
    return path


def load_map(collection: Collection, layer: str | None = None) -> EmbeddingMap | None:
    """The stored map of `layer` (default: the first), or None if none was computed."""
    layer = layer or collection.spec.layers[0]
    collection.check_layer(layer)
    path = map_path(collection.path, layer)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as error:
        raise CollectionError(f"{path} is damaged ({error}); compute the map again") from None
    meta = json.loads(arrays.pop("meta").tobytes())
    return EmbeddingMap(
        layer=meta["layer"],
        fingerprint=meta["fingerprint"],
        params=MapParams(**meta["params"]),
        fitted=meta["fitted"],
        created=meta["created"],
        **arrays,
    )


def compute_map(
    collection: Collection,
    layer: str | None = None,
    params: MapParams | None = None,
    refresh: bool = False,
    progress: bool = False,
) -> MapReport:
    """Lay out the collection's `layer` in 2-D and store it. An existing map of the same spec
    and parameters is kept and new items are placed on it, unless `refresh` or more items are
    new than were fitted; deleted items drop out when the map is read."""
    layer = layer or collection.spec.layers[0]
    collection.check_layer(layer)
    params = params or MapParams()
    params.check()
    old = None if refresh else load_map(collection, layer)
    if old is not None and (
        old.fingerprint != collection.spec.fingerprint() or old.params != params
    ):
        old = None
    live = collection.items(["id"]).column("id").to_numpy()
    new = live[~np.isin(live, old.ids)] if old is not None else live
    if old is None or len(new) > old.fitted:
        emap, seconds = _fit(collection, layer, params, progress)
        fitted, placed = len(emap.ids), 0
    elif len(new):
        emap, seconds = _place_new(collection, old, new)
        fitted, placed = 0, len(new)
    else:
        return MapReport(layer, len(live), 0, 0, {}, map_path(collection.path, layer))
    start = time.perf_counter()
    path = save_map(collection, emap)
    seconds["store"] = time.perf_counter() - start
    return MapReport(layer, len(live), fitted, placed, seconds, path)


def _fit(
    collection: Collection, layer: str, params: MapParams, progress: bool
) -> tuple[EmbeddingMap, dict[str, float]]:
    """PCA (streamed over the shards), the k-NN graph (FAISS), then UMAP's layout; with
    `progress`, a bar naming the step it is on (UMAP's own output is a screen of arrays)."""
    seconds: dict[str, float] = {}
    with tqdm(total=3, desc="map", unit="step", disable=not progress) as bar:
        with _step("pca", bar, seconds):
            ids, reduced, mean, components = _reduce(collection, layer, params.pca_dims)
        with _step("neighbours", bar, seconds):
            graph = nearest_neighbours(reduced, min(params.neighbours, len(ids) - 1))
        with _step("umap", bar, seconds):
            xy = _layout(reduced, graph, params)
    log.info("laid out %d items of layer %s in %.1f s", len(ids), layer, sum(seconds.values()))
    emap = EmbeddingMap(
        layer, collection.spec.fingerprint(), params, ids, xy, len(ids), mean, components, reduced
    )
    return emap, seconds


@contextmanager
def _step(name: str, bar: tqdm, seconds: dict[str, float]) -> Iterator[None]:
    """One step of a fit: named on `bar` while it runs, its time recorded in `seconds`."""
    bar.set_postfix_str(name)
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    bar.update()


def _reduce(
    collection: Collection, layer: str, dims: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors in PCA space, mean, components): the PCA fitted on at most about
    `PCA_SAMPLE` rows spread over the collection, every row projected."""
    blocks = [(ids, xb) for ids, xb in collection.iter_embeddings(layer) if len(ids)]
    count = sum(len(ids) for ids, _ in blocks)
    if count < MIN_ITEMS:
        raise InvalidArgument(
            f"a map needs at least {MIN_ITEMS} items; the collection holds {count}"
        )
    step = max(1, count // PCA_SAMPLE)
    dims = min(dims, collection.spec.dims[layer], count - 1)
    mean, components = fit_pca((xb[::step] for _, xb in blocks), dims)
    reduced = np.concatenate([project(xb, mean, components) for _, xb in blocks])
    return np.concatenate([ids for ids, _ in blocks]), reduced, mean, components


def _layout(
    reduced: np.ndarray, graph: tuple[np.ndarray, np.ndarray], params: MapParams
) -> np.ndarray:
    """UMAP's layout of `reduced` over its k-NN `graph` (indices, distances)."""
    import umap

    reducer = umap.UMAP(
        n_neighbors=graph[0].shape[1],
        min_dist=params.min_dist,
        random_state=params.seed,
        n_jobs=1,  # a seed makes UMAP serial anyway; saying so keeps it from warning
        precomputed_knn=graph,
        verbose=False,  # True prints UMAP's repr (the k-NN arrays) and timestamps to stdout
        init="spectral" if len(reduced) > 2 * params.neighbours else "random",
    )
    with warnings.catch_warnings():  # "transform will be unavailable": `place` does it
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return reducer.fit_transform(reduced).astype(np.float32)


def _place_new(
    collection: Collection, old: EmbeddingMap, new: np.ndarray
) -> tuple[EmbeddingMap, dict[str, float]]:
    """`old` with the items `new` placed on its fitted layout."""
    start = time.perf_counter()
    queries = project(collection.vectors(new, old.layer), old.mean, old.components)
    xy = place(
        old.reference,
        old.xy[: old.fitted],
        queries,
        min(old.params.neighbours, old.fitted - 1),
        old.params.min_dist,
        old.params.seed,
    )
    emap = dataclasses.replace(
        old, ids=np.concatenate([old.ids, new]), xy=np.concatenate([old.xy, xy])
    )
    return emap, {"place": time.perf_counter() - start}


@dataclass
class MapPoints:
    """The live items of a map, for drawing: `xy` scaled into [0, 1] (aspect kept), and each
    item's label as an index into `labels` (-1: none)."""

    layer: str
    ids: np.ndarray
    xy: np.ndarray
    labels: list[str]
    codes: np.ndarray
    created: str


def map_points(collection: Collection, layer: str | None = None) -> MapPoints:
    """The stored map's live items with their labels; `CollectionError` if there is no map."""
    layer = layer or collection.spec.layers[0]
    emap = load_map(collection, layer)
    if emap is None or emap.fingerprint != collection.spec.fingerprint():
        raise CollectionError(
            f"no map of layer {layer!r} in {collection.path}; compute one with compute_map "
            "(the CLI's `lookalike map`)"
        )
    items = collection.items(["id", "label"])
    item_ids = items.column("id").to_numpy()
    keep = np.isin(emap.ids, item_ids)
    ids, xy = emap.ids[keep], emap.xy[keep]
    names = np.asarray(items.column("label").to_pylist(), dtype=object)
    label_of = dict(zip(item_ids.tolist(), names, strict=True))
    item_labels = [label_of[i] for i in ids.tolist()]
    labels = sorted({label for label in item_labels if label is not None})
    code_of = {label: code for code, label in enumerate(labels)}
    codes = np.asarray([code_of.get(label, -1) for label in item_labels], np.int32)
    return MapPoints(layer, ids, unit_square(xy), labels, codes, emap.created)


def unit_square(xy: np.ndarray) -> np.ndarray:
    """`xy` shifted and scaled uniformly into [0, 1]^2, centred (an empty map stays empty)."""
    if not len(xy):
        return xy.astype(np.float32)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = float(max(high - low)) or 1.0
    return ((xy - (low + high) / 2) / span + 0.5).astype(np.float32)
