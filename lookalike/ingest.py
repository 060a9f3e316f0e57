"""Add uploaded images to a collection: stored by content, embedded, durable before the call returns."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.collection import Collection, fsync_path, write_atomic
from lookalike.embedder.backbone import Backbone
from lookalike.embedder.preprocess import to_batch
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS, decode_image, sha256_hex
from lookalike.errors import BadImage

UPLOADS = "uploads"
SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif",
          "WEBP": ".webp", "TIFF": ".tif"}  # fmt: skip


@dataclass(frozen=True)
class Upload:
    data: bytes
    name: str
    label: str | None = None


@dataclass(frozen=True)
class Added:
    """One uploaded image's item id; `created` is False when the same bytes were already an item."""

    id: int
    name: str
    path: str
    created: bool


def store_bytes(collection: Collection, data: bytes, image_format: str) -> Path:
    """Write the bytes once under ``uploads/<sha[:2]>/<sha>.<ext>`` (fsynced); the same bytes,
    the same file."""
    digest = sha256_hex(data)
    target = collection.path / UPLOADS / digest[:2] / f"{digest}{SUFFIX[image_format]}"
    if target.exists():
        return target
    _make_durable_dirs(target.parent)
    write_atomic(target, data)
    return target


def _make_durable_dirs(folder: Path) -> None:
    """mkdir -p, fsyncing the parent of each folder created, so a crash cannot lose them."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_path(created.parent)


def add_uploads(
    collection: Collection,
    backbone: Backbone,
    uploads: Sequence[Upload],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[Added], np.ndarray, dict[str, np.ndarray]]:
    """Validate, store, embed and append `uploads`.

    Returns one `Added` per upload, then the ids and vectors (by layer) of the items created.
    Every image is decoded before anything is written, so one bad upload rejects them all; the
    same bytes twice (in this call or before) give the existing item. When this returns, the new
    items are in a fsynced shard.
    """
    collection.check_spec(backbone.spec)
    decoded: list[tuple[Image.Image, str]] = []
    for number, upload in enumerate(uploads):
        try:
            image = decode_image(upload.data, max_pixels)
        except BadImage as error:
            raise BadImage(f"{upload.name or f'image {number + 1}'}: {error}") from None
        decoded.append((image, Image.open(io.BytesIO(upload.data)).format))
    items = collection.items(["id", "path"])
    known = dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))
    paths: list[str] = []
    rows: dict[str, dict] = {}
    for upload, (image, image_format) in zip(uploads, decoded, strict=True):
        path = str(store_bytes(collection, upload.data, image_format))
        paths.append(path)
        if path not in known and path not in rows:
            rows[path] = {
                "path": path,
                "sha256": sha256_hex(upload.data),
                "width": image.width,
                "height": image.height,
                "bytes": len(upload.data),
                "mtime_ns": os.stat(path).st_mtime_ns,
                "label": upload.label,
                "image": image,
            }
    fresh = list(rows.values())
    ids = np.empty(0, np.int64)
    vectors = {layer: np.empty((0, dim), np.float32) for layer, dim in collection.spec.dims.items()}
    if fresh:
        pixels = to_batch([row.pop("image") for row in fresh], backbone.spec.preprocess)
        vectors = backbone.embed(pixels)
        with collection.writer(shard_size=len(fresh)) as writer:
            ids = writer.add(fresh, vectors)
    created = dict(zip((row["path"] for row in fresh), ids.tolist(), strict=True))
    added = [
        Added(created.get(path, known.get(path, -1)), upload.name, path, path in created)
        for upload, path in zip(uploads, paths, strict=True)
    ]
    return added, ids, vectors
