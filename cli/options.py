"""Options shared by several `lookalike` commands."""

from __future__ import annotations

import math
from pathlib import Path

import click

from lookalike.checks import Range


def collection_option(help_text: str = "Collection directory."):
    return click.option(
        "-c",
        "--collection",
        "collection_dir",
        required=True,
        type=click.Path(path_type=Path),
        help=help_text,
    )


def weights_value(value: str | None) -> str | None:
    """A `--weights` value as the registry takes it: 'none' (any case) is random init (None)."""
    return None if value is not None and value.lower() == "none" else value


def weights_callback(context: click.Context, parameter: click.Parameter, value: str | None):
    """`weights_value` as a click callback."""
    return weights_value(value)


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf too (they pass its comparisons)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def ranged(bound: Range) -> click.ParamType:
    """The click type of a numeric option whose library parameter has range `bound`."""
    kind = click.IntRange if bound.integer else FiniteRange
    return kind(bound.low, bound.high, min_open=bound.low_open, max_open=bound.high_open)


COLLECTION = collection_option()
LAYER = click.option("--layer", help="Layer to use (default: the collection's first).")
STORE = click.option(
    "--store",
    help="Search the Milvus collection pushed there instead of the FAISS index: "
    "milvus://HOST:PORT/NAME (see `index push`).",
)
QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


def labels_options(command):
    """Where training labels come from, the same for `train` and `probe`: `--labels-from-folders`
    (the default) or `--labels FILE`."""
    command = click.option(
        "--labels",
        "labels_file",
        metavar="FILE",
        help="A CSV or parquet with an id or path column and a label column.",
    )(command)
    return click.option(
        "--labels-from-folders",
        is_flag=True,
        help="Label each image by its first sub-folder (for a collection: as recorded by "
        "`embed --labels-from-folders`). The default without --labels.",
    )(command)


def labels_value(from_folders: bool, labels_file: str | None) -> str:
    """What the library takes: 'folders' or a labels file (`--labels folders`, the old
    spelling, still means folders)."""
    if labels_file is None or labels_file == FOLDERS:
        return FOLDERS
    if from_folders:
        raise click.UsageError("give --labels-from-folders or --labels FILE, not both")
    return labels_file


FOLDERS = "folders"  # `classify.labels.FOLDERS`, without importing the library
