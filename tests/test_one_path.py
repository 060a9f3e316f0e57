"""One way from an image to a vector: the same JPEG through bulk `embed`, CLI `search`, an HTTP
upload, HTTP image search, predict and training's validation pass gives the same vector.

Measured before the paths were merged: cosine 0.9938 between the search and upload paths on a
2048 px JPEG, and an uploaded copy of a bulk-embedded image 6.2e-3 from its twin instead of 0."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, photo

from lookalike.classify import Predictor, train_classifier
from lookalike.cli import main
from lookalike.embedder.build import backbone_from_spec
from lookalike.index import Searcher, build_index
from lookalike.jobs import embed_images
from lookalike.server.app import create_app
from lookalike.server.settings import Settings
from lookalike.store import Collection
from lookalike.training.images import eval_transform

SAME = 0.99999  # cosine between two paths' vectors of one image


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def bulk(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A 2048 px JPEG (decoded at a reduced scale) beside a few others, bulk-embedded and indexed."""
    root = tmp_path_factory.mktemp("one-path")
    folder = root / "images"
    for label, names in {"cat": ("chelsea", "astronaut"), "cup": ("coffee", "rocket")}.items():
        (folder / label).mkdir(parents=True)
        for name in names:
            image = photo(name)
            if name == "chelsea":
                image = image.resize((2048, 1356))
            image.save(folder / label / f"{name}.jpg", quality=92)
    embed_images([folder], root / "c", TINY, labels_from_folders=True, progress=False)
    collection = Collection.open(root / "c")
    build_index(collection, progress=False)
    target = folder / "cat" / "chelsea.jpg"
    items = collection.items(["id", "path"])
    item = items["id"].to_pylist()[items["path"].to_pylist().index(str(target))]
    return root / "c", target, collection.vectors([item])[0]


@pytest.mark.slow
def test_search_and_predict_embed_as_the_bulk_job_did(bulk) -> None:
    collection_dir, target, stored = bulk
    searcher = Searcher.open(collection_dir)
    assert cosine(searcher.embed_images([target])[0], stored) >= SAME
    assert cosine(searcher.embed_images([target.read_bytes()])[0], stored) >= SAME
    answer = CliRunner().invoke(main, ["search", "-c", str(collection_dir), str(target), "--json"])
    assert answer.exit_code == 0, answer.output
    first = json.loads(answer.output.splitlines()[0])["hits"][0]
    assert first["path"] == str(target) and first["distance"] < 1e-5

    train_classifier(Collection.open(collection_dir), "kind", "folders", folds=2)
    prediction = Predictor.open(collection_dir, "kind").predict_images([target], k=1)[0]
    assert prediction.neighbours[0].path == str(target)
    assert prediction.neighbours[0].distance < 1e-5


@pytest.mark.slow
def test_training_validation_pixels_are_the_embedders(bulk) -> None:
    collection_dir, target, stored = bulk
    collection = Collection.open(collection_dir)
    with backbone_from_spec(collection.spec, engine="auto", collection_dir=collection_dir) as model:
        pixels = eval_transform(model.spec.preprocess)(target.read_bytes())
        vector = model.embed(torch.stack([pixels]))[collection.spec.layers[0]][0]
    assert cosine(vector, stored) >= SAME


@pytest.mark.slow
def test_an_uploaded_copy_is_its_twins_nearest_neighbour(bulk) -> None:
    collection_dir, target, stored = bulk
    client = create_app(Settings(collections={"c": collection_dir})).test_client()
    data = target.read_bytes()
    found = client.post(
        "/v1/collections/c/search/images", data={"image": (io.BytesIO(data), "q.jpg"), "k": "1"}
    ).json["results"][0]["hits"][0]
    assert found["path"] == str(target) and found["distance"] < 1e-5
    added = client.post(
        "/v1/collections/c/items", data={"image": [(io.BytesIO(data), "copy.jpg")]}
    ).json["items"][0]
    uploaded = Collection.open(collection_dir).vectors([added["id"]])[0]
    assert cosine(uploaded, stored) >= SAME
    hits = client.post("/v1/collections/c/search", json={"id": added["id"], "k": 2}).json
    neighbours = {hit["path"]: hit["distance"] for hit in hits["results"][0]["hits"]}
    assert neighbours[str(target)] < 1e-5
