"""Dedup with a threshold calibrated on the collection: planted copies of real photos found with
no option given; the calibration stored, reused and redone; unreadable images; the CLI and API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY

from lookalike.cli import main
from lookalike.cli.demo import plant_duplicates
from lookalike.errors import CannotCalibrate, InvalidArgument
from lookalike.index import Filters, Searcher, find_duplicates
from lookalike.index.calibrate import (
    CALIBRATION,
    calibrate_threshold,
    calibrated_threshold,
    load_calibration,
)
from lookalike.jobs.bulk import embed_images
from lookalike.server.app import create_app
from lookalike.server.settings import Settings


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set]:
    """Real photos, nine of them with a re-encoded, a resized and a cropped copy; embedded with
    the default pretrained backbone (at 160 px, for speed)."""
    work = tmp_path_factory.mktemp("planted")
    truth = {tuple(sorted(pair)) for pair in plant_duplicates(work / "images")}
    embed_images([work / "images"], work / "c", {"image_size": 160}, progress=False)
    return work / "c", truth


@pytest.fixture
def planted_copy(planted, tmp_path: Path) -> Path:
    """A copy of the planted collection that a test may change (its calibration, its items)."""
    shutil.copytree(planted[0], tmp_path / "c")
    return tmp_path / "c"


def found_pairs(searcher: Searcher, threshold: float) -> set:
    found = find_duplicates(searcher, threshold, progress=False)
    name = {i["id"]: Path(i["path"]).name for i in searcher.collection.items().to_pylist()}
    pairs = zip(found.pairs["a"].to_pylist(), found.pairs["b"].to_pylist(), strict=True)
    return {tuple(sorted((name[a], name[b]))) for a, b in pairs}


@pytest.mark.slow
def test_the_calibrated_threshold_finds_the_planted_copies(planted) -> None:
    collection_dir, truth = planted
    searcher = Searcher.open(collection_dir)
    calibration = calibrate_threshold(searcher, images=24, progress=False)
    pairs = found_pairs(searcher, calibration.threshold)
    precision, recall = len(pairs & truth) / max(1, len(pairs)), len(pairs & truth) / len(truth)
    assert precision >= 0.98 and recall >= 0.95, (precision, recall, calibration.lines())
    # the copies already in the collection did not pass for distinct items
    assert calibration.distinct["1"] > calibration.variants["50"], calibration.lines()
    assert set(calibration.by_edit) <= {
        "jpeg",
        "half",
        "crop",
        "brightness",
        "contrast",
        "rotate",
        "combined",
    }


@pytest.mark.slow
def test_the_calibration_is_stored_reused_and_redone_when_the_collection_grew(
    planted_copy: Path, tmp_path: Path
) -> None:
    collection_dir = planted_copy
    searcher = Searcher.open(collection_dir)
    first, reused, _ = calibrated_threshold(searcher, images=8, progress=False)
    assert not reused and (collection_dir / CALIBRATION).exists()
    again, reused, _ = calibrated_threshold(Searcher.open(collection_dir), images=8, progress=False)
    assert reused and again == first
    images = tmp_path / "more"
    images.mkdir()
    for source in sorted(Path(p) for p in searcher.collection.items().column("path").to_pylist())[
        :20
    ]:
        (images / f"more-{source.name}").write_bytes(source.read_bytes())  # 44 -> 64 items
    embed_images([images], collection_dir, progress=False)
    grown = Searcher.open(collection_dir)
    assert load_calibration(grown) is None  # 45 % more items: it no longer fits
    redone, reused, _ = calibrated_threshold(grown, images=8, progress=False)
    assert not reused and redone.items == len(grown.collection) == 64


@pytest.mark.slow
def test_images_it_may_not_read_are_skipped_and_none_left_is_a_clear_error(planted) -> None:
    """`may_read` stands for files outside the allowed roots (the server's rule for thumbnails)."""
    searcher = Searcher.open(planted[0])
    paths = searcher.collection.items().column("path").to_pylist()
    refused = set(paths[: len(paths) // 2])
    calibration = calibrate_threshold(
        searcher, images=8, progress=False, may_read=lambda real, recorded: recorded not in refused
    )
    assert calibration.images == 8
    with pytest.raises(CannotCalibrate, match="could be read to calibrate"):
        calibrate_threshold(searcher, images=8, progress=False, may_read=lambda *_: False)


@pytest.mark.slow
def test_distinct_items_closer_than_copies_cap_the_threshold(
    digit_dir: Path, tmp_path: Path
) -> None:
    """Handwritten digits: distinct digits of a class lie closer together than a re-encoded or
    rotated copy of one; the cap keeps them from being called duplicates."""
    embed_images([digit_dir], tmp_path / "c", {"image_size": 96}, progress=False)
    searcher = Searcher.open(tmp_path / "c")
    calibration = calibrate_threshold(searcher, images=12, progress=False)
    assert calibration.bound == "precision", calibration.lines()
    found = find_duplicates(searcher, calibration.threshold, progress=False)
    assert len(found.pairs) <= 2, calibration.lines()  # 36 distinct digits, no copies


@pytest.mark.slow
def test_cli_dedup_calibrates_with_no_threshold_and_says_how(planted_copy: Path) -> None:
    collection_dir = planted_copy
    runner = CliRunner()
    first = runner.invoke(main, ["dedup", "-c", str(collection_dir), "-q"])
    assert first.exit_code == 0, first.output
    assert "threshold" in first.output and "copy to original" in first.output
    assert "9 clusters, 36 items" in first.output
    second = runner.invoke(main, ["dedup", "-c", str(collection_dir), "-q"])
    assert "stored calibration, reused" in second.output
    given = runner.invoke(main, ["dedup", "-c", str(collection_dir), "-q", "--threshold", "0"])
    assert "copy to original" not in given.output and "0 pairs" in given.output


def test_cli_dedup_with_no_readable_image_says_what_to_do(tmp_path: Path, photo_dir: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(photo_dir, images)
    embed_images([images], tmp_path / "c", TINY, progress=False, num_workers=0)
    for path in images.iterdir():
        os.unlink(path)
    result = CliRunner().invoke(main, ["dedup", "-c", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 1 and "give a threshold instead" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_api_duplicates_calibrated_or_given(planted_copy: Path) -> None:
    collection_dir = planted_copy
    app = create_app(Settings(collections={"p": collection_dir}))
    client = app.test_client()
    answer = client.post("/v1/collections/p/duplicates", json={})
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["cluster_count"] == 9 and body["items_in_clusters"] == 36
    assert (
        body["calibration"]["threshold"] == body["threshold"] and not body["calibration"]["reused"]
    )
    assert {len(cluster["items"]) for cluster in body["clusters"]} == {4}
    assert client.post("/v1/collections/p/duplicates", json={}).json["calibration"]["reused"]
    given = client.post("/v1/collections/p/duplicates", json={"threshold": 0.0, "clusters": 1})
    assert given.json["calibration"] is None and given.json["clusters"] == []
    for bad in (
        {"threshold": -1},
        {"threshold": 3},
        {"threshold": "x"},
        {"clusters": -1},
        {"k": 1},
    ):
        refused = client.post("/v1/collections/p/duplicates", json=bad)
        assert refused.status_code == 422 and refused.mimetype == "application/problem+json", bad


@pytest.mark.slow
def test_dedup_within_a_label_or_folder_calibrates_on_those_items_only(
    planted_copy: Path, tmp_path: Path
) -> None:
    collection_dir = planted_copy
    searcher = Searcher.open(collection_dir)
    prefix = str(Path(searcher.collection.items().column("path")[0].as_py()).parent / "c")
    filters = Filters(path_prefix=prefix)  # chelsea, coffee, colorwheel, coins, camera, clock
    calibration, _, _ = calibrated_threshold(searcher, filters=filters, images=8, progress=False)
    assert calibration.scope == f"path under {prefix}" and calibration.items == 18
    found = find_duplicates(searcher, calibration.threshold, filters, progress=False)
    names = {
        Path(searcher.item(i)["path"]).name.split("-")[0].split(".")[0]
        for c in found.clusters
        for i in c
    }
    assert names == {"chelsea", "coffee", "colorwheel", "camera"}
    assert load_calibration(searcher) is None  # the whole collection's is another one
    answer = (
        create_app(Settings(collections={"p": collection_dir}))
        .test_client()
        .post("/v1/collections/p/duplicates", json={"path_prefix": prefix})
    )
    assert answer.json["calibration"]["reused"] and answer.json["cluster_count"] == 4


def test_an_empty_collection_has_no_duplicates_rather_than_an_error(tmp_path: Path) -> None:
    from lookalike.embedder import get_backbone
    from lookalike.store.collection import Collection

    with get_backbone(**TINY) as backbone:
        Collection.create(tmp_path / "empty", backbone.spec)
    result = CliRunner().invoke(main, ["dedup", "-c", str(tmp_path / "empty"), "-q"])
    assert result.exit_code == 0 and "0 pairs" in result.output, result.output
    answer = (
        create_app(Settings(collections={"e": tmp_path / "empty"}))
        .test_client()
        .post("/v1/collections/e/duplicates", json={})
    )
    assert answer.status_code == 200 and answer.json["cluster_count"] == 0


def test_look_alikes_lower_the_threshold_only_as_far_as_precision_needs() -> None:
    """The rule on its own: copies reach 0.30; one item in twenty has a distinct look-alike at
    0.20. Among many copies that costs little precision (kept), among none it costs all."""
    from lookalike.index.calibrate import Neighbourhoods, _pick

    variants = np.linspace(0.0, 0.30, 200)

    def sample(copies_each: int, items: int = 100) -> Neighbourhoods:
        rows = []
        for item in range(items):
            near = [0.2] if item % 20 == 0 else []
            rows.append(sorted([0.05] * copies_each + near + [0.6, 0.62, 0.64, 0.66])[:4])
        return Neighbourhoods(np.array(rows, np.float32), np.full(items, copies_each))

    # 300 copy pairs and 5 look-alike pairs: 1.6 % false, the copies' bound stands
    assert _pick(variants, sample(copies_each=3)) == (pytest.approx(0.297, abs=1e-3), "variants")
    threshold, bound = _pick(variants, sample(copies_each=0))  # the look-alikes alone
    assert bound == "precision" and threshold < 0.2
    threshold, bound = _pick(variants, sample(copies_each=1))  # 100 copies, 5 look-alikes
    assert bound == "precision" and 0.05 <= threshold < 0.2


@pytest.mark.parametrize("command", ["dedup", "search", "index build"])
def test_an_unknown_layer_is_a_one_line_error_naming_the_layers(
    command: str, digit_collection: Path
) -> None:
    """A stage named without its pooling (`layer4` for `layer4/gem`) used to be an internal error."""
    query = ["--id", "0"] if command == "search" else []
    arguments = [*command.split(), "-c", str(digit_collection), "--layer", "layer4", *query]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert "layer 'layer4' is not in this collection; it has ['embedding'" in result.output


def test_a_threshold_that_pairs_everything_is_refused_before_memory_runs_out(
    digit_collection: Path,
) -> None:
    searcher = Searcher.open(digit_collection)
    with pytest.raises(
        InvalidArgument, match=r"more than 100 pairs of distinct items lie within 2 "
    ):
        find_duplicates(searcher, 2.0, progress=False, max_pairs=100)  # 36 items: 630 pairs
    answer = (
        create_app(Settings(collections={"d": digit_collection}))
        .test_client()
        .post("/v1/collections/d/duplicates", json={"threshold": 2})
    )
    assert answer.status_code == 200 and answer.json["pairs"] == 630  # under the server's cap


def test_stored_calibrations_do_not_grow_without_bound(digit_collection: Path) -> None:
    """Every filter gets its own calibration (a path prefix per request, say); 16 are kept."""
    import dataclasses

    from lookalike.index.calibrate import KEPT, save_calibration

    searcher = Searcher.open(digit_collection)
    calibration = calibrate_threshold(searcher, images=8, progress=False)
    for number in range(KEPT + 4):
        save_calibration(searcher, dataclasses.replace(calibration, scope=f"path under /x{number}"))
    stored = json.loads((digit_collection / CALIBRATION).read_text())
    assert len(stored) == KEPT and f"embedding (path under /x{KEPT + 3})" in stored
    assert "embedding (path under /x0)" not in stored
