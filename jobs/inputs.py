"""What a bulk job embeds: image folders walked, and listings (CSV or parquet with a ``path``
column, optional ``label``) read, so a catalogue of millions need not be walked by one process.

A listing's paths are local (relative ones taken from the listing's folder) or URIs that
`pyarrow.fs` opens (``s3://bucket/key``, ``gs://...``, ``file:///...``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lookalike.embedder.sources import ImageSource, check_label, is_uri, walk_images
from lookalike.errors import InvalidArgument

LISTING_SUFFIXES = (".csv", ".parquet")


@dataclass
class Inputs:
    """The sources of a run: those walked under `roots` (stat-ed: changed files found) and those
    read from listings (each path embedded once)."""

    walked: list[ImageSource] = field(default_factory=list)
    listed: list[ImageSource] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)


def is_listing(path: str | Path) -> bool:
    return Path(path).suffix.lower() in LISTING_SUFFIXES and Path(path).is_file()


def gather_inputs(
    inputs: Iterable[str | Path],
    labels_from_folders: bool = False,
    within: Sequence[Path] | None = None,
) -> Inputs:
    """Folders and image files walked (`walk_images`), listings read (`read_listing`)."""
    found = Inputs()
    within_roots = tuple(within) if within else None
    for given in inputs:
        if is_listing(given):
            found.listed += read_listing(given, within_roots)
            continue
        root = Path(given).expanduser().resolve()
        found.roots.append(root)
        found.walked += walk_images([root], labels_from_folders, within_roots)
    return found


def read_listing(listing: str | Path, within: tuple[Path, ...] | None = None) -> list[ImageSource]:
    """The sources a listing names, in its order; `InvalidArgument` for an unreadable listing,
    one without a ``path`` column, or a label over `MAX_LABEL_LENGTH` (all read before any work)."""
    listing = Path(listing).expanduser().resolve()
    table = _read_table(listing)
    if "path" not in table.column_names:
        raise InvalidArgument(
            f"listing {listing} has no 'path' column (its columns: {table.column_names})"
        )
    paths = pc.cast(table["path"], pa.string()).to_pylist()
    labels = (
        pc.cast(table["label"], pa.string()).to_pylist()
        if "label" in table.column_names
        else [None] * len(paths)
    )
    sources = []
    for row, (path, label) in enumerate(zip(paths, labels, strict=True), start=1):
        if not path:
            raise InvalidArgument(f"listing {listing}, row {row}: the path is empty")
        check_label(label, f"listing {listing}, row {row}")
        sources.append(ImageSource(_located(path, listing.parent), label or None, within))
    return sources


def _read_table(listing: Path) -> pa.Table:
    import pyarrow.csv as csv
    import pyarrow.parquet as pq

    try:
        if listing.suffix.lower() == ".parquet":
            return pq.read_table(listing)
        options = csv.ConvertOptions(column_types={"path": pa.string(), "label": pa.string()})
        return csv.read_csv(listing, convert_options=options)
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidArgument(f"cannot read listing {listing}: {error}") from None


def _located(path: str, folder: Path) -> Path | str:
    """A URI as given; a local path made absolute (a relative one from the listing's folder)."""
    if is_uri(path):
        return path
    return (folder / Path(path).expanduser()).resolve()
