"""Helpers the blueprints share: the served state, and uploaded images read within the limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import current_app
from werkzeug.datastructures import FileStorage

from lookalike import service
from lookalike.index import Filters

from ..decoding import screen
from ..errors import ApiError
from ..settings import Settings
from ..state import Served


def served() -> Served:
    return current_app.extensions["lookalike"]


def settings() -> Settings:
    return served().settings


def read_uploads(body: dict[str, Any]) -> tuple[list[bytes], list[str], int]:
    """The bytes and names of the uploaded `image` files (at most max_images_per_request), each
    screened from its header (see `decoding.screen`), and the pixel count of the largest."""
    uploads: list[FileStorage] = body.get("image") or []
    limit = settings().max_images_per_request
    if len(uploads) > limit:
        raise ApiError(413, f"{len(uploads)} images in one request; the limit is {limit}")
    images = [upload.read() for upload in uploads]
    names = [upload.filename or f"upload {n + 1}" for n, upload in enumerate(uploads)]
    max_pixels = settings().max_pixels
    pixels = [screen(data, name, max_pixels) for data, name in zip(images, names, strict=True)]
    return images, names, max(pixels, default=0)


def filters_from(args: dict[str, Any]) -> Filters:
    """The `labels` and `path_prefix` fields of a request, read as everywhere (`service.filters`)."""
    return service.filters(args.get("labels"), args.get("path_prefix"))


def may_serve(
    real_path: Path, recorded: str, collection_dir: Path, roots: tuple[Path, ...] | None = None
) -> bool:
    """An item's file may be read (thumbnails, calibration): the recorded file itself (no link on
    the way), or a file in the collection or an allowed root (`roots`: the settings' by default;
    a job, outside any request, passes them)."""
    if real_path == Path(os.path.normpath(recorded)):
        return True
    roots = settings().allowed_roots if roots is None else roots
    folders = (collection_dir.resolve(), *roots)
    return any(real_path.is_relative_to(folder) for folder in folders)


def item_values(values: str | dict, what: str = "labels") -> str | dict[int, str]:
    """'folders', or the JSON object of item ids (as strings) to values (labels, splits) with
    int ids; 422 if an id is not an integer. The one reading for a new job and a resumed one."""
    if not isinstance(values, dict):
        return values
    try:
        return {int(item): str(value) for item, value in values.items()}
    except ValueError:
        raise ApiError(422, f"{what} map item ids (integers) to values") from None
