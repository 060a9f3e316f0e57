"""The served collections and their items (metadata and thumbnails)."""

from __future__ import annotations

import io

from flask import Response
from PIL import Image

from lookalike.embedder.sources import check_header, decode_image, read_file
from lookalike.errors import BadImage
from lookalike.store.ingest import Upload

from .. import schemas
from ..auth import WRITE, requires
from ..errors import ApiError
from ..json import Blueprint
from .common import may_serve, read_uploads, served, settings

blp = Blueprint(
    "collections", __name__, url_prefix="/v1/collections", description="Collections and items."
)
THUMBNAIL_SIZE = 256


@blp.route("")
@blp.response(200, schemas.Collections())
def list_collections() -> dict:
    """The collections this server serves, with their size and embedder."""
    out = []
    for name in served().names():
        collection = served().collection(name)
        out.append(
            {
                "name": name,
                "items": len(collection),
                "backbone": collection.spec.backbone,
                "spec_fingerprint": collection.spec.fingerprint(),
                "dims": collection.spec.dims,
            }
        )
    return {"collections": out}


@blp.route("/<name>")
@blp.response(200, schemas.CollectionDetail())
def get_collection(name: str) -> dict:
    """One collection: its embedder spec and size."""
    collection = served().collection(name)
    return {
        "name": name,
        "items": len(collection),
        "spec": collection.spec.to_dict(),
        "spec_fingerprint": collection.spec.fingerprint(),
    }


@blp.route("/<name>/items", methods=["POST"])
@blp.arguments(schemas.ItemsUpload(), location="multipart")
@blp.response(201, schemas.AddedItems)
@requires(WRITE)
def add_items(form: dict, name: str) -> dict:
    """Upload images: stored, embedded, indexed; their ids come back once they are durable."""
    images, names, pixels = read_uploads(form)
    uploads = [
        Upload(data, filename, form.get("label"))
        for data, filename in zip(images, names, strict=True)
    ]
    added = served().add_images(name, uploads, pixels)
    return {"items": [a.__dict__ for a in added]}


@blp.route("/<name>/items/<int(max=9223372036854775807):item_id>")
@blp.response(200, schemas.Item())
def get_item(name: str, item_id: int) -> dict:
    """An item's id, path and label."""
    return served().live(name).item(item_id)


@blp.route("/<name>/items/<int(max=9223372036854775807):item_id>", methods=["DELETE"])
@blp.response(204)
@requires(WRITE)
def delete_item(name: str, item_id: int) -> None:
    """Delete an item: gone from search at once, durably."""
    served().delete_item(name, item_id)


@blp.route("/<name>/items/<int(max=9223372036854775807):item_id>/thumbnail")
@blp.doc(responses={"200": {"description": "A JPEG thumbnail", "content": {"image/jpeg": {}}}})
def get_thumbnail(name: str, item_id: int) -> Response:
    """A JPEG thumbnail of an item: only files the collection records are ever read, and only
    where they really are (links resolved) what was recorded, in the collection or in an allowed
    root: a link swapped in for an item's file is not followed out."""
    path = served().live(name).item(item_id)["path"]
    try:
        read = read_file(path)
        if not may_serve(read.real_path, path, served().path(name)):
            raise ApiError(
                403, f"the file of item {item_id} now resolves outside the collection's folders"
            )
        data = read.data
        header = check_header(data, settings().max_pixels)
        with served().decode_budget.take(header.width * header.height):
            image = decode_image(data, settings().max_pixels)
    except OSError:
        raise ApiError(404, f"the file of item {item_id} is no longer on disk") from None
    except BadImage as error:  # changed on disk since it was embedded
        raise ApiError(404, f"the file of item {item_id} is no longer an image: {error}") from None
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    response = Response(buffer.getvalue(), mimetype="image/jpeg")
    response.cache_control.max_age = 3600
    return response
