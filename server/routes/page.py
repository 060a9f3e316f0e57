"""The web page: drop an image, see its look-alikes (server-rendered HTML + a little JS)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from .common import served

HERE = Path(__file__).resolve().parent.parent
bp = Blueprint(
    "page",
    __name__,
    template_folder=str(HERE / "templates"),
    static_folder=str(HERE / "static"),
    static_url_path="/static",
)


@bp.route("/")
def index() -> str:
    state = served()
    return render_template(
        "index.html", collections=state.names(), needs_key=not state.settings.open_access
    )


@bp.route("/docs/assets/<path:filename>")
def docs_assets(filename: str) -> Response:
    """Swagger UI's files for the /docs page, from the installed bundle (no CDN)."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
