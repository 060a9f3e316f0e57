"""Liveness and readiness."""

from __future__ import annotations

from .. import schemas
from ..errors import ApiError
from ..json import Blueprint
from .common import served

blp = Blueprint("health", __name__, description="Liveness and readiness probes.")


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200, schemas.Health())
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.doc(security=[])
@blp.response(200, schemas.Readiness())
@blp.alt_response(503, description="Not every collection can answer: see `collections`.")
def readyz() -> dict:
    """Every served collection has its index and embedder loaded, its folder, and a vector store
    that answers (a Milvus store pinged, at most every 1.5 s); 503 with each one's state if not."""
    states = served().ready()
    if any(state != "ready" for state in states.values()):
        raise ApiError(503, "not every collection can answer yet", collections=states)
    return {"status": "ready", "collections": states}
