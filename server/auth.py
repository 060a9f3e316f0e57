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


UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="lookalike"'}


def presented_keys() -> list[str]:
    """Every key the request presents: ``Authorization: Bearer KEY`` and/or ``X-API-Key: KEY``."""
    keys = []
    header = request.headers.get("Authorization")
    if header is not None:
        if header[:7].lower() != "bearer " or not header[7:].strip():
            raise ApiError(
                401, "the Authorization header must be 'Bearer KEY'", headers=UNAUTHORIZED
            )
        keys.append(header[7:].strip())
    if request.headers.get("X-API-Key") is not None:
        keys.append(request.headers["X-API-Key"])
    return keys


def matches(key: str, keys: frozenset[str]) -> bool:
    return any(hmac.compare_digest(key.encode(), known.encode()) for known in keys)


def check_api_key(settings: Settings) -> None:
    """A before_request hook for /v1 blueprints: every presented key must be known.

    The request gets the narrowest scope among its keys (a read key beside a write key reads).
    """
    if settings.open_access or request.method == "OPTIONS":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    scope = getattr(view, "lookalike_scope", READ)
    keys = presented_keys()
    if not keys:
        raise ApiError(
            401,
            "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            headers=UNAUTHORIZED,
        )
    can_write = True
    for key in keys:
        if matches(key, settings.write_keys):
            continue
        if not matches(key, settings.read_keys):
            raise ApiError(401, "unknown API key", headers=UNAUTHORIZED)
        can_write = False
    if scope == WRITE and not can_write:
        raise ApiError(403, "this key may only read; the route needs a write key")
