"""The map as a PNG: every item a point coloured by its label, a sample of thumbnails on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from lookalike.index.sheet import thumbnail
from lookalike.store.collection import Collection

from .map import MapPoints, map_points

THUMBNAILS = 24  # at most this many, one per crowded cell of a 12 x 12 grid
THUMBNAIL_PIXELS = 48
MAX_LEGEND_LABELS = 20


def map_png(
    collection: Collection, out: str | Path, layer: str | None = None, thumbnails: int = THUMBNAILS
) -> Path:
    """Draw the stored map of `layer` to `out` (a PNG) and return its path."""
    points = map_points(collection, layer)
    figure = Figure(figsize=(10, 10))
    axes = figure.subplots()
    _scatter(axes, points)
    if thumbnails:
        _thumbnails(axes, collection, points, thumbnails)
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_aspect("equal")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"{collection.path.name}: {len(points.ids):,} items, layer {points.layer}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out


def _scatter(axes, points: MapPoints) -> None:
    size = float(np.clip(30_000 / max(len(points.ids), 1), 0.5, 30))
    unlabelled = points.codes < 0
    if unlabelled.any():
        xy = points.xy[unlabelled]
        axes.scatter(xy[:, 0], xy[:, 1], s=size, c="#9aa0a6", linewidths=0, label="(no label)")
    colours = _colours(len(points.labels))
    for code, label in enumerate(points.labels):
        xy = points.xy[points.codes == code]
        axes.scatter(xy[:, 0], xy[:, 1], s=size, color=colours[code], linewidths=0, label=label)
    if 0 < len(points.labels) <= MAX_LEGEND_LABELS:
        axes.legend(loc="upper right", markerscale=max(1.0, 6 / size**0.5), fontsize="small")


def _colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(n % palette.N) for n in range(count)]


def _thumbnails(axes, collection: Collection, points: MapPoints, count: int) -> None:
    """One thumbnail per crowded grid cell (the item nearest the cell's centre of mass)."""
    picked = sample_spread(points.xy, count)
    items = collection.items(["id", "path"])
    paths = dict(zip(items.column("id").to_pylist(), items.column("path").to_pylist(), strict=True))
    for row in picked:
        path = paths.get(int(points.ids[row]))
        if path is None or not Path(path).is_file():
            continue  # synthetic or moved: the point alone says enough
        image = np.asarray(thumbnail(path, THUMBNAIL_PIXELS))
        box = AnnotationBbox(
            OffsetImage(image, zoom=0.45), tuple(points.xy[row]), frameon=True, pad=0.05
        )
        axes.add_artist(box)


def sample_spread(xy: np.ndarray, count: int, cells: int = 12) -> list[int]:
    """Rows of `xy` (in the unit square) spread over the map: from the `count` most crowded
    cells of a `cells` x `cells` grid, the row nearest each cell's centre of mass."""
    if not len(xy):
        return []
    cell = np.minimum((xy * cells).astype(int), cells - 1)
    keys = cell[:, 0] * cells + cell[:, 1]
    occupied, counts = np.unique(keys, return_counts=True)
    picked = []
    for key in occupied[np.argsort(-counts, kind="stable")][:count]:
        rows = np.flatnonzero(keys == key)
        centre = xy[rows].mean(axis=0)
        picked.append(int(rows[np.argmin(((xy[rows] - centre) ** 2).sum(axis=1))]))
    return picked
