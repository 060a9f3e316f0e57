"""Identical items: thousands of copies of one image are one cluster, found without listing
their pairs (dedup, the audit's leakage, the CLI), and calibration on a scope with nothing to
measure (no items, copies of one image) stores no threshold and says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_spec, photo

from lookalike.cli import main
from lookalike.errors import InvalidArgument
from lookalike.explore.leakage import find_leaks
from lookalike.index import Filters, Searcher, find_duplicates
from lookalike.index.calibrate import CALIBRATION, calibrated_threshold, load_calibration
from lookalike.index.dedup import equal_groups
from lookalike.jobs.bulk import embed_images
from lookalike.server.app import create_app
from lookalike.server.settings import Settings
from lookalike.store.collection import Collection

COPIES = 1500  # C(1500, 2) = 1,124,250 pairs: over dedup's cap of 1,000,000
WIDTH = 8


def write_collection(path: Path, vectors: np.ndarray, paths: list[str], digests: list[str]):
    """Vectors written straight through the collection's writer (no images, no model)."""
    spec = make_spec(dims={"embedding": WIDTH, "layer3": 4})
    collection = Collection.create(path, spec)
    rows = [
        {"path": p, "sha256": d, "width": 8, "height": 8, "bytes": 1, "mtime_ns": 1, "label": None}
        for p, d in zip(paths, digests, strict=True)
    ]
    layer3 = np.zeros((len(paths), 4), np.float32)
    with collection.writer(shard_size=512) as writer:
        writer.add(rows, {"embedding": vectors, "layer3": layer3})
    return collection


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """1,500 items with one identical vector (each its own file: different digests), 3 items a
    hair from it, and 200 distinct items; the first half of the copies in train/, the rest in
    test/."""
    rng = np.random.default_rng(0)
    same = unit(rng.standard_normal(WIDTH))
    near = unit(same + 0.002 * rng.standard_normal((3, WIDTH)))
    distinct = unit(rng.standard_normal((200, WIDTH)))
    vectors = np.concatenate([np.repeat(same[None], COPIES, axis=0), near, distinct])
    splits = ["train"] * (COPIES // 2) + ["test"] * (len(vectors) - COPIES // 2)
    paths = [f"/data/{split}/{n}.png" for n, split in enumerate(splits)]
    digests = [f"{n:064x}" for n in range(len(vectors))]
    path = tmp_path_factory.mktemp("identical") / "c"
    write_collection(path, vectors, paths, digests)
    return {"dir": path, "copies": list(range(COPIES)), "near": list(range(COPIES, COPIES + 3))}


@pytest.mark.parametrize("threshold", [0.0, 1e-300])
def test_many_identical_items_are_one_cluster_at_any_threshold(placeholders, threshold) -> None:
    searcher = Searcher.open(placeholders["dir"])
    found = find_duplicates(searcher, threshold, progress=False)
    assert found.clusters[0] == placeholders["copies"]
    assert found.exact == [placeholders["copies"]]
    assert found.pair_count >= COPIES * (COPIES - 1) // 2
    assert len(found.pairs) <= 10  # the copies' pairs are counted, never listed


def test_items_a_hair_from_a_group_of_copies_join_its_cluster(placeholders) -> None:
    searcher = Searcher.open(placeholders["dir"])
    found = find_duplicates(searcher, 0.001, progress=False)
    assert found.clusters[0] == placeholders["copies"] + placeholders["near"]
    # every pair of the cluster lies within 0.001: the copies', and each near item with each copy
    assert found.pair_count == (COPIES + 3) * (COPIES + 2) // 2
    assert len(list(found.item_pairs())) == found.pair_count


def test_equal_groups_join_identical_vectors_and_identical_files(tmp_path: Path) -> None:
    """Equal vectors group; so do identical files (the same SHA-256) whose vectors differ by
    rounding; distinct items stay alone; a filter groups only the items it keeps."""
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal((4, WIDTH)))
    vectors = np.stack([base[0], base[0], base[1], base[1] + 1e-7, base[2], base[3]])
    digests = ["a" * 64, "b" * 64, "c" * 64, "c" * 64, "d" * 64, "e" * 64]
    paths = ["/x/0.png", "/y/1.png", "/x/2.png", "/x/3.png", "/x/4.png", "/x/5.png"]
    write_collection(tmp_path / "c", vectors, paths, digests)
    searcher = Searcher.open(tmp_path / "c")
    groups = equal_groups(searcher)
    assert [g.tolist() for g in groups.groups] == [[0, 1], [2, 3]]
    assert groups.representatives.tolist() == [0, 2, 4, 5]
    assert groups.representative_of(np.array([1, 3, 5])).tolist() == [0, 2, 5]
    only_x = equal_groups(searcher, Filters(path_prefix="/x/"))
    assert [g.tolist() for g in only_x.groups] == [[2, 3]]


def test_the_cap_on_distinct_pairs_says_what_is_true(placeholders) -> None:
    """Exact copies never count against the cap; distinct items within the threshold do, and
    the message says so and what to do."""
    searcher = Searcher.open(placeholders["dir"])
    with pytest.raises(InvalidArgument, match="distinct items") as refused:
        find_duplicates(searcher, 2.0, progress=False, max_pairs=1000)
    assert "exact copies" in str(refused.value) and "smaller threshold" in str(refused.value)


def test_the_cap_at_threshold_0_does_not_ask_for_a_smaller_one(tmp_path: Path) -> None:
    """Vectors that differ only by rounding lie within 0 to the range search; no smaller
    threshold can help, and the message says what can."""
    rng = np.random.default_rng(2)
    same = unit(rng.standard_normal(WIDTH))
    vectors = unit(same + 1e-7 * rng.standard_normal((100, WIDTH)).astype(np.float32))
    assert len(np.unique(vectors, axis=0)) > 50
    paths, digests = [f"/r/{n}.png" for n in range(100)], [f"{n:064x}" for n in range(100)]
    write_collection(tmp_path / "c", vectors, paths, digests)
    with pytest.raises(InvalidArgument, match="differ only by rounding") as refused:
        find_duplicates(Searcher.open(tmp_path / "c"), 0.0, progress=False, max_pairs=100)
    assert "give a smaller threshold" not in str(refused.value)
    assert "fewer items (filters)" in str(refused.value)


def test_audit_leakage_with_thousands_of_copies_across_splits(placeholders) -> None:
    searcher = Searcher.open(placeholders["dir"])
    leaks = find_leaks(searcher, threshold=0.0, progress=False)
    leaking = set(leaks.a.tolist()) | set(leaks.b.tolist())
    assert leaking == set(placeholders["copies"])  # each copy is listed with a copy across
    assert len(leaks) < 2 * COPIES  # one row per leaking item, not one per pair
    assert all(x != y for x, y in zip(leaks.split_a, leaks.split_b, strict=True))
    assert np.all(leaks.distance == 0)
    near = find_leaks(searcher, threshold=0.001, progress=False)
    assert set(near.a.tolist()) | set(near.b.tolist()) == set(
        placeholders["copies"] + placeholders["near"]
    )


# ----- calibration with nothing to measure ------------------------------------------------------


def test_calibration_on_an_empty_collection_stores_nothing_and_says_why(tmp_path: Path) -> None:
    write_collection(tmp_path / "c", np.empty((0, WIDTH), np.float32), [], [])
    searcher = Searcher.open(tmp_path / "c")
    calibration, reused, stored = calibrated_threshold(searcher, progress=False)
    assert not reused and not stored and calibration.bound == "no items"
    assert not (tmp_path / "c" / CALIBRATION).exists()
    assert "nothing stored" in calibration.lines()[0]


@pytest.fixture(scope="module")
def copies_of_one_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five byte-identical PNG copies of one photo and four other photos, embedded with the
    tiny model."""
    work = tmp_path_factory.mktemp("copies")
    images = work / "images"
    (images / "same").mkdir(parents=True)
    (images / "other").mkdir()
    photo("coffee").resize((48, 32)).save(images / "same" / "0.png")
    for n in range(1, 5):
        shutil.copy(images / "same" / "0.png", images / "same" / f"{n}.png")
    for name in ("astronaut", "chelsea", "rocket", "camera"):
        photo(name).resize((48, 32)).save(images / "other" / f"{name}.png")
    embed_images([images], work / "c", TINY, progress=False, num_workers=0)
    return work / "c"


def test_calibration_on_copies_of_one_image_or_no_match_stores_nothing(
    copies_of_one_photo: Path, tmp_path: Path
) -> None:
    collection_dir = tmp_path / "c"
    shutil.copytree(copies_of_one_photo, collection_dir)
    searcher = Searcher.open(collection_dir)
    some_path = searcher.collection.items(["path"])["path"][0].as_py()
    same = Filters(path_prefix=str(Path(some_path).parent.parent / "same") + "/")
    calibration, _, _ = calibrated_threshold(searcher, filters=same, progress=False)
    assert calibration.bound == "no distinct items" and calibration.items == 5
    assert "copies of one image" in calibration.lines()[0]
    assert "nothing stored" in calibration.lines()[0]
    nothing = Filters(path_prefix="/no/such/folder/")
    calibration, _, _ = calibrated_threshold(searcher, filters=nothing, progress=False)
    assert calibration.bound == "no items" and calibration.items == 0
    assert not (collection_dir / CALIBRATION).exists()
    # a threshold of 0 stored by an older version for those scopes is not reused
    stale = {**calibration.to_dict(), "items": 5, "scope": f"path under {same.path_prefix}"}
    key = f"{searcher.layer} (path under {same.path_prefix})"
    (collection_dir / CALIBRATION).write_text(json.dumps({key: stale}))
    assert load_calibration(searcher, same) is None
    lowered_to_zero = {**stale, "bound": "precision", "threshold": 0.0}  # 5 copies at 0, before
    (collection_dir / CALIBRATION).write_text(json.dumps({key: lowered_to_zero}))
    assert load_calibration(searcher, same) is None


def test_cli_dedup_finds_copies_of_one_png_as_one_cluster(copies_of_one_photo: Path) -> None:
    result = CliRunner().invoke(main, ["dedup", "-c", str(copies_of_one_photo), "-q"])
    assert result.exit_code == 0, result.output
    assert "1 clusters, 5 items" in result.output and "1 groups of identical items" in result.output
    assert "10 pairs" in result.output
    answer = (
        create_app(Settings(collections={"c": copies_of_one_photo}))
        .test_client()
        .post("/v1/collections/c/duplicates", json={})
    )
    body = answer.json
    assert body["cluster_count"] == 1 and body["items_in_clusters"] == 5, body
    assert body["exact_groups"] == 1 and body["pairs"] == 10


def test_a_large_group_of_copies_leaves_the_calibrated_threshold_alone(placeholders) -> None:
    """A sampled copy whose 8 nearest are all copies at 0 has no distinct neighbour among them;
    they used to count as distinct items at 0, forcing the threshold to 0."""
    from lookalike.index.calibrate import _pick, neighbourhoods

    searcher = Searcher.open(placeholders["dir"])
    sampled = placeholders["copies"][:50] + list(range(COPIES + 3, COPIES + 203))
    near = neighbourhoods(searcher, sampled)
    assert (near.copies[:50] == near.distances.shape[1]).all()
    variants = np.linspace(0.0, 0.01, 100)  # copies land within 0.01; distinct items lie far
    assert _pick(variants, near) == (pytest.approx(0.0099, abs=1e-4), "variants")
