"""The service layer as a Python user meets it: open a collection, search, dedup, predict, change it."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from PIL import Image

from lookalike import service
from lookalike.classify import train_classifier
from lookalike.errors import InvalidArgument, UnknownItem
from lookalike.index import Filters
from lookalike.store.ingest import Upload

ROOT = Path(__file__).resolve().parents[1]
# the faces' modules whose flows live in the service now (the rest still call lower layers)
MOVED = ["cli/search.py", "server/routes/search.py"]
# what a face may import from the library: the service, errors and settings' ranges, its own
# package, and renderers of results (a contact sheet draws hits; it holds no flow)
FACE_MAY_IMPORT = (
    "lookalike.service",
    "lookalike.errors",
    "lookalike.checks",
    "lookalike.index.sheet",
)


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def an_item_path(collection_dir: Path, item_id: int = 0) -> str:
    with service.open(collection_dir, read_only=True) as library:
        return library.item(item_id)["path"]


def test_read_only_never_writes_to_the_collection(digit_collection: Path) -> None:
    """No index saved, no calibration stored, no engine export cached in the folder; writes refused."""
    before = files_of(digit_collection)
    with service.open(digit_collection, read_only=True) as library:
        found = library.search_images([library.item(3)["path"]], k=3)
        assert found[0].hits[0].id == 3
        report = library.dedup()  # calibrated: measured, not stored
        assert report.calibration is not None and not report.calibration.stored
        with pytest.raises(InvalidArgument, match="read-only"):
            library.delete([0])
    assert files_of(digit_collection) == before


def test_read_only_on_a_read_only_mount_tries_no_write(
    digit_collection: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a real read-only bind mount (EROFS even for root), nothing is even tried: no index,
    calibration or engine export "was not stored" warning, and the answers are whole."""
    from conftest import read_only_view

    with (
        read_only_view(digit_collection, tmp_path / "ro") as mounted,
        service.open(mounted, read_only=True) as library,
    ):
        assert library.search_ids([1], k=2)[0].hits[0].id == 1
        assert library.search_images([library.item(1)["path"]], k=1)[0].hits[0].id == 1
        assert library.dedup().clusters is not None
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


def test_writable_open_keeps_the_index_and_the_calibration(digit_collection: Path) -> None:
    with service.open(digit_collection) as library:
        first = library.dedup()
    assert (digit_collection / "indexes").is_dir() or any(digit_collection.glob("index*"))
    assert first.calibration is not None and first.calibration.stored
    with service.open(digit_collection) as library:
        again = library.dedup()
    assert again.calibration.reused and again.threshold == first.threshold


def test_search_by_id_vector_and_image_agree_and_filters_hold(digit_collection: Path) -> None:
    with service.open(digit_collection, read_only=True) as library:
        by_id = library.search_ids([5], k=4)[0]
        assert by_id.query == "id 5" and by_id.hits[0].id == 5 and by_id.hits[0].distance == 0
        vector = library.collection.vectors([5], library.layer)
        by_vector = library.search_vectors(vector, k=4)[0]
        assert [h.id for h in by_vector.hits] == [h.id for h in by_id.hits]
        by_image = library.search_images([by_id.path], k=4)[0]
        assert by_image.query == by_id.path and by_image.hits[0].id == 5
        label = library.item(5)["label"]
        other = next(h.label for h in library.search_ids([0], k=36)[0].hits if h.label != label)
        kept = library.search_ids([5], k=36, filters=Filters((other,)))[0]
        assert kept.hits and {h.label for h in kept.hits} == {other}


def test_dedup_with_a_given_threshold_finds_an_added_copy(digit_collection: Path) -> None:
    source = an_item_path(digit_collection, 7)
    copy = io.BytesIO()
    Image.open(source).convert("RGB").save(copy, format="PNG", compress_level=1)  # other bytes
    with service.open(digit_collection) as library:
        added = library.add_images([Upload(copy.getvalue(), "copy.png")])
        assert added[0].created
        report = library.dedup(threshold=1e-4)
        assert report.calibration is None
        assert any({7, added[0].id} <= set(members) for members in report.clusters)
        body = report.to_dict(clusters=10, items_per_cluster=50)
        assert body["cluster_count"] == len(report.clusters) >= 1
        library.delete([added[0].id])
        assert added[0].id not in {h.id for h in library.search_ids([7], k=10)[0].hits}
        with pytest.raises(UnknownItem):
            library.item(added[0].id)


def test_predict_stored_items_and_new_images(digit_collection: Path) -> None:
    train_classifier(digit_collection, "digits", labels="folders", layer="embedding")
    with service.open(digit_collection, read_only=True) as library:
        by_id = library.predict_ids("digits", [2], k=3)[0]
        assert by_id.neighbours[0].id == 2
        assert by_id.label in {"0", "1", "7"}
        assert sum(by_id.probabilities.values()) == pytest.approx(1, abs=1e-3)
        path = library.item(2)["path"]
        by_image = library.predict_images("digits", [path], k=3)[0]
        assert by_image.source == path and by_image.label == by_id.label


def test_filters_are_read_the_same_from_plain_values() -> None:
    assert service.filters(["cat", "dog"], "/photos/") == Filters(("cat", "dog"), "/photos/")
    assert service.filters(None, None) == service.filters() == Filters((), None)


def test_name_dir_pairs_have_one_reading_in_the_cli_and_the_environment(tmp_path: Path) -> None:
    """A name given twice is refused in LOOKALIKE_COLLECTIONS too (it kept the last one)."""
    from lookalike.server.settings import Settings

    assert service.collection_dirs([f"a={tmp_path}", str(tmp_path / "b")]) == {
        "a": tmp_path.resolve(),
        "b": (tmp_path / "b").resolve(),
    }
    with pytest.raises(InvalidArgument, match="two collections named 'a'"):
        Settings().with_env({"LOOKALIKE_COLLECTIONS": f"a={tmp_path},a={tmp_path / 'b'}"})
    with pytest.raises(InvalidArgument, match="NAME=DIR"):
        Settings().with_env({"LOOKALIKE_COLLECTIONS": str(tmp_path)})
    env = Settings().with_env({"LOOKALIKE_COLLECTIONS": f"x={tmp_path}"})
    assert env.collections == {"x": tmp_path.resolve()}


def test_a_classifier_of_another_layer_predicts_through_a_searcher_of_its_layer(synthetic) -> None:
    train_classifier(synthetic, "noise", layer="layer3")
    before = files_of(synthetic.path)
    with service.open(synthetic.path, read_only=True) as library:
        assert library.layer == "embedding"
        prediction = library.predict_ids("noise", [4], k=2)[0]
        assert prediction.neighbours[0].id == 4
        with pytest.raises(InvalidArgument, match="read-only"):
            library.delete_classifier("noise")
    assert files_of(synthetic.path) == before
    with service.open(synthetic.path) as library:
        library.delete_classifier("noise")
        assert not (synthetic.path / "classifiers" / "noise").exists()


@pytest.mark.parametrize("module", MOVED)
def test_a_moved_face_module_calls_the_service_not_the_layers_below(module: str) -> None:
    """Its flows are the service's: it imports nothing else from the library (the import linter
    checks layers; this checks the faces stay thin)."""
    own = "lookalike." + module.split("/")[0]
    tree = ast.parse((ROOT / module).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0)
        for alias in node.names
    }
    imported |= {
        f"lookalike.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "lookalike"
        for alias in node.names
    }
    library = {name for name in imported if name and name.startswith("lookalike.")}
    stray = {name for name in library if not name.startswith((own, *FACE_MAY_IMPORT))}
    assert not stray, f"{module} imports flows from below the service: {sorted(stray)}"


def test_embed_folder_makes_new_images_searchable_at_once(
    digit_collection: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "new"
    folder.mkdir()
    for n in range(2):
        Image.effect_noise((40, 40), 60 + 20 * n).convert("RGB").save(folder / f"noise-{n}.png")
    with service.open(digit_collection) as library:
        before = len(library.collection)
        done = library.embed_folder(folder)
        assert (done.report.embedded, done.indexed, done.unindexed) == (2, 2, 0)
        found = library.search_images([folder / "noise-1.png"], k=1)[0]
        assert found.hits[0].path == str((folder / "noise-1.png").resolve())
        assert len(library.collection) == before + 2
