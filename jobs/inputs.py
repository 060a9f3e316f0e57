"""What a bulk job embeds: image folders walked, and listings (CSV or parquet with a ``path``
column, optional ``label``) read, so a catalogue of millions need not be walked by one process.

A listing's paths are local (relative ones taken from the listing's folder) or URIs that
`pyarrow.fs` opens (``s3://bucket/key``, ``gs://...``, ``file:///...``).
"""

from __future__ import annotations

from collections import Counter
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
    read from listings. A path is taken once: its first appearance (walks first, then listings
    in their order, row by row) is kept, and each later one counted in `duplicates`."""

    walked: list[ImageSource] = field(default_factory=list)
    listed: list[ImageSource] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    duplicates: int = 0
    labelled_listing: bool = False  # some listing has a label column

    @property
    def unlabelled_rows(self) -> int:
        """Listing rows kept without a label, where a listing gives labels."""
        return sum(s.label is None for s in self.listed) if self.labelled_listing else 0

    def __len__(self) -> int:
        return len(self.walked) + len(self.listed)

    def label_counts(self) -> dict[str, int]:
        """How many of the sources carry each label, most first."""
        labels = Counter(s.label for s in (*self.walked, *self.listed) if s.label is not None)
        return dict(labels.most_common())

    def drop_duplicates(self) -> None:
        """Keep each path's first source; count the rest."""
        seen: set[str] = set()
        for name in ("walked", "listed"):
            kept = []
            for source in getattr(self, name):
                if str(source.path) in seen:
                    self.duplicates += 1
                    continue
                seen.add(str(source.path))
                kept.append(source)
            setattr(self, name, kept)


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
            listed, labelled = read_listing_rows(given, within_roots)
            found.listed += listed
            found.labelled_listing |= labelled
            continue
        root = Path(given).expanduser().resolve()
        found.roots.append(root)
        found.walked += walk_images([root], labels_from_folders, within_roots)
    found.drop_duplicates()
    return found


def read_listing(listing: str | Path, within: tuple[Path, ...] | None = None) -> list[ImageSource]:
    """The sources a listing names, in its order; `InvalidArgument` for an unreadable listing,
    one without a ``path`` column, or a label `check_label` refuses (all read before any work)."""
    return read_listing_rows(listing, within)[0]


def read_listing_rows(
    listing: str | Path, within: tuple[Path, ...] | None = None
) -> tuple[list[ImageSource], bool]:
    """`read_listing`'s sources, and whether the listing has a ``label`` column (a blank label
    is no label; a label with a control character is refused: `check_label`)."""
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
        label = check_label(label, f"listing {listing}, row {row}")
        sources.append(ImageSource(_located(path, listing.parent), label, within))
    return sources, "label" in table.column_names


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
