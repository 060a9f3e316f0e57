"""`LiveCollection`: the server's write guarantees for a Python user."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from lookalike.embedder import get_backbone
from lookalike.errors import CollectionBusy, UnknownItem
from lookalike.index import LiveCollection
from lookalike.store import Collection
from lookalike.store.ingest import Upload


def noise(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def collection_dir(tmp_path: Path) -> Path:
    with get_backbone(**TINY) as backbone:
        return Collection.create(tmp_path / "c", backbone.spec).path


@pytest.mark.slow
def test_writes_are_durable_indexed_and_seen_by_another_instance(collection_dir: Path) -> None:
    first, second = LiveCollection.open(collection_dir), LiveCollection.open(collection_dir)
    added = first.add_images([Upload(noise(1), "a.png", "x"), Upload(noise(2), "b.png")])
    assert [a.created for a in added] == [True, True]
    again = second.add_images([Upload(noise(1), "a-again.png")])  # the same bytes
    assert again[0].id == added[0].id and not again[0].created
    hits = second.searcher().search_ids([added[1].id], k=2)[0]
    assert hits[0].id == added[1].id  # the other instance caught up before answering
    first.delete([added[0].id])
    assert added[0].id not in second.searcher().vector_store.ids().tolist()
    with pytest.raises(UnknownItem):
        second.delete([added[0].id])
    assert len(Collection.open(collection_dir)) == 1


def test_a_write_waiting_past_its_limit_is_collection_busy(collection_dir: Path) -> None:
    live = LiveCollection.open(collection_dir, wait=0.1)
    with live.writing(), pytest.raises(CollectionBusy, match="busy with another write"):
        live.add_images([Upload(noise(3), "c.png")])


def test_a_write_within_one_clock_tick_is_still_seen(collection_dir: Path) -> None:
    """The reliability bench's load found an acknowledged upload answering 404 on the other
    worker: the shards folder's mtime, the old generation stamp, ticks every few milliseconds, and
    a shard renamed in within the tick of the previous change left it unchanged. Here the tick is
    played back by putting the folder's times back after the second write."""
    writer, reader = LiveCollection.open(collection_dir), LiveCollection.open(collection_dir)
    first = writer.add_images([Upload(noise(4), "d.png")])[0].id
    assert reader.searcher().item(first)["id"] == first  # the reader is in step
    shards = collection_dir / "shards"
    before = shards.stat()
    second = writer.add_images([Upload(noise(5), "e.png")])[0].id
    os.utime(shards, ns=(before.st_atime_ns, before.st_mtime_ns))  # within the same tick
    assert reader.searcher().item(second)["id"] == second
    assert reader.searcher().search_ids([second], k=1)[0][0].id == second


def test_an_upload_label_over_the_bound_is_refused_before_anything_is_written(
    collection_dir: Path,
) -> None:
    from lookalike.embedder.sources import MAX_LABEL_LENGTH
    from lookalike.errors import InvalidArgument

    live = LiveCollection.open(collection_dir)
    with pytest.raises(InvalidArgument, match=f"'a.png': the label is {MAX_LABEL_LENGTH + 1} char"):
        live.add_images(
            [
                Upload(noise(2), "b.png", "ok"),
                Upload(noise(1), "a.png", "x" * (MAX_LABEL_LENGTH + 1)),
            ]
        )
    assert len(live.collection) == 0
    assert live.add_images([Upload(noise(1), "a.png", "x" * MAX_LABEL_LENGTH)])[0].created
