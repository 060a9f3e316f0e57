"""Options shared by several `lookalike` commands."""

from __future__ import annotations

from pathlib import Path

import click


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


COLLECTION = collection_option()
LAYER = click.option("--layer", help="Layer to use (default: the collection's first).")
QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
