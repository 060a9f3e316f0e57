"""The application factory: settings in, a Flask app with versioned blueprints and one error shape."""

from __future__ import annotations

import http
from collections.abc import Callable

from apispec import BasePlugin
from flask import Flask, Response, current_app, request
from flask_smorest import Api

from lookalike import __version__
from lookalike.index import set_search_threads

from . import schemas
from .auth import check_api_key
from .errors import PROBLEM_TYPE, from_http_exception, problem, register_error_handlers
from .jobs import JobBounds, JobRunner
from .json import TAKES_JSON, OrjsonProvider
from .limits import install_rate_limits
from .metrics import install_metrics
from .routes import audit, classifiers, collections, health, jobs, maps, page, search
from .settings import Settings
from .state import Served

V1_BLUEPRINTS = (
    collections.blp, search.blp, search.embed_blp, classifiers.blp, jobs.blp, audit.blp, maps.blp
)  # fmt: skip


def is_json_type(mimetype: str) -> bool:
    """application/json or application/*+json (what `request.is_json` accepts)."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def takes_json(view: Callable | None, method: str) -> bool:
    """Whether `view` parses its body as JSON (marked by `json.Blueprint.arguments`; a MethodView:
    on the method's function)."""
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, method.lower(), None)
    return getattr(view, TAKES_JSON, False)


def has_body() -> bool:
    """A body, or at least a Content-Type that says one is there."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return bool(request.mimetype or request.content_length or chunked)


def refuse_non_json() -> Response | None:
    """A JSON route sent a body of another type gets 415, not a 422 about missing fields."""
    if request.is_json or not has_body():
        return None
    if not takes_json(current_app.view_functions.get(request.endpoint), request.method):
        return None
    sent = request.mimetype or "a body without a Content-Type"
    return problem(415, f"this operation takes an application/json body, not {sent}")


class JsonBodyResponses(BasePlugin):
    """Documents the 415 of every operation whose request body is JSON (see `refuse_non_json`)."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            content = operation.get("requestBody", {}).get("content", {})
            if any(is_json_type(mimetype) for mimetype in content):
                operation.setdefault("responses", {})[415] = "UNSUPPORTED_MEDIA_TYPE"


class ProblemResponses(BasePlugin):
    """flask-smorest's per-status error responses (components), documented as problem+json: the
    error schema moved from the default content type to PROBLEM_TYPE, and none on statuses below
    400 (not errors)."""

    NOT_ERRORS = frozenset(status.phrase for status in http.HTTPStatus if status < 400)

    def response_helper(self, response: dict, **kwargs) -> dict:
        content = response.get("content", {})
        if response.get("description") in self.NOT_ERRORS:
            return {"content": {}}
        return {
            "content": {
                PROBLEM_TYPE if is_json_type(kind) else kind: body for kind, body in content.items()
            }
        }


class ProblemApi(Api):
    """flask-smorest, with its HTTP errors (422 validation included) answered as problem+json."""

    ERROR_SCHEMA = schemas.Problem

    def handle_http_exception(self, error):
        return from_http_exception(error)


def job_bounds(settings: Settings) -> JobBounds:
    return JobBounds(
        per_collection=settings.max_queued_jobs,
        per_client=settings.max_queued_jobs_per_key,
        history=settings.job_history,
        history_seconds=settings.job_history_days * 86_400,
    )


def create_app(settings: Settings | None = None) -> Flask:
    """A Flask app serving `settings.collections` (settings default to LOOKALIKE_* variables)."""
    settings = settings or Settings().with_env()
    app = Flask("lookalike.server")
    app.json = OrjsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        API_TITLE="lookalike",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",  # what the bundled Swagger UI (4.x) renders
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",  # served from the swagger-ui-bundle wheel: offline
        JSON_SORT_KEYS=False,
    )
    api = ProblemApi(
        app,
        spec_kwargs={
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                }
            },
            "security": [{"bearer": []}, {"apiKey": []}],
            "extra_plugins": [ProblemResponses(), JsonBodyResponses()],
        },
    )
    register_error_handlers(app)
    served = app.extensions["lookalike"] = Served(settings)
    app.extensions["lookalike-jobs"] = JobRunner(settings.collections, job_bounds(settings))
    install_metrics(app, served)
    install_rate_limits(app, settings)
    api.register_blueprint(health.blp)
    app.register_blueprint(page.bp)  # HTML, outside the API and its OpenAPI document
    for blueprint in V1_BLUEPRINTS:
        api.register_blueprint(blueprint)
    guarded = {blueprint.name for blueprint in V1_BLUEPRINTS}

    @app.before_request
    def one_search_thread() -> None:
        set_search_threads(1)  # OpenMP's setting is per thread: each request thread sets its own

    @app.before_request
    def authenticate() -> None:
        if request.blueprint in guarded or request.endpoint == "metrics":
            check_api_key(settings)

    app.before_request(refuse_non_json)  # after the key check: 401 before 415
    return app
