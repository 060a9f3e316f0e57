"""API keys with read and write scopes (401 without a key, 403 with a read key on a write route)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from .errors import ApiError
from .settings import Settings

View = TypeVar("View", bound=Callable)
READ, WRITE = "read", "write"


def requires(scope: str) -> Callable[[View], View]:
    """Mark a view as needing `scope` (views are read-scoped unless marked)."""

    def mark(view: View) -> View:
        view.lookalike_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def presented_key() -> str | None:
    """The key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def matches(key: str, keys: frozenset[str]) -> bool:
    return any(hmac.compare_digest(key.encode(), known.encode()) for known in keys)


def check_api_key(settings: Settings) -> None:
    """A before_request hook for /v1 blueprints."""
    if settings.open_access or request.method == "OPTIONS":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    scope = getattr(view, "lookalike_scope", READ)
    key = presented_key()
    if key is None:
        raise ApiError(
            401,
            "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            headers={"WWW-Authenticate": 'Bearer realm="lookalike"'},
        )
    if matches(key, settings.write_keys):
        return
    if matches(key, settings.read_keys):
        if scope == READ:
            return
        raise ApiError(403, "this key may only read; the route needs a write key")
    raise ApiError(401, "unknown API key", headers={"WWW-Authenticate": 'Bearer realm="lookalike"'})
