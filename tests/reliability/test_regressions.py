"""Faults the crash, load and malformed-input runs found, each pinned by a fast test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.index import open_index, prepare_index
from lookalike.index.live import LiveCollection
from lookalike.server.app import create_app
from lookalike.server.settings import Settings
from lookalike.store.collection import Collection, Shard


def add_one_shard_each(collection: Collection, count: int) -> None:
    rng = np.random.default_rng(0)
    for number in range(count):  # as uploads do: one shard per request
        with collection.writer(shard_size=1) as writer:
            vectors = {
                layer: rng.standard_normal((1, width)).astype(np.float32)
                for layer, width in collection.spec.dims.items()
            }
            writer.add([{"path": f"upload-{number}.png"}], vectors)


def test_the_index_is_built_at_start_when_a_whole_shard_was_deleted(empty_collection: Path) -> None:
    """A server started empty has no saved index; uploads and a delete, then a crash: the next
    start builds the index from the collection, one of whose shards has no live row left."""
    collection = Collection.open(empty_collection)
    add_one_shard_each(collection, 3)
    with collection.writer() as writer:
        writer.delete([1])
    _, index = prepare_index(empty_collection)
    assert index is not None and index.ids().tolist() == [0, 2]
    open_index(Collection.open(empty_collection))  # saved, and it agrees with the items


def test_items_are_read_from_new_shards_only(empty_collection: Path, monkeypatch) -> None:
    """A server writes one shard per upload and lists the items after each: reading every shard
    again made an upload cost O(shards) file reads (1.3 s at 400 shards)."""
    collection = Collection.open(empty_collection)
    add_one_shard_each(collection, 5)
    assert collection.items(["id"]).num_rows == 5
    reads, read = [], Shard.items
    monkeypatch.setattr(
        Shard, "items", lambda shard, *a, **k: reads.append(shard.name) or read(shard, *a, **k)
    )
    add_one_shard_each(collection, 1)  # the writer finds the next id without reading old shards
    assert collection.items(["id", "path"]).num_rows == len(collection) == 6
    assert collection.vectors([5]).shape == (1, collection.spec.dims["embedding"])
    assert reads == ["000006"]


def noise(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_worker_busy_writing_still_sees_another_workers_writes(empty_collection: Path) -> None:
    """Two apps stand for two worker processes. While one is in the middle of a write of its own
    (its write slot held), an item the other acknowledged must already be found there: it used to
    skip the catch-up and answer 404 for an acknowledged upload."""
    first, second = (
        create_app(Settings(collections={"c": empty_collection})).test_client() for _ in range(2)
    )
    form = {"image": [(io.BytesIO(noise(1)), "a.png")]}
    assert first.post("/v1/collections/c/items", data=form).status_code == 201
    assert second.get("/v1/collections/c/items/0").status_code == 200  # opens its searcher
    busy = second.application.extensions["lookalike"].live("c").live._writing
    with busy:  # an upload of its own under way
        form = {"image": [(io.BytesIO(noise(2)), "b.png")]}
        added = first.post("/v1/collections/c/items", data=form).json["items"][0]["id"]
        assert second.get(f"/v1/collections/c/items/{added}").status_code == 200
        hits = second.post("/v1/collections/c/search", json={"id": added, "k": 1}).json
        assert [hit["id"] for hit in hits["results"][0]["hits"]] == [added]
        assert first.delete(f"/v1/collections/c/items/{added}").status_code == 204
        assert second.get(f"/v1/collections/c/items/{added}").status_code == 404


def test_a_classifier_name_is_checked_before_the_job_starts(empty_collection: Path) -> None:
    client = create_app(Settings(collections={"c": empty_collection})).test_client()
    for name in ("../../evil", "a/b", ".."):
        answer = client.post("/v1/collections/c/classifiers", json={"name": name})
        assert answer.status_code == 422 and "bad classifier name" in answer.json["detail"]
    assert not client.get("/v1/jobs").json["jobs"]


def test_a_catch_up_racing_a_delete_elsewhere_answers_and_drops_the_item(
    empty_collection: Path, monkeypatch
) -> None:
    """A worker catching up reads the live ids, then their vectors; another worker deleting one
    of them in between made the catch-up raise, and a search by vector answered 404 (the
    reliability suite's SIGTERM-under-load run). The delete is replayed in that gap."""
    add_one_shard_each(Collection.open(empty_collection), 1)
    live = LiveCollection.open(empty_collection)
    add_one_shard_each(Collection.open(empty_collection), 2)  # items 1 and 2, by "another worker"
    read = live.collection.ids

    def delete_after_reading():
        ids = read()  # the live ids (the item table for hits was read before)
        monkeypatch.setattr(live.collection, "ids", read)  # once
        with Collection.open(empty_collection).writer() as writer:
            writer.delete([2])
        return ids

    monkeypatch.setattr(live.collection, "ids", delete_after_reading)
    width = live.collection.spec.dims[live.collection.spec.layers[0]]
    hits = live.searcher().search_vectors(np.ones(width, np.float32), k=5)[0]
    assert {hit.id for hit in hits} <= {0, 1, 2}
    assert sorted(live.searcher().vector_store.ids().tolist()) == [0, 1]  # seen next read
