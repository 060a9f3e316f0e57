"""The on-disk collection: manifest, atomic shards, readers, the writer's lock, failure records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_spec

from lookalike.errors import CollectionError, SpecMismatch, UnknownItem
from lookalike.store.collection import Collection


def rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "path": f"/img/{i}.jpg",
            "sha256": f"{i:064x}",
            "width": 10,
            "height": 10,
            "bytes": 100,
            "mtime_ns": 1,
            "label": "a" if i % 2 else "b",
        }
        for i in range(start, start + n)
    ]


def vectors(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"embedding": rng.random((n, 8), np.float32), "layer3": rng.random((n, 4), np.float32)}


def test_manifest_round_trip(tmp_path: Path) -> None:
    spec = make_spec()
    Collection.create(tmp_path / "c", spec)
    opened = Collection.open(tmp_path / "c")
    assert opened.spec == spec
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["fingerprint"] == spec.fingerprint()
    assert manifest["spec"]["dims"] == {"embedding": 8, "layer3": 4}
    with pytest.raises(CollectionError, match="already holds"):
        Collection.create(tmp_path / "c", spec)


def test_open_refuses_missing_and_damaged_manifests(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="not a collection"):
        Collection.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{ torn")
    with pytest.raises(CollectionError, match="damaged"):
        Collection.open(tmp_path)


def test_other_spec_is_refused_naming_the_fields(tmp_path: Path) -> None:
    Collection.create(tmp_path, make_spec())
    with pytest.raises(SpecMismatch, match="pooling") as caught:
        Collection.open_or_create(tmp_path, make_spec(pooling="gem"))
    assert "backbone" not in str(caught.value)
    with pytest.raises(SpecMismatch, match="backbone"):
        Collection.open(tmp_path).check_spec(make_spec(backbone="resnet34"))


def test_writer_shards_ids_and_readers(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    written = vectors(10)
    with collection.writer(shard_size=4) as writer:
        ids = writer.add(rows(10), written)
    assert ids.tolist() == list(range(10))
    assert [len(s) for s in collection.shards()] == [4, 4, 2]
    assert len(collection) == 10
    items = collection.items()
    assert items.column("id").to_pylist() == list(range(10))
    assert items.column("label").to_pylist()[:2] == ["b", "a"]
    all_ids, xb = collection.embeddings("layer3")
    assert all_ids.tolist() == list(range(10))
    np.testing.assert_array_equal(xb, written["layer3"])
    assert [len(i) for i, _ in collection.iter_embeddings()] == [4, 4, 2]
    assert isinstance(collection.shards()[0].embeddings("embedding"), np.memmap)

    with collection.writer(shard_size=4) as writer:  # a later run continues the ids
        assert writer.add(rows(3, 10), vectors(3)).tolist() == [10, 11, 12]
    assert collection.items(["id"]).column("id").to_pylist() == list(range(13))


def test_writer_refuses_wrong_widths_and_unknown_layers(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    with collection.writer() as writer, pytest.raises(ValueError, match="expected"):
        writer.add(rows(2), {"embedding": np.zeros((2, 7)), "layer3": np.zeros((2, 4))})
    with pytest.raises(KeyError, match="layer4"):
        collection.embeddings("layer4")
    assert collection.embeddings()[1].shape == (0, 8)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    with collection.writer(), pytest.raises(CollectionError, match="another process"):
        Collection.open(tmp_path).writer()
    Collection.open(tmp_path).writer().close()  # released once the first writer closes


def test_half_written_shard_is_invisible_and_cleaned(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    with collection.writer(shard_size=2) as writer:
        writer.add(rows(2), vectors(2))
    stale = tmp_path / "shards" / ".tmp-dead"
    stale.mkdir()
    (stale / "items.parquet").write_bytes(b"half")
    assert len(collection) == 2  # readers never see temporaries
    with collection.writer() as writer:
        assert not stale.exists()
        writer.add(rows(1, 2), vectors(1))
    assert len(collection) == 3


def test_failures_keep_latest_record_and_drop_embedded_paths(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    with collection.writer() as writer:
        writer.record_failure({"path": "/img/x.jpg", "reason": "empty file"})
        writer.record_failure({"path": "/img/x.jpg", "reason": "corrupt or truncated"})
        writer.record_failure({"path": "/img/0.jpg", "reason": "empty file"})
        writer.add(rows(1), vectors(1))  # /img/0.jpg was fixed and embedded later
    with open(tmp_path / "failed.jsonl", "a") as handle:
        handle.write('{"path": "/img/torn')  # a line cut by a crash
    failures = collection.failures()
    assert [(f["path"], f["reason"]) for f in failures] == [("/img/x.jpg", "corrupt or truncated")]


def test_deleted_items_vanish_from_every_reader_and_ids_are_not_reused(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path, make_spec())
    written = vectors(6)
    with collection.writer(shard_size=4) as writer:
        writer.add(rows(6), written)
        writer.delete([1, 5])
        with pytest.raises(UnknownItem, match="no item with id 5"):
            writer.delete([2, 5])  # already deleted: nothing of this call is written
        with pytest.raises(UnknownItem, match="no item with id 77"):
            writer.delete([77])
    reopened = Collection.open(tmp_path)
    assert len(reopened) == 4
    assert reopened.items(["path"]).column("path").to_pylist() == [
        "/img/0.jpg",
        "/img/2.jpg",
        "/img/3.jpg",
        "/img/4.jpg",
    ]
    ids, xb = reopened.embeddings("layer3")
    assert ids.tolist() == [0, 2, 3, 4]
    assert np.array_equal(xb, written["layer3"][[0, 2, 3, 4]])
    with pytest.raises(UnknownItem, match="no item with id 1"):
        reopened.vectors([0, 1])
    with reopened.writer() as writer:
        assert writer.add(rows(1, 6), vectors(1)).tolist() == [6]
    with open(tmp_path / "deleted.jsonl", "a") as handle:
        handle.write('{"id": 0, "ti')  # a line torn by a crash: that delete was never acknowledged
    assert len(Collection.open(tmp_path)) == 5
    with Collection.open(tmp_path).writer() as writer:
        writer.delete([2])  # lands on a line of its own, after the torn one
    after = Collection.open(tmp_path)
    assert after.deleted_ids().tolist() == [1, 2, 5] and len(after) == 4
