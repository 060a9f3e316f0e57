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


COLLECTION = collection_option()
LAYER = click.option("--layer", help="Layer to use (default: the collection's first).")
QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
