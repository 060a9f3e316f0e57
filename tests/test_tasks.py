"""Bulk work as tasks (no Ray needed): stable keys, atomic staging, one adoption per task, and
listings as input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, make_spec

from lookalike.embedder.sources import ImageSource
from lookalike.errors import InvalidArgument
from lookalike.jobs.bulk import embed_images
from lookalike.jobs.tasks import clear_staging, plan_tasks, read_staged, stage_task, staging_dir
from lookalike.store.collection import Collection


def sources(count: int, start: int = 0) -> list[ImageSource]:
    return [ImageSource(Path(f"/images/{i}.png"), "a") for i in range(start, start + count)]


def rows_and_vectors(spec, count: int, seed: int = 0):
    rows = [
        {"path": f"/images/{i}.png", "label": "a", "sha256": "0" * 64, "width": 8, "height": 8,
         "bytes": 10, "mtime_ns": 1}
        for i in range(count)
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    vectors = {
        layer: rng.standard_normal((count, dim)).astype(np.float32)
        for layer, dim in spec.dims.items()
    }
    return rows, vectors


def test_task_keys_depend_on_the_work_and_the_spec_only() -> None:
    first = plan_tasks(sources(10), "spec-a", 4)
    assert [len(t.sources) for t in first] == [4, 4, 2]
    assert [t.key for t in first] == [t.key for t in plan_tasks(sources(10), "spec-a", 4)]
    assert plan_tasks(sources(10), "spec-b", 4)[0].key != first[0].key
    # the first task committed: the rest keep their keys, so their staged output is reused
    assert [t.key for t in plan_tasks(sources(6, start=4), "spec-a", 4)] == [
        t.key for t in first[1:]
    ]
    assert plan_tasks([], "spec-a", 4) == []


def test_a_task_is_staged_whole_once_and_adopted_once(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path / "c", make_spec())
    staging = staging_dir(collection)
    rows, vectors = rows_and_vectors(collection.spec, 3)
    failure = {"path": "/images/bad.png", "label": None, "reason": "empty file"}
    stage_task(staging, "k1", rows, vectors, [failure])
    other_rows, other_vectors = rows_and_vectors(collection.spec, 3, seed=1)
    stage_task(staging, "k1", other_rows, other_vectors, [])  # a retried attempt: first copy stays
    assert sorted(p.name for p in staging.iterdir()) == ["k1"]  # no temporary left behind
    staged = read_staged(staging, "k1")
    assert staged.rows == rows and staged.failures == [failure]
    with collection.writer() as writer:
        shard = writer.adopt(staged.folder, staged.rows)
    assert read_staged(staging, "k1") is None  # moved in, not copied: it cannot be adopted twice
    assert shard.items()["id"].to_pylist() == [0, 1, 2]
    for layer in collection.spec.layers:
        np.testing.assert_array_equal(collection.vectors([0, 1, 2], layer), vectors[layer])
    assert sorted(p.name for p in shard.path.iterdir()) == sorted(
        ["items.parquet", "embedding.npy", "layer3.npy"]
    )


def test_a_damaged_staged_task_is_refused_and_cleared(tmp_path: Path) -> None:
    collection = Collection.create(tmp_path / "c", make_spec())
    staging = staging_dir(collection)
    rows, vectors = rows_and_vectors(collection.spec, 3)
    stage_task(staging, "short", rows[:2], vectors, [])  # 2 rows for 3 vectors
    with collection.writer() as writer, pytest.raises(InvalidArgument, match="expected float32"):
        writer.adopt(staging / "short", rows[:2])
    assert len(collection) == 0
    (staging / "partial").mkdir()  # a run killed mid-adoption: no rows file any more
    assert read_staged(staging, "partial") is None
    (staging / ".run-killed").touch()  # a killed run's token
    assert clear_staging(staging, keep=[]) == 3 and not list(staging.iterdir())


def test_listings_are_embedded_with_their_labels_and_uris(photo_dir: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in photo_dir.iterdir())
    listing = photo_dir / "listing.csv"
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "ignored"])
        writer.writerow([names[0], "cat", "x"])  # relative: from the listing's folder
        writer.writerow([f"file://{photo_dir / names[1]}", "", "y"])  # a URI, no label
        writer.writerow([f"file://{photo_dir}/missing.jpg", "dog", "z"])
    try:
        report = embed_images([listing], tmp_path / "c", TINY, progress=False)
    finally:
        listing.unlink()
    assert (report.found, report.embedded, len(report.failed)) == (3, 2, 1)
    items = Collection.open(tmp_path / "c").items().to_pylist()
    assert {(i["path"], i["label"]) for i in items} == {
        (str(photo_dir / names[0]), "cat"),
        (f"file://{photo_dir / names[1]}", None),
    }
    parquet = tmp_path / "again.parquet"
    pq.write_table(pa.table({"path": [str(photo_dir / names[0])]}), parquet)
    again = embed_images([parquet], tmp_path / "c", TINY, progress=False)
    assert (again.embedded, again.skipped_done) == (0, 1)


def test_a_listing_without_paths_is_a_clear_error(tmp_path: Path) -> None:
    listing = tmp_path / "listing.csv"
    listing.write_text("file,label\na.jpg,x\n")
    with pytest.raises(InvalidArgument, match="no 'path' column"):
        embed_images([listing], tmp_path / "c", TINY, progress=False)
    listing.write_text("path,label\n,x\n")
    with pytest.raises(InvalidArgument, match="row 1: the path is empty"):
        embed_images([listing], tmp_path / "c", TINY, progress=False)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidArgument, match="cannot read listing"):
        embed_images([broken], tmp_path / "c", TINY, progress=False)


def test_a_listing_label_over_the_bound_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    from lookalike.embedder.sources import MAX_LABEL_LENGTH

    listing = tmp_path / "listing.csv"
    listing.write_text(f"path,label\na.jpg,ok\nb.jpg,{'x' * (MAX_LABEL_LENGTH + 1)}\n")
    with pytest.raises(InvalidArgument, match=f"row 2: the label is {MAX_LABEL_LENGTH + 1} char"):
        embed_images([listing], tmp_path / "c", TINY, progress=False)
    assert not (tmp_path / "c").exists()


def test_an_actor_without_the_collection_sends_its_task_back_and_the_driver_stages_it(
    photo_dir: Path, tmp_path: Path
) -> None:
    """The path of a cluster with no shared file system, without Ray: the actor finds no run
    token, so it returns its output as bytes (no pickle), which the driver stages and adopts."""
    from lookalike.jobs.ray_job import TaskEmbedder
    from lookalike.jobs.tasks import unpack_task

    embed_images([photo_dir], tmp_path / "local", TINY, progress=False)  # the reference
    collection = Collection.create(tmp_path / "c", Collection.open(tmp_path / "local").spec)
    todo = [ImageSource(p) for p in sorted(photo_dir.glob("*.jpg"))] + [
        ImageSource(tmp_path / "missing.jpg")
    ]
    task = plan_tasks(todo, collection.spec.fingerprint(), 10)[0]
    actor = TaskEmbedder(str(collection.path), ".run-elsewhere", collection.spec.to_dict(),
                         threads=1, device="cpu", batch_size=None, max_pixels=64_000_000)  # fmt: skip
    assert not actor.visible
    receipt = actor({"key": np.array([task.key]), "sources": np.array([task.to_row()["sources"]])})
    assert not staging_dir(collection).exists()  # nothing written by the actor
    rows, vectors, failures = unpack_task(receipt["payload"][0])
    assert [f["path"] for f in failures] == [str(tmp_path / "missing.jpg")]
    staged = read_staged(
        stage_task(staging_dir(collection), task.key, rows, vectors, failures).parent, task.key
    )
    with collection.writer() as writer:
        writer.adopt(staged.folder, staged.rows)
    local = Collection.open(tmp_path / "local")
    by_path = {r["path"]: r["id"] for r in local.items(["id", "path"]).to_pylist()}
    ours = collection.items(["id", "path"]).to_pylist()
    assert sorted(r["path"] for r in ours) == sorted(by_path)
    for layer in collection.spec.layers:
        expected = local.vectors([by_path[r["path"]] for r in ours], layer)
        found = collection.vectors([r["id"] for r in ours], layer)
        np.testing.assert_allclose(found, expected, atol=1e-4)
