"""Similarity search: by vector or stored id (JSON), or by uploaded images (multipart); and embed."""

from __future__ import annotations

from flask import Response, current_app

from lookalike.index import find_duplicates
from lookalike.index.calibrate import calibrated_threshold

from .. import schemas
from ..errors import ApiError
from ..json import Blueprint
from .common import filters_from, may_serve, read_uploads, served, settings

CLUSTER_ITEMS = 50  # members listed per cluster

blp = Blueprint("search", __name__, url_prefix="/v1/collections", description="Similarity search.")


def _answer(queries: list[str], results: list) -> Response:
    """The SearchResults body, made directly: a marshmallow dump of the hits cost 0.4 ms a request.

    flask-smorest returns a Response as it is; the schema still documents it (and the schemathesis
    test checks the answers against it).
    """
    body = {
        "results": [
            {"query": query, "hits": [hit.to_dict() for hit in hits]}
            for query, hits in zip(queries, results, strict=True)
        ]
    }
    return current_app.json.response(body)


@blp.route("/<name>/search", methods=["POST"])
@blp.arguments(schemas.SearchJson())
@blp.response(200, schemas.SearchResults)
def search(query: dict, name: str) -> Response:
    """Neighbours of a vector (from this collection's embedder) or of a stored item."""
    searcher = served().searcher(name)
    options = {"threshold": query["threshold"], "filters": filters_from(query)}
    if "id" in query:
        return _answer(
            [f"id {query['id']}"], searcher.search_ids([query["id"]], query["k"], **options)
        )
    results = searcher.search_vectors(
        query["vector"], query["k"], spec_fingerprint=query.get("spec_fingerprint"), **options
    )
    return _answer(["vector"], results)


@blp.route("/<name>/search/images", methods=["POST"])
@blp.arguments(schemas.SearchUpload(), location="multipart")
@blp.response(200, schemas.SearchResults)
def search_images(form: dict, name: str) -> Response:
    """Neighbours of uploaded images, embedded with the collection's own embedder."""
    searcher = served().searcher(name)
    images, names, pixels = read_uploads(form)
    with served().decode_budget.take(pixels):
        vectors = searcher.embed_images(images, settings().max_pixels)
    results = searcher.search_vectors(
        vectors, form["k"], threshold=form["threshold"], filters=filters_from(form)
    )
    return _answer(names, results)


@blp.route("/<name>/duplicates", methods=["POST"])
@blp.arguments(schemas.DedupJson())
@blp.response(200, schemas.DuplicatesFound)
def duplicates(query: dict, name: str) -> dict:
    """Clusters of near-duplicate items; with no threshold, one calibrated on the collection."""
    searcher = served().searcher(name)
    calibration, filters = None, filters_from(query)
    threshold = query["threshold"]
    if threshold is None:
        collection_dir = served().path(name)
        calibrated, reused, stored = calibrated_threshold(
            searcher,
            filters=filters,
            may_read=lambda real, recorded: may_serve(real, recorded, collection_dir),
            max_pixels=settings().max_pixels,
            progress=False,
        )
        calibration = {**calibrated.to_dict(), "reused": reused, "stored": stored}
        threshold = calibrated.threshold
    found = find_duplicates(searcher, threshold, filters, progress=False)
    return {
        "threshold": threshold,
        "calibration": calibration,
        "pairs": found.pair_count,
        "items_in_clusters": sum(len(members) for members in found.clusters),
        "cluster_count": len(found.clusters),
        "exact_groups": len(found.exact),
        "clusters": [
            {"size": len(members), "items": [searcher.item(i) for i in members[:CLUSTER_ITEMS]]}
            for members in found.clusters[: query["clusters"]]
        ],
    }


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
    searcher = served().searcher(name)
    images, sources, pixels = read_uploads(body)
    with served().decode_budget.take(pixels):
        vectors = searcher.embed_images(images, settings().max_pixels)
    return {
        "collection": name,
        "spec_fingerprint": searcher.collection.spec.fingerprint(),
        "layer": searcher.layer,
        "embeddings": [
            {"source": source, "vector": vector}
            for source, vector in zip(sources, vectors, strict=True)
        ],
    }
