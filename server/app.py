"""The application factory: settings in, a Flask app with versioned blueprints and one error shape."""

from __future__ import annotations

import http

from flask import Flask, request
from flask_smorest import Api

from lookalike import __version__
from lookalike.index import set_search_threads

from . import schemas
from .auth import check_api_key
from .errors import PROBLEM_TYPE, from_http_exception, register_error_handlers
from .jobs import JobRunner
from .json import OrjsonProvider
from .limits import install_rate_limits
from .metrics import install_metrics
from .routes import classifiers, collections, health, jobs, page, search
from .settings import Settings
from .state import Served

V1_BLUEPRINTS = (collections.blp, search.blp, search.embed_blp, classifiers.blp, jobs.blp)


class ProblemApi(Api):
    """flask-smorest, with its HTTP errors (422 validation included) answered as problem+json."""

    ERROR_SCHEMA = schemas.Problem

    def handle_http_exception(self, error):
        return from_http_exception(error)

    def _register_responses(self) -> None:
        """flask-smorest's per-status error responses, documented as problem+json."""
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["content"] = {PROBLEM_TYPE: {"schema": self.ERROR_SCHEMA}}
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response(
            "DEFAULT_ERROR",
            {"description": "An error", "content": {PROBLEM_TYPE: {"schema": self.ERROR_SCHEMA}}},
            lazy=True,
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
        },
    )
    register_error_handlers(app)
    served = app.extensions["lookalike"] = Served(settings)
    app.extensions["lookalike-jobs"] = JobRunner()
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

    return app
