"""Where images come from: folder walks with an extension allowlist, and safe decoding."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lookalike.errors import BadImage, InvalidArgument, PathNotAllowed

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF"})
DEFAULT_MAX_PIXELS = 64_000_000  # under Pillow's own bomb warning (89 M), above any camera's output
# Pillow refuses more than twice its MAX_IMAGE_PIXELS in Image.open, whatever we allow: a higher
# max_pixels would be capped silently, so it is refused instead.
PILLOW_PIXEL_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 2**62)
ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
# The longest label an item may have, in characters: a class name, never a document. Listings and
# uploads over it are refused (a folder name, at most 255 bytes, always fits); a vector store
# whose label field is shorter cuts labels by one rule (`milvus_store.fit`).
MAX_LABEL_LENGTH = 1024
# Folder names that name a dataset's split, not a class: each to its one spelling.
SPLIT_NAMES = {
    "train": "train", "training": "train", "trn": "train",
    "test": "test", "testing": "test", "tst": "test",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
}  # fmt: skip


def check_max_pixels(max_pixels: int) -> int:
    """`max_pixels` if it is a pixel limit decoding can honour; `InvalidArgument` if not."""
    if not 1 <= max_pixels <= PILLOW_PIXEL_LIMIT:
        raise InvalidArgument(
            f"max_pixels must be between 1 and {PILLOW_PIXEL_LIMIT:,} (Pillow's decompression-bomb "
            f"limit, which no image may pass), got {max_pixels:,}"
        )
    return max_pixels


@dataclass(frozen=True)
class ImageSource:
    """One image file to embed, with the label its folder gives it (if labels come from folders).
    With `within`, the file is read only if its real path (links resolved) lies in one of those
    folders."""

    path: Path | str  # a local path, or a URI (``s3://``, ``gs://``, ``file://``) as a string
    label: str | None = None
    within: tuple[Path, ...] | None = None


def split_name(name: str) -> str | None:
    """The split a folder name names (``Validation`` -> ``val``), or None."""
    return SPLIT_NAMES.get(name.lower())


def split_of_path(path: str | Path) -> str | None:
    """The split a path's folders name (the one nearest the file), or None: an item's split, for
    training on one split and for the audit's leakage across splits."""
    for part in reversed(PurePath(path).parent.parts):
        if (split := split_name(part)) is not None:
            return split
    return None


def check_label(label: str | None, where: str) -> str | None:
    """A label as items keep it: None for none, an empty or blank one included; a label holding
    a control character (a newline, a tab, ...) or longer than `MAX_LABEL_LENGTH` is refused
    (`InvalidArgument` naming `where`), so every table and file that prints labels stays one line
    per item and every vector store can hold it. The one rule for every way labels come in
    (folder names, listings, uploads, labels files)."""
    if label is None or not label.strip():
        return None
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidArgument(
            f"{where}: the label is {len(label)} characters; at most {MAX_LABEL_LENGTH} "
            "(shorten it)"
        )
    bad = next((c for c in label if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise InvalidArgument(
            f"{where}: the label {label!r} holds a control character ({bad!r}); a label is one "
            "line of printable text: rename it"
        )
    return label


def walk_images(
    roots: Iterable[str | Path],
    labels_from_folders: bool = False,
    within: tuple[Path, ...] | None = None,
) -> Iterator[ImageSource]:
    """Image files under each root (or the root itself when it is a file), in a stable order.

    Hidden files and folders are skipped. With `labels_from_folders`, an image's label is the name
    of the first sub-folder of its root that holds it (torchvision's ImageFolder convention), or,
    where that sub-folder names a split (``train/``, ``test/``, ``val/``: `SPLIT_NAMES`), the
    sub-folder under it: ``root/train/cat/1.png`` is a ``cat`` of the ``train`` split.
    `within`: the folders each file's real path must lie in when it is read (see `read_file`).
    """
    for root in roots:
        root = Path(root).expanduser().resolve()
        if root.is_file():
            yield ImageSource(root, within=within)
        elif root.is_dir():
            yield from _walk_folder(root, labels_from_folders, within)
        else:
            raise FileNotFoundError(f"no such file or folder: {root}")


def _walk_folder(
    root: Path, labels_from_folders: bool, within: tuple[Path, ...] | None
) -> Iterator[ImageSource]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        label = folder_label(here.relative_to(root).parts) if labels_from_folders else None
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield ImageSource(here / name, label, within)


def folder_label(relative: tuple[str, ...]) -> str | None:
    """The label of the images in a folder (its parts under the root): its first part, or the
    second where the first names a split and has folders under it (images right in ``test/``
    keep ``test``, a class that may be so named; labels like splits are warned of); None for
    the root itself."""
    where = f"folder {'/'.join(relative)}"
    if len(relative) > 1 and split_name(relative[0]) is not None:
        relative = relative[1:]
    return check_label(relative[0], where) if relative else None


@dataclass(frozen=True)
class FileRead:
    """A regular file's bytes, its stat at open, and its real path (every link resolved)."""

    data: bytes
    stat: os.stat_result
    real_path: Path


def read_file(path: str | Path, within: Iterable[Path] | None = None) -> FileRead:
    """Read a regular file without ever blocking on open: a FIFO, socket or device is refused
    (`BadImage`) rather than waited on. With `within`, the real path of the file actually opened
    (not of the name, which a link swapped in later could change) must lie in one of those folders,
    else `PathNotAllowed`. Other failures are `OSError`s."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadImage(f"not a regular file ({_file_kind(info.st_mode)}): only files are read")
        real = _real_path(fd, path)
        if within is not None and not any(real.is_relative_to(root) for root in within):
            raise PathNotAllowed(f"{path} resolves to {real}, outside the allowed folders")
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb", closefd=True) as handle:
        return FileRead(handle.read(), info, real)


def is_uri(path: str | Path) -> bool:
    """Whether `path` names an object in a file system `pyarrow.fs` opens (``s3://bucket/key``)."""
    return isinstance(path, str) and "://" in path


def read_uri(uri: str, within: Iterable[Path] | None = None) -> FileRead:
    """Read an object by URI with `pyarrow.fs` (S3, GCS, HDFS, ``file://``; credentials from the
    environment, as pyarrow finds them). Only plain files are read; where reads are confined to
    folders (`within`), URIs are refused (`PathNotAllowed`). Other failures are `OSError`s."""
    from pyarrow import fs

    if within is not None:
        raise PathNotAllowed(f"{uri}: only local files under the allowed folders may be read")
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except pa_errors() as error:
        raise OSError(f"cannot open {uri}: {error}") from None
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(2, "No such file or directory", uri)
    if info.type != fs.FileType.File:
        raise BadImage("not a regular file: only files are read")
    with filesystem.open_input_stream(path) as stream:
        data = stream.read()
    mtime_ns = info.mtime_ns or 0
    fields = (stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, len(data), 0, mtime_ns // 10**9, 0)
    return FileRead(data, os.stat_result(fields, {"st_mtime_ns": mtime_ns}), Path(path))


def pa_errors() -> tuple[type[Exception], ...]:
    """What `pyarrow.fs` raises for a URI it cannot open: an unknown scheme, a bad address."""
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError)


def _real_path(fd: int, path: str | Path) -> Path:
    """Where the open file really is: from /proc on Linux (race-free), else resolved by name."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    kinds += ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image, maybe decoded at a reduced scale, the full upright size, and the
    format its bytes are in."""

    image: Image.Image
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Header:
    """What an image's header says: its format and upright size."""

    format: str
    width: int
    height: int


# Preprocessing resizes the short side up or down to the model's size, so a 1 x 1,000,000 image
# (a few kB) would become 224 x 224,000,000 pixels: refused, panoramas (up to ~20:1) are not.
MAX_ASPECT_RATIO = 100


def check_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """The format and upright size of encoded bytes, checked (allowlist, pixel limit, aspect
    ratio) without decoding a pixel; `BadImage` saying why not."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    with _pillow_errors_as_bad_image():
        return _header(Image.open(io.BytesIO(data)), max_pixels)


def _header(image: Image.Image, max_pixels: int) -> Header:
    if image.format not in ALLOWED_FORMATS:
        raise BadImage(f"format {image.format} is not allowed; allowed: {sorted(ALLOWED_FORMATS)}")
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(
            f"image is {width}x{height}: one side is over {MAX_ASPECT_RATIO} times the other, and "
            "preprocessing scales the short side to the model's size (the long one would take "
            "too many pixels)"
        )
    if image.getexif().get(ExifTags.Base.Orientation) in ROTATED_ORIENTATIONS:
        width, height = height, width
    return Header(image.format, width, height)


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, short_side: int | None = None
) -> Image.Image:
    """Decode bytes into an upright RGB image, or raise `BadImage` saying why not (see `decode`)."""
    return decode(data, max_pixels, short_side).image


def decode(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, short_side: int | None = None
) -> DecodedImage:
    """Decode bytes into an upright RGB image, or raise `BadImage` saying why not.

    The format must be allowlisted and the pixel count under `max_pixels`, both checked from the
    header before any pixel is decoded. Transparent images are composited onto white. With
    `short_side`, a JPEG at least twice that size is decoded by libjpeg at 1/2, 1/4 or 1/8 scale
    (Pillow's `draft`), its short side kept at `short_side` or more: 4-5x less work for a photo.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    with _pillow_errors_as_bad_image():
        image = Image.open(io.BytesIO(data))
        header = _header(image, max_pixels)
        if short_side and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (short_side, short_side))  # the largest scale-down keeping both
        image.load()
        upright = _to_rgb(ImageOps.exif_transpose(image))
        return DecodedImage(upright, header.width, header.height, header.format)


@contextlib.contextmanager
def _pillow_errors_as_bad_image() -> Iterator[None]:
    """Pillow's ways of failing on bad bytes, each as a `BadImage` that says which."""
    try:
        yield
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"corrupt or truncated image: {error}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = _sixteen_bit_to_eight(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _sixteen_bit_to_eight(image: Image.Image) -> Image.Image:
    """16-bit greyscale (Pillow's "I;16" or "I") scaled to 8 bits by 1/257, rounded; Pillow's
    own conversion clips every value above 255 to white. Integer arithmetic: 4 bytes a pixel."""
    pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    pixels += 128
    pixels //= 257
    return Image.fromarray(pixels.astype(np.uint8))


def item_row(
    path: str | Path, label: str | None, data: bytes, mtime_ns: int, width: int, height: int
) -> dict[str, Any]:
    """An image's item row: the columns a collection keeps of it (the store's ITEM_SCHEMA, but
    the id it gets when written). The one builder: bulk jobs, the GPU path and uploads."""
    return {
        "path": str(path),
        "label": label,
        "sha256": sha256_hex(data),
        "width": width,
        "height": height,
        "bytes": len(data),
        "mtime_ns": mtime_ns,
    }


def failure_row(source: ImageSource, reason: str, read: FileRead | None = None) -> dict[str, Any]:
    """A file that could not be embedded: its path, label and why (with its size and mtime when
    it was read, so an unchanged known-bad file is skipped next time)."""
    row: dict[str, Any] = {"path": str(source.path), "label": source.label, "reason": reason}
    if read is not None:
        row.update(bytes=len(read.data), mtime_ns=read.stat.st_mtime_ns)
    return row


def read_source(source: ImageSource) -> tuple[FileRead | None, dict[str, Any] | None]:
    """A source's file read (see `read_file`: regular files only, inside `source.within`; a URI
    through `read_uri`), or None and its failure row."""
    try:
        if is_uri(source.path):
            return read_uri(str(source.path), source.within), None
        return read_file(source.path, source.within), None
    except OSError as error:
        return None, failure_row(source, f"cannot read: {error.strerror or error}")
    except (BadImage, PathNotAllowed) as error:
        return None, failure_row(source, f"cannot read: {error}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
