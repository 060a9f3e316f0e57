"""The audit on real collections: flipped labels, a planted outlier, a copy leaked across splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import TINY, photo
from PIL import Image
from synthetic import WIDTH, make_collection, separable

from lookalike.cli import main
from lookalike.errors import LabelError
from lookalike.explore.audit import audit_collection
from lookalike.explore.audit_sheet import audit_sheet
from lookalike.explore.label_errors import find_label_errors
from lookalike.explore.leakage import split_of_path
from lookalike.explore.outliers import find_outliers
from lookalike.index import Searcher
from lookalike.jobs.bulk import embed_images

FLIPPED = {3: "dog", 31: "fox", 62: "cat", 75: "dog"}  # item id -> wrong label (ids follow rows)


def flipped_labels(labels: list[str]) -> dict[int, str]:
    given = dict(enumerate(labels))
    given.update(FLIPPED)
    return given


def test_flipped_labels_rank_first_with_the_true_label_suggested(tmp_path: Path) -> None:
    vectors, labels = separable(30, spread=0.5)
    collection = make_collection(tmp_path / "c", labels, vectors)
    errors = find_label_errors(collection, flipped_labels(labels), layer="auto", folds=3)
    assert set(errors.ids[: len(FLIPPED)].tolist()) == set(FLIPPED)
    assert errors.flagged[: len(FLIPPED)].sum() >= 3 and not errors.flagged[len(FLIPPED) :].any()
    assert errors.layers == ("embedding",)  # the informative layer, chosen as train chooses
    for row in errors.rows(len(FLIPPED)):
        assert row["label"] == FLIPPED[row["id"]]
        assert row["suggested"] == labels[row["id"]]  # the true class
        assert row["p_label"] < 0.5


def test_a_planted_outlier_ranks_first(tmp_path: Path) -> None:
    vectors, labels = separable(30)
    far = np.zeros((1, WIDTH), np.float32)
    far[0, -1] = 40.0
    make_collection(tmp_path / "c", [*labels, None], np.vstack([vectors, far]))
    outliers = find_outliers(Searcher.open(tmp_path / "c"), k=5, progress=False)
    assert outliers.ids[0] == len(labels)
    assert outliers.flagged[0] and outliers.flagged.sum() <= 3
    assert outliers.scores[0] > 3 * np.median(outliers.scores)


def test_split_names_come_from_the_nearest_folder() -> None:
    assert split_of_path("/data/train/cat/1.png") == "train"
    assert split_of_path("/data/Validation/1.png") == "val"
    assert split_of_path("/test/data/training/x.png") == "train"
    assert split_of_path("/data/cat/test.png") is None  # a file name is not a folder


@pytest.fixture(scope="module")
def digits(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits embedded with the tiny model, labelled by folder (once: the tests only read)."""
    folder = tmp_path_factory.mktemp("audit") / "digits"
    embed_images([digit_dir], folder, TINY, labels_from_folders=True, progress=False, num_workers=0)
    return folder


@pytest.fixture(scope="module")
def split_collection(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Digits in train/ and test/ folders, one train image copied into test (a leak) and one
    copied within train (a duplicate, not a leak), one photo planted among them."""
    tmp_path = tmp_path_factory.mktemp("splits")
    root = tmp_path / "images"
    for label_dir in sorted(digit_dir.iterdir()):
        files = sorted(label_dir.iterdir())
        for split, part in (("train", files[:8]), ("test", files[8:])):
            (root / split / label_dir.name).mkdir(parents=True)
            for file in part:
                shutil.copy(file, root / split / label_dir.name / file.name)
    leaked = sorted((root / "train/7").iterdir())[0]
    shutil.copy(leaked, root / "test/7/copy-of-train.png")
    shutil.copy(leaked, root / "train/7/copy-within-train.png")
    photo("astronaut").resize((96, 96)).save(root / "train/1/astronaut.png")
    embed_images(
        [root], tmp_path / "c", TINY, labels_from_folders=False, progress=False, num_workers=0
    )
    return {"dir": tmp_path / "c", "root": root, "leaked": leaked}


def test_audit_finds_the_leak_the_outlier_and_skips_without_labels(split_collection) -> None:
    root = split_collection["root"]
    report = audit_collection(split_collection["dir"], k=5, progress=False)
    assert "label_errors" in report.skipped and "no item" in report.skipped["label_errors"]
    assert report.path(report.outliers.ids[0]) == str((root / "train/1/astronaut.png").resolve())
    pairs = {
        frozenset((Path(report.path(a)).name, Path(report.path(b)).name))
        for a, b in zip(report.leaks.a, report.leaks.b, strict=True)
    }
    name = split_collection["leaked"].name
    assert frozenset((name, "copy-of-train.png")) in pairs
    assert frozenset(("copy-within-train.png", "copy-of-train.png")) in pairs
    assert frozenset((name, "copy-within-train.png")) not in pairs  # both in train: no leak
    assert report.leaks.calibration is not None and report.leaks.splits == {"test": 13, "train": 26}


def test_given_splits_or_labels_that_do_not_fit_are_errors(split_collection, tmp_path) -> None:
    table = tmp_path / "splits.csv"
    table.write_text("id,split\n0,train\n999,test\n")
    with pytest.raises(LabelError, match=r"1 of 2 splits .* name no item"):
        audit_collection(split_collection["dir"], splits=table, parts=["leaks"], progress=False)
    with pytest.raises(LabelError, match=r"no item .* has a label"):
        audit_collection(split_collection["dir"], labels="folders", parts=["label_errors"])


def test_cli_audit_json_parquet_and_sheet(digits: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = ["path,label"] + [
        f"{path},{'1' if n == 0 else label}"  # the first 0 relabelled as a 1
        for n, (path, label) in enumerate(_items(digits))
    ]
    labels.write_text("\n".join(rows) + "\n")
    out, sheet = tmp_path / "found.parquet", tmp_path / "audit.png"
    args = ["audit", "-c", str(digits), "--labels", str(labels), "--json", "-q"]
    args += ["--layer", "embedding", "-k", "5", "--out", str(out), "--sheet", str(sheet)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    first = report["label_errors"]["top"][0]
    assert (first["id"], first["label"], first["suggested"]) == (0, "1", "0")
    assert report["outliers"]["audited"] == 36 and "leaks" in report["skipped"]
    table = pq.read_table(out)
    assert set(table["kind"].to_pylist()) == {"label_error", "outlier"}
    assert len(table) == 72
    with Image.open(sheet) as drawn:
        assert drawn.width > 8 * 128 and drawn.height > 2 * 128  # two rows of eight


def _items(collection_dir: Path) -> list[tuple[str, str]]:
    from lookalike.store.collection import Collection

    items = Collection.open(collection_dir).items(["path", "label"])
    return list(zip(items["path"].to_pylist(), items["label"].to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.txt"], "give a .parquet or .csv"),
        (["-k", "0"], "0 is not in the range"),
        (["--only", "everything"], "'everything' is not one of"),
        (["--labels", "/nowhere.csv"], "no such labels file"),
        (["--layer", "nope"], "layer 'nope' is not cached"),
    ],
)
def test_cli_bad_input_is_one_line(digits: Path, extra, message) -> None:
    result = CliRunner().invoke(main, ["audit", "-c", str(digits), "-q", *extra])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_sheet_of_nothing_is_none(synthetic, tmp_path: Path) -> None:
    report = audit_collection(synthetic.path, parts=["leaks"], progress=False)
    assert report.leaks is None and audit_sheet(report, tmp_path / "x.png") is None
