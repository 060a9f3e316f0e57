"""`lookalike map`: the layout (PCA + UMAP) stored in the collection, new items placed on it,
the PNG, the CLI and the API route, on synthetic collections with real UMAP and FAISS."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic import CLASSES, WIDTH, make_collection, separable

from lookalike.cli import main
from lookalike.errors import CollectionError, InvalidArgument, UnknownLayer
from lookalike.explore.map import MapParams, compute_map, load_map, map_path, map_points
from lookalike.store.collection import Collection

PER_CLASS = 40


@pytest.fixture
def mapped(tmp_path: Path) -> Collection:
    """Three separable classes, laid out."""
    vectors, labels = separable(PER_CLASS)
    collection = make_collection(tmp_path / "c", labels, vectors)
    compute_map(collection)
    return collection


def neighbour_agreement(xy: np.ndarray, labels: list[str]) -> float:
    """Share of points whose nearest other point on the map has their label."""
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.argmin(axis=1)
    return float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))


def labels_of(points) -> list[str]:
    return [points.labels[code] for code in points.codes]


@pytest.mark.slow
def test_the_map_separates_classes_is_stored_and_reproducible(mapped: Collection):
    points = map_points(mapped)
    assert len(points.ids) == 3 * PER_CLASS and points.labels == list(CLASSES)
    assert points.xy.min() >= 0 and points.xy.max() <= 1
    assert neighbour_agreement(points.xy, labels_of(points)) >= 0.95
    stored = load_map(mapped)
    assert stored.fingerprint == mapped.spec.fingerprint() and stored.fitted == 3 * PER_CLASS
    assert stored.reference.shape == (3 * PER_CLASS, WIDTH)  # PCA: at most the width
    again = compute_map(mapped, refresh=True)
    assert again.fitted == 3 * PER_CLASS
    np.testing.assert_array_equal(load_map(mapped).xy, stored.xy)  # the seed decides
    assert compute_map(mapped).summary().startswith("the map is up to date")


@pytest.mark.slow
def test_new_items_are_placed_without_moving_the_others(mapped: Collection):
    before = load_map(mapped)
    fresh, labels = separable(10, seed=7)
    rows = [{"path": f"/new/{n}.jpg", "label": label} for n, label in enumerate(labels)]
    with mapped.writer() as writer:
        new_ids = writer.add(rows, {"embedding": fresh, "layer3": np.zeros_like(fresh)})
    report = compute_map(mapped)
    assert (report.fitted, report.placed) == (0, 30) and "place" in report.seconds
    after = load_map(mapped)
    np.testing.assert_array_equal(after.xy[: len(before.ids)], before.xy)
    placed = after.xy[np.isin(after.ids, new_ids)]
    old_labels = labels_of_ids(mapped, before.ids)
    gaps = np.linalg.norm(placed[:, None] - before.xy[None], axis=2)
    nearest_labels = [old_labels[j] for j in gaps.argmin(axis=1)]
    assert np.mean([a == b for a, b in zip(nearest_labels, labels, strict=True)]) >= 0.9


def labels_of_ids(collection: Collection, ids: np.ndarray) -> list[str]:
    items = collection.items(["id", "label"]).to_pydict()
    label_of = dict(zip(items["id"], items["label"], strict=True))
    return [label_of[i] for i in ids.tolist()]


@pytest.mark.slow
def test_more_new_items_than_fitted_or_other_parameters_lay_out_again(tmp_path: Path):
    vectors, labels = separable(PER_CLASS)
    collection = make_collection(tmp_path / "c", labels[:12], vectors[:12])
    assert compute_map(collection).fitted == 12
    rows = [{"path": f"/new/{n}.jpg", "label": label} for n, label in enumerate(labels[12:])]
    with collection.writer() as writer:
        rest = vectors[12:]
        writer.add(rows, {"embedding": rest, "layer3": np.zeros_like(rest)})
    assert compute_map(collection).fitted == 3 * PER_CLASS  # 108 new > 12 fitted
    assert compute_map(collection, params=MapParams(neighbours=8)).fitted == 3 * PER_CLASS


def test_deleted_items_drop_out_of_the_map(mapped: Collection):
    with mapped.writer() as writer:
        writer.delete([0, 1, 2])
    points = map_points(mapped)
    assert len(points.ids) == 3 * PER_CLASS - 3 and not set(points.ids.tolist()) & {0, 1, 2}


def test_bad_input_is_a_clear_error(mapped: Collection, tmp_path: Path):
    with pytest.raises(UnknownLayer, match="has \\['embedding', 'layer3'\\]"):
        compute_map(mapped, "nope")
    with pytest.raises(InvalidArgument, match="neighbours must be"):
        compute_map(mapped, params=MapParams(neighbours=1))
    with pytest.raises(CollectionError, match="no map of layer 'layer3'"):
        map_points(mapped, "layer3")
    vectors, labels = separable(1)
    with pytest.raises(InvalidArgument, match="at least 4 items; the collection holds 3"):
        compute_map(make_collection(tmp_path / "tiny", labels, vectors))
    map_path(mapped.path, "embedding").write_bytes(b"not a map")
    with pytest.raises(CollectionError, match="damaged"):
        load_map(mapped)


def test_the_cli_lays_out_draws_and_refuses_bad_options(mapped: Collection, tmp_path: Path):
    png = tmp_path / "out" / "map.png"
    runner = CliRunner()
    answer = runner.invoke(main, ["map", "-c", str(mapped.path), "--png", str(png), "-q"])
    assert answer.exit_code == 0, answer.output
    assert "the map is up to date (120 on the map" in answer.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    answer = runner.invoke(main, ["map", "-c", str(mapped.path), "--layer", "nope", "-q"])
    assert answer.exit_code == 1 and answer.output.startswith("Error: layer 'nope' is not")
    answer = runner.invoke(main, ["map", "-c", str(tmp_path / "none"), "-q"])
    assert answer.exit_code == 1 and "is not a collection" in answer.output
    assert "Traceback" not in answer.output


def test_the_api_serves_the_map_as_parallel_arrays(mapped: Collection):
    from lookalike.server.app import create_app
    from lookalike.server.settings import Settings

    settings = dataclasses.replace(Settings(), collections={"c": mapped.path})
    client = create_app(settings).test_client()
    answer = client.get("/v1/collections/c/map")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["count"] == len(body["ids"]) == len(body["x"]) == len(body["label"]) == 120
    assert body["labels"] == list(CLASSES) and all(0 <= x <= 1 for x in body["x"] + body["y"])
    again = client.get("/v1/collections/c/map", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304
    missing = client.get("/v1/collections/c/map?layer=layer3")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert client.get("/v1/collections/c/map?layer=nope").status_code == 422
    with mapped.writer() as writer:
        writer.delete([5])
    changed = client.get("/v1/collections/c/map", headers={"If-None-Match": answer.headers["ETag"]})
    assert changed.status_code == 200 and changed.get_json()["count"] == 119
