"""`lookalike serve`: the HTTP API over one or more collections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click


def _collections(values: tuple[str, ...]) -> dict[str, Path]:
    from lookalike import service
    from lookalike.errors import InvalidArgument

    try:
        return service.collection_dirs(values)
    except InvalidArgument as error:
        raise click.UsageError(str(error)) from None


@click.command()
@click.argument("collections", nargs=-1)
@click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), help="A TOML settings file."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes (each loads the model).",
)
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Request threads per process.",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr (off, as gunicorn).")
@click.option(
    "--open", "allow_open", is_flag=True, help="Allow serving beyond loopback with no API keys."
)
@click.option(
    "--store",
    help="Search and write a shared Milvus instead of each worker's FAISS index: "
    "milvus://HOST:PORT (or milvus://HOST:PORT/NAME for one collection); reconciled on start.",
)
def serve(collections, config, host, port, workers, threads, access_log, allow_open, store) -> None:
    """Serve COLLECTIONS (DIR or NAME=DIR) over HTTP with gunicorn; settings also from LOOKALIKE_*."""
    from lookalike.server.serve import check_exposure
    from lookalike.server.serve import serve as run
    from lookalike.server.settings import Settings
    from lookalike.store.collection import Collection

    settings = Settings.from_file(config) if config else Settings()
    settings = settings.with_env()
    if collections:
        settings = dataclasses.replace(settings, collections=_collections(collections))
    if store:
        settings = dataclasses.replace(settings, store=store)
    if not settings.collections:
        raise click.UsageError(
            "give at least one collection (DIR or NAME=DIR), or set them in --config"
        )
    check_exposure(settings, host, allow_open)  # before anything is printed
    for path in settings.collections.values():
        Collection.open(
            path
        )  # a missing or damaged collection fails here, not at the first request
    click.echo(f"serving {', '.join(settings.collections)} on http://{host}:{port}/")
    run(settings, host, port, workers, threads, allow_open, access_log)
