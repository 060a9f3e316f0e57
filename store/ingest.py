"""Add uploaded images to a collection: stored by content, embedded, durable before the call returns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lookalike.durable import disk_errors, fsync_path, write_atomic
from lookalike.embedder.backbone import Backbone
from lookalike.embedder.preprocess import image_pixels
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS, check_label, item_row, sha256_hex
from lookalike.errors import BadImage
from lookalike.store.collection import UPLOADS, Collection

SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif",
          "WEBP": ".webp", "TIFF": ".tif"}  # fmt: skip


@dataclass(frozen=True)
class Upload:
    data: bytes
    name: str
    label: str | None = None

    def __post_init__(self) -> None:  # labels follow one rule however they come (`check_label`)
        object.__setattr__(self, "label", check_label(self.label, f"upload {self.name!r}"))


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
    with disk_errors(collection.path):
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
    wait: float = 0.0,
) -> tuple[list[Added], np.ndarray, dict[str, np.ndarray]]:
    """Validate, store, embed and append `uploads`.

    Returns one `Added` per upload, then the ids and vectors (by layer) of the items created.
    Every image is decoded before anything is written, so one bad upload rejects them all; only
    one decoded image is held at a time (each becomes a small tensor at once). The same bytes twice
    (in this call, before, or from another process at the same moment) give the existing item:
    the check runs under the collection's writer lock, waited for up to `wait` seconds. When this
    returns, the new items are in a fsynced shard.
    """
    collection.check_spec(backbone.spec)
    if not uploads:
        nothing = {layer: np.empty((0, d), np.float32) for layer, d in collection.spec.dims.items()}
        return [], np.empty(0, np.int64), nothing
    pixels, facts = [], []
    for number, upload in enumerate(uploads):
        try:
            decoded, array = image_pixels(upload.data, backbone.spec.preprocess, max_pixels)
        except BadImage as error:
            raise BadImage(f"{upload.name or f'image {number + 1}'}: {error}") from None
        pixels.append(array)
        facts.append((decoded.width, decoded.height, decoded.format))
        del decoded  # the next decode reuses the memory
    paths = [
        str(store_bytes(collection, upload.data, image_format))
        for upload, (_, _, image_format) in zip(uploads, facts, strict=True)
    ]
    vectors = backbone.embed(torch.from_numpy(np.stack(pixels)))
    with collection.writer(shard_size=len(uploads), wait=wait) as writer:
        items = collection.items(["id", "path"])  # under the lock: no concurrent duplicate
        known = dict(zip(items["path"].to_pylist(), items["id"].to_pylist(), strict=True))
        fresh: dict[str, int] = {}  # path -> position of its first upload
        for position, path in enumerate(paths):
            if path not in known and path not in fresh:
                fresh[path] = position
        positions = list(fresh.values())
        rows = [_row(uploads[i], paths[i], facts[i]) for i in positions]
        fresh_vectors = {layer: v[positions] for layer, v in vectors.items()}
        ids = writer.add(rows, fresh_vectors)
    created = dict(zip(fresh, ids.tolist(), strict=True))
    added = [
        Added(created.get(path, known.get(path, -1)), upload.name, path, path in created)
        for upload, path in zip(uploads, paths, strict=True)
    ]
    return added, ids, fresh_vectors


def _row(upload: Upload, path: str, facts: tuple[int, int, str]) -> dict:
    width, height, _ = facts
    mtime = os.stat(path).st_mtime_ns
    return item_row(path, upload.label, upload.data, mtime, width, height)
