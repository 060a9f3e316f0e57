"""Rate limits (flask-limiter), per API key or else per client address; 429 is a problem too."""

from __future__ import annotations

import hashlib

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .auth import matches, presented_keys
from .errors import ApiError
from .settings import Settings

UNLIMITED = ("health.healthz", "health.readyz", "metrics", "page.static")


def client_key(settings: Settings) -> str:
    """A configured key's own bucket; anything else (no key, a made-up key) its address's."""
    try:
        keys = presented_keys()
    except ApiError:  # a malformed header: the auth check answers 401; count it by address
        keys = []
    for key in keys:
        if matches(key, settings.read_keys) or matches(key, settings.write_keys):
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "address:" + get_remote_address()


def install_rate_limits(app: Flask, settings: Settings) -> Limiter | None:
    """Apply `settings.rate_limit` (e.g. "2000/second;50000/minute") to every other route."""
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        key_func=lambda: client_key(settings),
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri="memory://",
        headers_enabled=True,
    )

    @limiter.request_filter
    def exempt() -> bool:
        return request.endpoint in UNLIMITED

    return limiter
