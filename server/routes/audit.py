"""The audit of a collection: the latest one stored (`GET`), and the work of the audit job that
runs one (`POST .../audit` in `jobs`: an audit fits classifiers by cross-validation and may take
minutes, longer than a request should)."""

from __future__ import annotations

from collections.abc import Callable

from lookalike.explore.audit import audit_collection
from lookalike.explore.audit_store import load_report, save_report
from lookalike.index import set_search_threads

from .. import audit_schemas
from ..errors import ApiError
from ..jobs import RunningJob
from ..json import Blueprint
from .common import item_values, may_serve, served, settings

blp = Blueprint(
    "audit",
    __name__,
    url_prefix="/v1/collections",
    description="Audit: likely label errors, outliers, near-duplicates across splits.",
)


@blp.route("/<name>/audit")
@blp.arguments(audit_schemas.AuditQuery(), location="query")
@blp.response(200, audit_schemas.AuditFound)
def get_audit(query: dict, name: str) -> dict:
    """The collection's latest audit (run by `POST .../audit` or the CLI), its `top` findings a
    part; `stale` when items were added or deleted since."""
    found = load_report(served().collection(name), query["top"])
    if found is None:
        raise ApiError(
            404, f"collection {name!r} has no audit yet: POST /v1/collections/{name}/audit runs one"
        )
    return found


def check_audit(name: str, request: dict) -> None:
    """A bad request is a 4xx now, not a failed job later."""
    served().collection(name)
    item_values(request["labels"])
    item_values(request["splits"], "splits")


def audit_work(name: str, request: dict) -> Callable[[RunningJob], dict]:
    """The audit job's work from its stored request (the same for a new job and a resumed one):
    it stores the report in the collection and answers its counts."""
    state = served()  # the job runs outside this request's context
    roots, max_pixels = settings().allowed_roots, settings().max_pixels
    collection_dir = state.path(name)

    def work(running: RunningJob) -> dict:
        set_search_threads(1)  # as a request thread does: no OpenMP team in a forked worker
        labels = item_values(request["labels"])
        splits = item_values(request["splits"], "splits")
        report = audit_collection(
            collection_dir,
            labels=None if labels == "folders" else labels,
            splits=None if splits == "folders" else splits,
            parts=request["parts"],
            layer=request["layer"],
            model=request["model"],
            k=request["k"],
            threshold=request["threshold"],
            searcher=state.searcher(name),
            progress=False,
            may_read=lambda real, recorded: may_serve(real, recorded, collection_dir, roots),
            max_pixels=max_pixels,
        )
        save_report(state.collection(name), report, request)
        found = report.to_dict(0)
        return {part: found[part] for part in ("items", "skipped", "seconds")} | {
            part: {key: value for key, value in found[part].items() if key != "top"}
            for part in ("label_errors", "outliers", "leaks")
            if part in found
        }

    return work
