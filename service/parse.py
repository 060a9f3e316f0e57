"""Plain values as the faces receive them (CLI options, JSON fields, environment variables) made
into what the library takes: one reading of each, for the CLI, the server and a Python user."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lookalike.errors import InvalidArgument
from lookalike.index.vector_store import Filters


def filters(labels: Iterable[str] | None = None, path_prefix: str | None = None) -> Filters:
    """Which items a search or dedup keeps: those with one of `labels` (any, where none are
    given) and whose path starts with `path_prefix` (any, where None)."""
    return Filters(tuple(labels or ()), path_prefix)


def collection_dirs(values: Iterable[str], bare: bool = True) -> dict[str, Path]:
    """``NAME=DIR`` values (or a bare ``DIR``, named after its folder, where `bare`) as
    {name: absolute folder}; a blank part or a name given twice raises `InvalidArgument`."""
    found: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep and bare:
            name, path = Path(value).expanduser().resolve().name, value
        if (not sep and not bare) or not name or not path:
            raise InvalidArgument(f"a collection is NAME=DIR, got {value!r}")
        if name in found:
            raise InvalidArgument(f"two collections named {name!r}: name them NAME=DIR")
        found[name] = Path(path).expanduser().resolve()
    return found
