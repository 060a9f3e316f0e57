"""The collection's map (see `lookalike.explore.map`): every live item's 2-D position and label,
as parallel arrays (a 100k-item map is about 2 MB of JSON, made in tens of milliseconds)."""

from __future__ import annotations

import hashlib

import marshmallow as ma
import numpy as np
from flask import Response, current_app, request

from lookalike.explore.map import map_path, map_points

from ..errors import ApiError
from ..json import Blueprint
from ..schemas import Strict
from .common import served

blp = Blueprint("maps", __name__, url_prefix="/v1/collections", description="Maps of a collection.")
DECIMALS = 4  # positions in the unit square: 1/10,000 of the map's width is below a pixel


class MapQuery(Strict):
    layer = ma.fields.String(
        load_default=None, metadata={"description": "The layer (default: the first)."}
    )


class MapPoints(ma.Schema):
    layer = ma.fields.String()
    created = ma.fields.String(metadata={"description": "When the layout was fitted."})
    count = ma.fields.Integer()
    ids = ma.fields.List(ma.fields.Integer(), metadata={"description": "Item ids."})
    x = ma.fields.List(ma.fields.Float(), metadata={"description": "In [0, 1], left to right."})
    y = ma.fields.List(ma.fields.Float(), metadata={"description": "In [0, 1], bottom to top."})
    labels = ma.fields.List(ma.fields.String(), metadata={"description": "The distinct labels."})
    label = ma.fields.List(
        ma.fields.Integer(), metadata={"description": "Each item's index into labels; -1: none."}
    )


@blp.route("/<name>/map")
@blp.arguments(MapQuery(), location="query")
@blp.response(200, MapPoints)
@blp.alt_response(404, description="No map of that layer has been computed (`lookalike map`).")
@blp.alt_response(304, description="Not modified since the ETag sent in If-None-Match.")
def get_map(query: dict, name: str) -> Response:
    """Every live item's position on the stored map, with its label: parallel arrays."""
    collection = served().collection(name)
    layer = query["layer"] or collection.spec.layers[0]
    collection.check_layer(layer)
    path = map_path(collection.path, layer)
    if not path.exists():
        raise ApiError(404, f"no map of layer {layer!r} yet: run `lookalike map` on {name!r}")
    stamp = f"{path.stat().st_mtime_ns}-{collection.generation()}"
    etag = hashlib.sha256(stamp.encode()).hexdigest()[:20]
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    points = map_points(collection, layer)
    x, y = np.round(points.xy.astype(np.float64).T, DECIMALS)  # rows of .T: C-contiguous
    body = {
        "layer": points.layer,
        "created": points.created,
        "count": len(points.ids),
        "ids": points.ids,
        "x": np.ascontiguousarray(x),
        "y": np.ascontiguousarray(y),
        "labels": points.labels,
        "label": points.codes,
    }
    response = current_app.json.response(body)
    response.set_etag(etag)
    response.cache_control.no_cache = True
    return response
