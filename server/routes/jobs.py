"""Jobs: bulk-embed a server-side folder into a collection, train a classifier; poll their progress."""

from __future__ import annotations

from pathlib import Path

from flask import current_app, url_for

from lookalike.classify import train_classifier
from lookalike.classify.store import check_name

from .. import schemas
from ..auth import WRITE, requires
from ..errors import ApiError
from ..jobs import JobRunner
from ..json import Blueprint
from .common import served, settings

blp = Blueprint("jobs", __name__, url_prefix="/v1", description="Background jobs.")


def runner() -> JobRunner:
    return current_app.extensions["lookalike-jobs"]


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
@requires(WRITE)
def embed_job(body: dict):
    """Embed every image under a server-side folder (under an allowed root) into a collection."""
    name, state = body["collection"], served()  # the job runs outside this request's context
    state.path(name)  # 404 now, not in the job
    folder = allowed_folder(body["folder"])
    job = runner().submit(
        "embed",
        name,
        lambda job: state.embed_folder(name, folder, body["labels_from_folders"], job),
    )
    return _accepted(job)


@blp.route("/collections/<name>/classifiers", methods=["POST"])
@blp.arguments(schemas.TrainJob())
@blp.response(202, schemas.Job)
@requires(WRITE)
def train_job(body: dict, name: str):
    """Train a classifier on the collection's cached embeddings, as a job (answers its card)."""
    state = served()  # the job runs outside this request's context
    collection = state.collection(name)
    check_name(body["name"])  # a bad name (a path, say) is a 422 now, not a failed job later
    labels = body["labels"]
    if isinstance(labels, dict):
        try:
            labels = {int(item): str(label) for item, label in labels.items()}
        except ValueError:
            raise ApiError(422, "labels map item ids (integers) to labels") from None

    def work(job) -> dict:
        report = train_classifier(
            collection,
            body["name"],
            labels,
            body["model"],
            folds=body["folds"],
            holdout=body.get("holdout"),
            overwrite=body["overwrite"],
        )
        state.forget_predictor(name, body["name"])
        return report.card

    return _accepted(runner().submit("train", name, work))


@blp.route("/jobs/<job_id>")
@blp.response(200, schemas.Job)
def get_job(job_id: str) -> dict:
    """A job's state and progress (done of total), its result or its error."""
    return runner().get(job_id).to_dict()


@blp.route("/jobs")
@blp.response(200, schemas.Jobs())
def list_jobs() -> dict:
    """Every job of this server process, newest first."""
    return {"jobs": [job.to_dict() for job in runner().all()]}
