"""Jobs: bulk-embed a server-side folder into a collection, train a classifier; poll their progress."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import current_app, url_for

from lookalike.classify import train_classifier
from lookalike.classify.labels import check_split
from lookalike.classify.layer_choice import asked_layers
from lookalike.classify.store import check_name

from .. import audit_schemas, schemas
from ..auth import WRITE, requires
from ..errors import ApiError
from ..jobs import JobRunner, RunningJob
from ..json import Blueprint
from ..limits import client_key
from .audit import audit_work, check_audit
from .common import item_values, served, settings

blp = Blueprint("jobs", __name__, url_prefix="/v1", description="Background jobs.")
QUEUE_FULL = (
    "The collection, or the API key, has as many jobs queued or running as the server allows "
    "(max_queued_jobs, max_queued_jobs_per_key): retry after Retry-After seconds."
)
CANNOT_QUEUE = "The server cannot queue a job now (no file left to open, a stopping worker): retry."


def runner() -> JobRunner:
    return current_app.extensions["lookalike-jobs"]


def submit(kind: str, name: str, request: dict) -> tuple[dict, int, dict]:
    """Queue a job for the client that asked (its bound counts it): 202 with its Location."""
    job = runner().submit(kind, name, request, _work(kind, name, request), client_key(settings()))
    return _accepted(job)


def _accepted(job) -> tuple[dict, int, dict]:
    return job.to_dict(), 202, {"Location": url_for("jobs.get_job", job_id=job.id)}


def allowed_folder(folder: str) -> Path:
    """The folder, resolved, if it lies under one of the configured allowed roots (else 403)."""
    roots = settings().allowed_roots
    if not roots:
        raise ApiError(403, "server-side embedding is off: no allowed_roots are configured")
    try:
        path = Path(folder).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as error:  # a NUL byte, a loop of links, ...
        raise ApiError(422, f"{folder!r} is not a usable folder path: {error}") from None
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise ApiError(403, f"{folder!r} is outside the allowed roots")
    if not path.is_dir():
        raise ApiError(422, f"{folder!r} is not a folder on the server")
    return path


@blp.route("/jobs/embed", methods=["POST"])
@blp.arguments(schemas.EmbedJob())
@blp.response(202, schemas.Job)
@blp.alt_response(429, description=QUEUE_FULL)
@blp.alt_response(503, description=CANNOT_QUEUE)
@requires(WRITE)
def embed_job(body: dict):
    """Bring a collection in step with a server-side folder (under an allowed root): new and
    changed files embedded, with `prune` files gone from it removed. Uploads and deletes go on
    while it runs; only files whose real path lies in an allowed root are read."""
    served().path(body["collection"])  # 404 now, not in the job
    request = {
        "folder": str(allowed_folder(body["folder"])),
        "labels_from_folders": body["labels_from_folders"],
        "prune": body["prune"],
    }
    return submit("embed", body["collection"], request)


@blp.route("/collections/<name>/classifiers", methods=["POST"])
@blp.arguments(schemas.TrainJob())
@blp.response(202, schemas.Job)
@blp.alt_response(429, description=QUEUE_FULL)
@blp.alt_response(503, description=CANNOT_QUEUE)
@requires(WRITE)
def train_job(body: dict, name: str):
    """Train a classifier on the collection's cached embeddings, as a job (answers its card)."""
    collection = served().collection(name)  # 404 now, not in the job
    check_name(body["name"])  # a bad name (a path, say) is a 422 now, not a failed job later
    item_values(body["labels"])  # a 422 now, not a failed job later
    asked_layers(body["layer"], collection.spec.layers)  # an unknown layer too
    if body.get("split") is not None:
        check_split(body["split"])  # and an unknown split
    keys = ("name", "model", "labels", "layer", "folds", "holdout", "split", "overwrite")
    request = {key: body.get(key) for key in keys}
    return submit("train", name, request)


@blp.route("/collections/<name>/audit", methods=["POST"])
@blp.arguments(audit_schemas.AuditJob())
@blp.response(202, schemas.Job)
@blp.alt_response(429, description=QUEUE_FULL)
@blp.alt_response(503, description=CANNOT_QUEUE)
@requires(WRITE)
def audit_job(body: dict, name: str):
    """Audit the collection as a job: likely label errors (cleanlab on cross-validated
    probabilities), outliers (mean distance to the k nearest), near-duplicates across splits.
    The report is stored in the collection: `GET .../audit` answers it."""
    check_audit(name, body)
    return submit("audit", name, body)


def _work(kind: str, name: str, request: dict) -> Callable[[RunningJob], dict]:
    """A job's work from its stored request: the same for a new job and a resumed one."""
    state = served()  # the job runs outside this request's context
    if kind == "audit":
        return audit_work(name, request)
    if kind == "embed":
        folder = allowed_folder(request["folder"])  # the roots may have changed since
        return lambda running: state.embed_folder(
            name, folder, request["labels_from_folders"], running, prune=request["prune"]
        )

    def train(running: RunningJob) -> dict:
        report = train_classifier(
            state.collection(name),
            request["name"],
            item_values(request["labels"]),
            request["model"],
            request.get("layer"),  # None (a job submitted before there was a choice): auto
            folds=request["folds"],
            holdout=request["holdout"],
            overwrite=request["overwrite"],
            split=request.get("split"),  # None: every labelled item (and a job from before)
        )
        state.forget_predictor(name, request["name"])
        return report.card

    return train


@blp.route("/jobs/<job_id>")
@blp.response(200, schemas.Job)
def get_job(job_id: str) -> dict:
    """A job's state and progress (done of total), its result or its error, whichever worker
    runs it; `interrupted` when the process running it died (resume it)."""
    return runner().get(job_id).to_dict()


@blp.route("/jobs/<job_id>", methods=["DELETE"])
@blp.response(202, schemas.Job)
@requires(WRITE)
def cancel_job(job_id: str):
    """Cancel a job: a running one stops after its current batch (what it committed stays);
    a finished one is a 409."""
    return runner().cancel(job_id).to_dict()


@blp.route("/jobs/<job_id>/resume", methods=["POST"])
@blp.response(202, schemas.Job)
@blp.alt_response(429, description=QUEUE_FULL)
@blp.alt_response(503, description=CANNOT_QUEUE)
@requires(WRITE)
def resume_job(job_id: str):
    """Run an interrupted, failed or cancelled job again; an embed job skips what is done."""
    job = runner().get(job_id)
    work = _work(job.kind, job.collection, job.request)
    return _accepted(runner().resume(job_id, work, client_key(settings())))


@blp.route("/jobs")
@blp.response(200, schemas.Jobs())
def list_jobs() -> dict:
    """Every job of the served collections, newest first."""
    return {"jobs": [job.to_dict() for job in runner().all()]}
