"""Lazy package exports (PEP 562): a package names what it exports and where each lives, and a
submodule is imported only when one of its names is first used.

Why: `lookalike index build` and the store need no torch; an eager `lookalike.embedder` or
`lookalike.index` package imported it (about 0.5 GiB resident) into every process that touched
a collection, which a memory budget then had to carry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, where: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name `name` lives in `.{where[name]}`."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
