"""Similarity search: by vector or stored id (JSON), or by uploaded images (multipart); and embed."""

from __future__ import annotations

from flask import Response, current_app

from .. import schemas
from ..errors import ApiError
from ..json import Blueprint
from .common import filters_from, may_serve, read_uploads, served, settings

CLUSTER_ITEMS = 50  # members listed per cluster

blp = Blueprint("search", __name__, url_prefix="/v1/collections", description="Similarity search.")


def _answer(results: list) -> Response:
    """The SearchResults body, made directly: a marshmallow dump of the hits cost 0.4 ms a request.

    flask-smorest returns a Response as it is; the schema still documents it (and the schemathesis
    test checks the answers against it).
    """
    return current_app.json.response({"results": [found.to_dict() for found in results]})


@blp.route("/<name>/search", methods=["POST"])
@blp.arguments(schemas.SearchJson())
@blp.response(200, schemas.SearchResults)
def search(query: dict, name: str) -> Response:
    """Neighbours of a vector (from this collection's embedder) or of a stored item."""
    library = served().live(name)
    options = {"threshold": query["threshold"], "filters": filters_from(query)}
    if "id" in query:
        return _answer(library.search_ids([query["id"]], query["k"], **options))
    fingerprint = query.get("spec_fingerprint")
    return _answer(
        library.search_vectors(query["vector"], query["k"], spec_fingerprint=fingerprint, **options)
    )


@blp.route("/<name>/search/images", methods=["POST"])
@blp.arguments(schemas.SearchUpload(), location="multipart")
@blp.response(200, schemas.SearchResults)
def search_images(form: dict, name: str) -> Response:
    """Neighbours of uploaded images, embedded with the collection's own embedder."""
    library = served().live(name)
    images, names, pixels = read_uploads(form)
    options = {"threshold": form["threshold"], "filters": filters_from(form)}
    with served().decode_budget.take(pixels):
        results = library.search_images(
            images, form["k"], names=names, max_pixels=settings().max_pixels, **options
        )
    return _answer(results)


@blp.route("/<name>/duplicates", methods=["POST"])
@blp.arguments(schemas.DedupJson())
@blp.response(200, schemas.DuplicatesFound)
def duplicates(query: dict, name: str) -> dict:
    """Clusters of near-duplicate items; with no threshold, one calibrated on the collection."""
    library = served().live(name)
    collection_dir = served().path(name)
    report = library.dedup(
        query["threshold"],
        filters_from(query),
        may_read=lambda real, recorded: may_serve(real, recorded, collection_dir),
        max_pixels=settings().max_pixels,
    )
    return report.to_dict(query["clusters"], CLUSTER_ITEMS)


@blp.route("/<name>/embed", methods=["POST"])
@blp.arguments(schemas.Images(), location="multipart")
@blp.response(200, schemas.Embeddings)
def embed(body: dict, name: str) -> dict:
    """Embed uploaded images with the collection's embedder (for clients with their own store)."""
    return _embeddings(name, body)


embed_blp = Blueprint("embed", __name__, url_prefix="/v1", description="Images to vectors.")


@embed_blp.route("/embed", methods=["POST"])
@embed_blp.arguments(schemas.EmbedUpload(), location="multipart")
@embed_blp.response(200, schemas.Embeddings)
def embed_with_served(body: dict) -> dict:
    """Embed uploaded images with a served collection's embedder (`collection` may be left out
    when the server serves one)."""
    names = served().names()
    name = body["collection"]
    if name is None:
        if len(names) != 1:
            raise ApiError(
                422,
                f"several collections are served ({', '.join(names)}): "
                "give the `collection` form field",
            )
        name = names[0]
    return _embeddings(name, body)


def _embeddings(name: str, body: dict) -> dict:
    library = served().live(name)
    images, sources, pixels = read_uploads(body)
    with served().decode_budget.take(pixels):
        vectors = library.embed(images, settings().max_pixels)
    return {
        "collection": name,
        "spec_fingerprint": library.collection.spec.fingerprint(),
        "layer": library.layer,
        "embeddings": [
            {"source": source, "vector": vector}
            for source, vector in zip(sources, vectors, strict=True)
        ],
    }
