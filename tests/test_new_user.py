"""What a new user runs into (issue 27, round 3): the train/test folder trap, advice that leads
somewhere, labels that print safely, listings that add up, and a CLI that stops quietly."""

from __future__ import annotations

import io
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image
from synthetic import WIDTH, make_collection, separable

from lookalike.cli import main
from lookalike.errors import InvalidArgument
from lookalike.store.ingest import Upload


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_closed_stdout_ends_the_cli_quietly(synthetic) -> None:
    """`lookalike info -c X | head`: head gone, the CLI stops without a word on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line is written
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "lookalike", "info", "-c", str(synthetic.path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert finished.stderr.decode() == ""
    assert finished.returncode != 0


TINY_ARGS = ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "--workers", "0"]
TREE = {"train": 8, "test": 4}  # images per class in each split: the fmnist layout, smaller


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real digits in ``train/<digit>/`` and ``test/<digit>/``, as Fashion-MNIST is shipped."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("fmnist-like")
    for digit in (0, 1, 7):
        rows = iter(np.flatnonzero(digits.target == digit))
        for split, count in TREE.items():
            (root / split / str(digit)).mkdir(parents=True)
            for row in itertools.islice(rows, count):
                ink = (255 - digits.images[row] * 255 / 16).astype(np.uint8)
                Image.fromarray(ink).resize((32, 32)).save(root / split / str(digit) / f"{row}.png")
    return root


@pytest.fixture(scope="module")
def split_collection(split_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tree embedded with `--labels-from-folders`, and the embed command's output."""
    collection = tmp_path_factory.mktemp("c") / "c"
    result = run("embed", split_tree, "-c", collection, *TINY_ARGS, "--labels-from-folders", "-q")
    assert result.exit_code == 0, result.output
    return collection, result.output


@pytest.mark.slow
def test_a_train_test_tree_is_labelled_by_class_and_counted(split_collection) -> None:
    collection, output = split_collection
    assert "labels: 0 12, 1 12, 7 12" in output  # the class under each split, not train / test
    assert "warning" not in output
    info = run("info", "-c", collection)
    assert "labels       0 12, 1 12, 7 12; 0 items without a label" in info.output
    assert "splits       train 24, test 12" in info.output
    described = json.loads(run("info", "-c", collection, "--json").output)
    assert described["labels"] == {"0": 12, "1": 12, "7": 12}
    assert described["splits"] == {"train": 24, "test": 12} and described["warnings"] == []


def test_train_keeps_to_one_split(split_collection) -> None:
    collection, _ = split_collection
    result = run("train", "-c", collection, "--name", "tr", "--split", "train", "--folds", "3",
                 "--layer", "embedding", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["split"] == "train" and card["n_train"] == 24  # the 12 test items unseen
    assert card["class_counts"] == {"0": 8, "1": 8, "7": 8}
    bad = run("train", "-c", collection, "--name", "x", "--split", "holdout")
    assert bad.exit_code == 1 and "unknown split 'holdout'" in bad.output


@pytest.mark.slow
def test_labels_named_like_splits_warn_everywhere(split_tree: Path, tmp_path: Path) -> None:
    """The old trap, through a listing whose labels are the split folders: said at embed, in
    info, and by train, which also prints the majority baseline its accuracy falls under."""
    paths = sorted(split_tree.rglob("*.png"))
    listing = tmp_path / "listing.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{p.parts[-3]}\n" for p in paths))
    collection = tmp_path / "c"
    embedded = run("embed", listing, "-c", collection, *TINY_ARGS, "-q")
    assert "labels: train 24, test 12" in embedded.output
    assert "warning: labels 'test', 'train' look like split names" in embedded.output
    info = run("info", "-c", collection)
    assert "warning: labels 'test', 'train' look like split names" in info.output
    trained = run("train", "-c", collection, "--name", "t", "--folds", "3", "--layer", "embedding")
    assert trained.exit_code == 0, trained.output
    assert "majority-class baseline 0.667" in trained.output
    assert "look like split names" in trained.output


def test_train_warns_below_the_majority_baseline(tmp_path: Path) -> None:
    """Labels the features know nothing of, 25 to 5: accuracy under always answering 'a'."""
    noise = np.random.default_rng(1).standard_normal((30, WIDTH)).astype(np.float32)
    make_collection(tmp_path / "c", ["a"] * 25 + ["b"] * 5, noise)
    result = run("train", "-c", tmp_path / "c", "--name", "n", "--layer", "embedding", "--json")
    card = json.loads(result.output)
    assert card["majority_baseline"] == pytest.approx(25 / 30, abs=1e-4)
    accuracy = card["metrics"]["accuracy"]
    assert accuracy < 25 / 30
    assert card["warnings"] == [
        f"accuracy {accuracy:.3f} (stratified 5-fold CV) is below the majority-class baseline "
        "0.833 (always answering 'a'): the features do not separate these labels; check what "
        "the labels mean"
    ]
    text = run("train", "-c", tmp_path / "c", "--name", "n2", "--layer", "embedding")
    assert "warning: accuracy" in text.output and "baseline 0.833" in text.output


@pytest.mark.slow
def test_listing_duplicates_and_empty_labels_are_counted(mixed_dir, tmp_path: Path) -> None:
    """13 rows: 7 images, 3 bad files, 3 repeats. Every row is accounted for."""
    root, bad, good = mixed_dir
    rows = [f"{path},{'' if n < 2 else 'x'}" for n, path in enumerate(good[:7])]
    rows += [f"{root / 'bad' / name},x" for name in sorted(bad)[:3]]
    rows += [f"{good[0]},y", f"{good[1]},x", f"{good[2]},"]  # later rows for known paths
    listing = tmp_path / "listing.csv"
    listing.write_text("path,label\n" + "\n".join(rows) + "\n")
    result = run("embed", listing, "-c", tmp_path / "c", *TINY_ARGS, "-q", "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output[result.output.index("{") :])
    assert (counts["found"], counts["embedded"], counts["failed"]) == (13, 7, 3)
    assert counts["duplicates"] == 3 and counts["unlabelled_rows"] == 2
    assert counts["labels"] == {"x": 8}  # the first row of a path keeps its label
    text = run("embed", listing, "-c", tmp_path / "c2", *TINY_ARGS, "-q").output
    assert "3 failed, 3 duplicates dropped (the first row naming a path is kept)" in text
    assert "labels: x 8; 2 rows without a label" in text


@pytest.mark.parametrize("label", ["cat\ndog", "cat\tdog", "cat\x1b[31m", "cat\u2028dog"])
def test_labels_with_control_characters_are_refused_wherever_they_come_in(
    label: str, photo_dir: Path, synthetic, tmp_path: Path
) -> None:
    photo = sorted(photo_dir.glob("*.jpg"))[0]
    listing = tmp_path / "listing.parquet"
    pq.write_table(pa.table({"path": [str(photo)], "label": [label]}), listing)
    listed = run("embed", listing, "-c", tmp_path / "new", *TINY_ARGS, "-q")
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert f"row 1: the label {label!r} holds a control character" in listed.output
    assert not (tmp_path / "new").exists()  # refused before anything was written

    folders = tmp_path / "tree"
    (folders / label).mkdir(parents=True)
    shutil.copy(photo, folders / label / photo.name)
    walked = run(
        "embed", folders, "-c", tmp_path / "new", *TINY_ARGS, "--labels-from-folders", "-q"
    )
    assert walked.exit_code == 1 and "holds a control character" in walked.output

    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"id": [0, 1], "label": ["cat", label]}), labels)
    trained = run("train", "-c", synthetic.path, "--name", "x", "--labels", labels)
    assert trained.exit_code == 1 and "holds a control character" in trained.output

    with pytest.raises(InvalidArgument, match="holds a control character"):
        Upload(b"...", "a.jpg", label)


def test_a_blank_label_is_no_label() -> None:
    assert Upload(b"...", "a.jpg", "  ").label is None
    assert Upload(b"...", "a.jpg", "cat").label == "cat"


def test_the_audit_table_escapes_what_it_prints(tmp_path: Path) -> None:
    """Labels stored before the rule (or by hand) cannot break the audit's rows."""
    vectors, labels = separable(20, spread=0.5)
    labels = [label.replace("cat", "ca\nt") for label in labels]
    labels[0] = "dog"  # a cat labelled dog: the first label error, suggested 'ca\nt'
    make_collection(tmp_path / "c", labels, vectors)
    result = run("audit", "-c", tmp_path / "c", "--only", "label_errors", "--layer", "embedding",
                 "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ca\\nt" in result.output
    rows = result.output.splitlines()
    assert not [row for row in rows if row.startswith("t ")]  # no row cut in two


TEST_RESNET = ["--backbone", "timm:test_resnet", "--weights", "none", "--image-size", "32"]


@pytest.mark.slow
def test_head_advice_is_a_command_that_runs(
    digit_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few images whose frozen features separate: `train` on cached features, not a `finetune`
    that would export the base model again under a new spec. The advised command runs."""
    monkeypatch.chdir(tmp_path)
    advice = run("advise", digit_dir, *TEST_RESNET, "-q")
    assert advice.exit_code == 0, advice.output
    assert "strategy: head" in advice.output
    command = advice.output.split("run: ", 1)[1].strip()
    assert "finetune" not in command
    for step in command.split(" && "):
        words = shlex.split(step)
        assert words[0] == "lookalike"
        done = run(*words[1:], *(["-q"] if words[1] == "embed" else []))
        assert done.exit_code == 0, done.output
    assert "classifier 'head'" in done.output and "36 items, 3 classes" in done.output
    collection = tmp_path / f"{digit_dir.name}.lookalike"
    advised = json.loads(run("advise", collection, *TEST_RESNET, "-q", "--json").output)
    assert (
        advised["command"] == f"lookalike train -c {collection} --name head --labels-from-folders"
    )


@pytest.mark.slow
def test_finetune_reports_the_frozen_baseline_and_counts_epochs_one_way(
    digit_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["finetune", digit_dir, *TEST_RESNET, "--strategy", "head", "--epochs", "2",
            "--batch-size", "8", "--out", out, "-q"]  # fmt: skip
    reported = json.loads(run(*args, "--json").output)
    assert [record["epoch"] for record in reported["history"]] == [1, 2]
    assert reported["best_epoch"] in (1, 2)
    assert 0.5 <= reported["frozen_val_accuracy"] <= 1  # the probe of the frozen features
    text = run(*args).output  # the finished run, read back: the same epochs, the same words
    assert "epoch 1: 0 groups trained" in text and "epoch 2: 0 groups trained" in text
    assert f"best: epoch {reported['best_epoch']}," in text
    assert f"frozen baseline: validation accuracy {reported['frozen_val_accuracy']:.4f}" in text
    assert "strategy head trains no backbone group" in text


def test_the_server_trains_on_one_split_and_refuses_unprintable_labels(
    split_collection, split_tree: Path
) -> None:
    from lookalike.server.app import create_app
    from lookalike.server.settings import Settings

    collection, _ = split_collection
    app = create_app(Settings(collections={"c": collection}))
    app.testing = True
    client = app.test_client()
    body = {"name": "http-train", "split": "Training", "folds": 3, "layer": "embedding"}
    started = client.post("/v1/collections/c/classifiers", json=body)
    assert started.status_code == 202, started.json
    job_id = started.headers["Location"].rsplit("/", 1)[-1]
    app.extensions["lookalike-jobs"].wait(job_id, 120)
    job = client.get(started.headers["Location"]).json
    assert job["state"] == "succeeded", job
    assert job["result"]["split"] == "train" and job["result"]["n_train"] == 24
    bad = client.post("/v1/collections/c/classifiers", json={**body, "split": "holdout"})
    assert bad.status_code == 422 and "unknown split 'holdout'" in bad.json["detail"]
    image = next(split_tree.rglob("*.png")).read_bytes()
    form = {"image": [(io.BytesIO(image), "a.png")], "label": "a\nb"}
    refused = client.post("/v1/collections/c/items", data=form, content_type="multipart/form-data")
    assert refused.status_code == 422 and "holds a control character" in refused.json["detail"]


def test_a_split_folder_gives_way_to_the_class_under_it(photo_dir: Path, tmp_path: Path) -> None:
    from lookalike.embedder.sources import walk_images

    photo = next(photo_dir.glob("*.jpg"))
    for folder in ("Training/cat", "val/dog", "test", "dog"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / folder / "1.jpg")
    labels = {str(s.path.relative_to(tmp_path)): s.label for s in walk_images([tmp_path], True)}
    assert labels == {
        "Training/cat/1.jpg": "cat",
        "val/dog/1.jpg": "dog",
        "test/1.jpg": "test",  # no class under it: the folder's own name, warned of elsewhere
        "dog/1.jpg": "dog",
    }
