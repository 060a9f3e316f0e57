"""Run the app under gunicorn (a production WSGI server), the model and index loaded once per worker."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from lookalike.errors import InvalidArgument
from lookalike.index import prepare_index, set_search_threads

from .app import create_app
from .settings import Settings
from .worker import configured_worker

log = logging.getLogger(__name__)
READY_LINE = "lookalike worker ready:"
# A worker holds requests that are still arriving in memory: at most this many full-size uploads.
BUFFERED_UPLOADS = 4


class LookalikeServer(BaseApplication):
    """gunicorn with its config from arguments; each worker builds and warms its own app."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        app = create_app(self.settings)
        app.extensions["lookalike"].warm()  # in the worker, after the fork: no torch state forked
        logging.getLogger("gunicorn.error").info(
            "%s %s", READY_LINE, ", ".join(self.settings.collections)
        )
        return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str, allow_open: bool = False) -> None:
    """Refuse to serve beyond loopback with no API keys, unless `allow_open` says so."""
    if settings.open_access and not is_loopback(host) and not allow_open:
        raise InvalidArgument(
            f"refusing to serve {host} without API keys: set read_keys/write_keys "
            "(LOOKALIKE_READ_KEYS, LOOKALIKE_WRITE_KEYS), or pass --open to allow it"
        )


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int = 8,
    allow_open: bool = False,
    access_log: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish (up to 30 s) before workers exit."""
    check_exposure(settings, host, allow_open)
    # FAISS's parallel regions run on the OpenMP runtime torch loaded; a team of OpenMP threads
    # started here, in the master, would not exist in the forked workers, and their first torch
    # op would wait for it forever (an index built or caught up after a crash hung every worker).
    set_search_threads(1)
    if settings.store is not None:
        from lookalike.index.milvus_sync import check_reachable

        check_reachable(settings.store, workers)
    for name, path in settings.collections.items():
        log.info("serving %s from %s", name, path)
        if settings.store is None:
            prepare_index(path)
        # with a shared store, each worker reconciles it on opening (under the collection's
        # lock): no gRPC channel is opened here, before the fork
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        # gthread, with each request read whole before a thread sees it (slow clients hold
        # no thread), within request_timeout and max_upload_bytes; see worker.py
        "worker_class": configured_worker(
            settings.request_timeout,
            settings.max_upload_bytes,
            BUFFERED_UPLOADS * settings.max_upload_bytes,
        ),
        "timeout": 120,
        "graceful_timeout": 30,
        "accesslog": "-" if access_log else None,  # /metrics counts requests either way
        "limit_request_line": 8190,
    }
    LookalikeServer(settings, options).run()
