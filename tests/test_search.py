"""Search over a real embedded collection: by image, id and vector; filters; consistency; dedup; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from PIL import Image

from lookalike.cli import main
from lookalike.errors import BadImage, CollectionError, SpecMismatch, UnknownItem
from lookalike.index import (
    Filters,
    IndexMismatch,
    Searcher,
    build_index,
    load_index,
    open_index,
    save_index,
    update_index,
)
from lookalike.index.store import index_dir
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection


@pytest.fixture
def indexed(mixed_dir, tmp_path: Path) -> tuple[Path, Path]:
    root, _, _ = mixed_dir
    embed_images(
        [root], tmp_path / "c", TINY, labels_from_folders=True, progress=False, num_workers=0
    )
    build_index(Collection.open(tmp_path / "c"), progress=False)
    return tmp_path / "c", root


def test_an_image_finds_itself_first(indexed) -> None:
    collection_dir, root = indexed
    searcher = Searcher.open(collection_dir)
    query = root / "animals" / "0-chelsea.jpg"
    hits = searcher.search_images([query, query.read_bytes()], k=3)
    for row in hits:
        assert row[0].path == str(query) and row[0].distance < 1e-4 and row[0].label == "animals"
        assert [h.distance for h in row] == sorted(h.distance for h in row)
    by_id = searcher.search_ids([hits[0][0].id], k=3)[0]
    assert [h.id for h in by_id] == [h.id for h in hits[0]]
    vector = searcher.collection.vectors([hits[0][0].id])
    assert searcher.search_vectors(vector, k=1)[0][0].id == hits[0][0].id


def test_filters_and_threshold(indexed) -> None:
    collection_dir, root = indexed
    searcher = Searcher.open(collection_dir)
    query = [root / "animals" / "0-chelsea.jpg"]
    noise = searcher.search_images(query, k=8, filters=Filters(labels=("noise",)))[0]
    assert len(noise) == 4 and {h.label for h in noise} == {"noise"}
    prefix = str(root / "things")
    things = searcher.search_images(query, k=8, filters=Filters(path_prefix=prefix))[0]
    assert len(things) == 3 and all(h.path.startswith(prefix) for h in things)
    everything = searcher.search_images(query, k=8)[0]
    cut = everything[3].distance
    within = searcher.search_images(query, k=None, threshold=cut)[0]
    assert [h.id for h in within] == [h.id for h in everything if h.distance <= cut]
    assert searcher.search_images(query, k=2, threshold=2.0)[0] == everything[:2]


@pytest.mark.slow
def test_bad_queries_get_clear_errors(indexed) -> None:
    collection_dir, _root = indexed
    searcher = Searcher.open(collection_dir)
    with pytest.raises(UnknownItem, match="12345"):
        searcher.search_ids([12345])
    with pytest.raises(ValueError, match="width 512"):
        searcher.search_vectors(np.zeros(100))
    with pytest.raises(ValueError, match="NaN"):
        searcher.search_vectors(np.full(512, np.inf))
    for threshold in (-0.1, 2.5, float("nan")):
        with pytest.raises(ValueError, match=r"threshold|distance"):
            searcher.search_ids([0], threshold=threshold)
    with pytest.raises(ValueError, match="k must be"):
        searcher.search_ids([0], k=0)
    with pytest.raises(SpecMismatch, match="embedder"):
        searcher.search_vectors(np.zeros(512), spec_fingerprint="somebody-elses")
    with pytest.raises(BadImage, match="not an image"):
        searcher.search_images([b"not an image"])


@pytest.mark.slow
def test_index_that_disagrees_with_the_collection_is_refused_until_updated(
    indexed, photo_dir
) -> None:
    collection_dir, _ = indexed
    embed_images([photo_dir], collection_dir, progress=False, num_workers=0)
    collection = Collection.open(collection_dir)
    with pytest.raises(IndexMismatch, match="4 items not indexed"):
        open_index(collection)
    report = update_index(collection)
    assert (report.added, report.removed, report.total) == (4, 0, len(collection))
    assert len(open_index(collection)) == len(collection)
    # the same bytes sit under two paths: a tie that rounding in the engine may break either way
    hits = Searcher.open(collection_dir).search_images([photo_dir / "rocket.jpg"], k=2)
    assert str(photo_dir / "rocket.jpg") in {hit.path for hit in hits[0]}
    assert max(hit.distance for hit in hits[0]) < 1e-4


def test_index_from_another_spec_is_refused(indexed) -> None:
    collection_dir, _ = indexed
    folder = index_dir(collection_dir, "embedding")
    index = load_index(folder)
    index.meta.spec = {**index.meta.spec, "pooling": "gem"}
    save_index(index, folder)
    with pytest.raises(SpecMismatch, match="pooling"):
        Searcher.open(collection_dir)


def test_cli_index_search_dedup(indexed, tmp_path: Path) -> None:
    collection_dir, root = indexed
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "built Flat over 8 vectors" in run("index", "build", "-c", collection_dir, "-q")
    info = run("index", "info", "-c", collection_dir)
    assert "8 live, 0 deleted" in info and "in agreement" in info
    assert "recall@10 1.000" in run("index", "eval", "-c", collection_dir, "--queries", "5")
    table = run(
        "search",
        "-c",
        collection_dir,
        root / "animals" / "0-chelsea.jpg",
        "-k",
        "2",
        "--sheet",
        tmp_path / "sheet.png",
    )
    assert "0-chelsea.jpg" in table.splitlines()[2] and "0.0000" in table.splitlines()[2]
    assert Image.open(tmp_path / "sheet.png").size[0] > 3 * 128
    line = run(
        "search", "-c", collection_dir, "--id", "0", "--json", "--label", "noise"
    ).splitlines()[0]
    assert {h["label"] for h in json.loads(line)["hits"]} == {"noise"}
    dedup = run(
        "dedup", "-c", collection_dir, "--threshold", "0.5", "-q", "--out", tmp_path / "d.csv"
    )
    assert "clusters" in dedup and (tmp_path / "d.csv").read_text().startswith('"cluster"')
    assert "added 0, removed 0" in run("index", "update", "-c", collection_dir)
    missing = runner.invoke(main, ["search", "-c", str(collection_dir), "--id", "999"])
    assert missing.exit_code == 1 and "no item with id 999" in missing.output


def test_empty_collection_cannot_be_indexed(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "empty.jpg").write_bytes(b"")
    embed_images([tmp_path / "images"], tmp_path / "c", TINY, progress=False, num_workers=0)
    with pytest.raises(CollectionError, match="is empty"):
        build_index(Collection.open(tmp_path / "c"), progress=False)
