"""One error shape: every error is application/problem+json (RFC 9457), from one handler."""

from __future__ import annotations

import errno
import logging
from typing import Any

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from lookalike.errors import (
    BadImage,
    Cancelled,
    ClassifierError,
    ClassifierExists,
    CollectionBusy,
    CollectionError,
    FolderGone,
    LabelError,
    LookalikeError,
    PathNotAllowed,
    SpecMismatch,
    StorageFull,
    StorageReadOnly,
    UnknownClassifier,
    UnknownItem,
    VectorStoreUnavailable,
    WritePending,
)

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://lookalike.dev/problems/"

# Library errors, most specific first: (class, HTTP status).
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (StorageFull, 507),  # Insufficient Storage: the client may retry once space is freed
    (StorageReadOnly, 507),  # unable to store: the collection's file system refuses writes
    (VectorStoreUnavailable, 503),  # the vector database is down: retry later
    (FolderGone, 503),  # a served collection's folder was deleted or unmounted
    (PathNotAllowed, 403),
    (Cancelled, 409),
    (UnknownItem, 404),
    (UnknownClassifier, 404),
    (ClassifierExists, 409),
    (SpecMismatch, 409),
    (CollectionError, 409),
    (BadImage, 422),
    (LabelError, 422),
    (ClassifierError, 422),
    (LookalikeError, 422),
)
# The process (or the system) has no file descriptor left: a moment's overload, not a fault.
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


class ApiError(Exception):
    """An error a view raises on purpose; becomes a problem+json answer with `status`."""

    def __init__(
        self,
        status: int,
        detail: str,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.headers = headers
        self.extra = extra


def problem_json(
    status: int, detail: str | None = None, title: str | None = None, **extra: Any
) -> bytes:
    """The body of a problem answer as JSON bytes: for Flask's answers and for those the gunicorn
    worker (`worker.py`) writes itself, before or outside the app."""
    from werkzeug.http import HTTP_STATUS_CODES

    title = title or HTTP_STATUS_CODES.get(status, "Error")
    body = {
        "type": TYPE_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        **({"detail": detail} if detail else {}),
        **extra,
    }
    return json.dumps(body).encode()


def problem(
    status: int,
    detail: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The one error answer: type, title, status, detail (+ extra members such as `errors`)."""
    body = problem_json(status, detail, title, **extra)
    response = Response(body, status=status, mimetype=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_http_exception(error: HTTPException) -> Response:
    data = getattr(error, "data", None) or {}
    extra = {"errors": data["messages"]} if "messages" in data else {}
    if "errors" in data:
        extra["errors"] = data["errors"]
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type",)}
    headers.update(data.get("headers") or {})
    detail = data.get("message") or error.description
    if extra.get("errors"):
        detail = "the request is not valid: see errors"
    return problem(error.code or 500, detail, headers=headers, **extra)


def status_of(error: Exception) -> int | None:
    """The status of a library error (LookalikeError); None for anything else, a server fault."""
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return None


def register_error_handlers(app: Flask) -> None:
    """Problems for ApiError, the library's errors, HTTP errors, and anything unexpected (500)."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return problem(error.status, error.detail, error.title, error.headers, **error.extra)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return from_http_exception(error)

    @app.errorhandler(Exception)
    def any_error(error: Exception) -> Response:
        if isinstance(error, OSError) and error.errno in OUT_OF_FILES:
            log.warning("no file descriptor left: %s", error)
            detail = f"the server cannot open a file now ({error.strerror}); retry in a few seconds"
            return problem(503, detail, headers={"Retry-After": "5"})
        status = status_of(error)
        if status is None:
            log.exception("unhandled error")
            return problem(500, "an internal error occurred; it has been logged")
        retry = (
            {"Retry-After": "5"}
            if isinstance(error, CollectionBusy | VectorStoreUnavailable)
            else None
        )
        pending = {"pending_items": error.items} if isinstance(error, WritePending) else {}
        return problem(status, str(error), headers=retry, **pending)
