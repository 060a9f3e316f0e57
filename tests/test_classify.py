"""Classifiers on cached features: labels, training, skops persistence, prediction, the probe, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from click.testing import CliRunner
from conftest import TINY, photo
from PIL import Image
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from synthetic import CLASSES, WIDTH, make_collection, separable, synthetic_spec

from lookalike.classify import (
    Predictor,
    list_classifiers,
    load_classifier,
    load_labels,
    probe_features,
    probe_folder,
    save_classifier,
    train_classifier,
)
from lookalike.classify.store import MODEL_FILE, classifier_dir
from lookalike.cli import main
from lookalike.errors import ClassifierError, LabelError, SpecMismatch
from lookalike.index import build_index
from lookalike.store.collection import Collection

# ----- training and evaluation ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["logreg", "linear-svm", "knn", "mlp"])
def test_separable_features_are_learned_by_every_model(synthetic: Collection, model: str) -> None:
    report = train_classifier(synthetic, "m", model=model, layer="embedding")
    assert report.evaluation.accuracy >= 0.95
    assert report.evaluation.macro_f1 >= 0.95
    assert set(report.evaluation.per_class) == set(CLASSES)
    assert report.evaluation.confusion.sum() == 90
    card = json.loads((report.path / "card.json").read_text())
    assert card["classes"] == list(CLASSES) and card["n_train"] == 90 and card["model"] == model
    assert card["spec_fingerprint"] == synthetic.spec.fingerprint()
    assert (report.path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fitted, _ = load_classifier(synthetic, "m")
    probabilities = fitted.predict_proba(separable(5, seed=7)[0])
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_noise_layer_scores_at_chance(synthetic: Collection) -> None:
    report = train_classifier(synthetic, "noise", layer="layer3")
    assert report.evaluation.accuracy < 0.6  # three classes: chance is 1/3


def test_held_out_split_and_class_weights(tmp_path: Path) -> None:
    vectors, labels = separable(40)
    keep = [n for n, label in enumerate(labels) if label != "fox" or n % 10 == 0]  # 4 foxes only
    collection = make_collection(tmp_path / "c", [labels[n] for n in keep], vectors[keep])
    report = train_classifier(collection, "imbalanced", holdout=0.5)
    assert report.evaluation.method.startswith("held-out 50%")
    assert report.evaluation.per_class["fox"]["support"] == 2
    assert report.evaluation.per_class["fox"]["recall"] == 1.0
    assert report.card["class_counts"] == {"cat": 40, "dog": 40, "fox": 4}


def test_skops_round_trip_gives_identical_probabilities(synthetic: Collection) -> None:
    from lookalike.classify import make_model

    vectors, labels = separable(30)
    targets = np.searchsorted(CLASSES, labels)
    for name in ("logreg", "linear-svm", "knn", "mlp"):
        fitted = make_model(name, 90, 30).fit(vectors, targets)
        card = {
            "name": name,
            "spec": synthetic.spec.to_dict(),
            "spec_fingerprint": synthetic.spec.fingerprint(),
        }
        save_classifier(synthetic, name, fitted, card)
        loaded, _ = load_classifier(synthetic, name)
        queries = separable(10, seed=3, spread=3.0)[0]
        assert np.array_equal(loaded.predict_proba(queries), fitted.predict_proba(queries))


def test_a_model_file_with_foreign_types_is_refused(synthetic: Collection) -> None:
    train_classifier(synthetic, "m")
    for func, name in ((print, "builtins.print"), (np.load, "numpy")):  # a NumPy name is not enough
        hostile = make_pipeline(FunctionTransformer(func=func))
        sio.dump(hostile, classifier_dir(synthetic, "m") / MODEL_FILE)
        with pytest.raises(ClassifierError, match=f"does not trust .*{name}"):
            load_classifier(synthetic, "m")


def test_other_embedder_spec_is_refused(synthetic: Collection, tmp_path: Path) -> None:
    train_classifier(synthetic, "m")
    with pytest.raises(SpecMismatch, match="pooling"):
        load_classifier(synthetic, "m", spec=synthetic_spec(pooling="gem"))
    vectors, labels = separable(30)
    other = make_collection(tmp_path / "other", labels, vectors, synthetic_spec(weights="x.pt"))
    classifier_dir(other, "m").parent.mkdir()
    classifier_dir(synthetic, "m").rename(classifier_dir(other, "m"))
    with pytest.raises(SpecMismatch, match="weights"):
        Predictor.open(other.path, "m")


# ----- labels and bad input -------------------------------------------------------------------


def test_labels_from_a_csv_by_path_or_id_and_parquet(tmp_path: Path) -> None:
    vectors, _ = separable(10)
    collection = make_collection(tmp_path / "c", [None] * 30, vectors)
    with pytest.raises(LabelError, match=r"no item .* has a label"):
        load_labels(collection)
    (tmp_path / "by_id.csv").write_text(
        "id,label\n" + "".join(f"{n},{'ab'[n % 2]}\n" for n in range(6))
    )
    found = load_labels(collection, tmp_path / "by_id.csv")
    assert found.ids.tolist() == list(range(6)) and found.counts() == {"a": 3, "b": 3}
    (tmp_path / "by_path.csv").write_text(
        "path,label\n/img/1.jpg,x\n/img/2.jpg,y\n/img/3.jpg,x\n/img/4.jpg,y\n"
    )
    assert load_labels(collection, tmp_path / "by_path.csv").ids.tolist() == [1, 2, 3, 4]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"id": [7, 8, 9, 10], "label": ["p", "q", "p", "q"]}), tmp_path / "l.parquet"
    )
    assert load_labels(collection, tmp_path / "l.parquet").classes == ["p", "q"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("id,label\n1,a\n2,a\n3,a\n", "at least 2 classes"),
        ("id,label\n1,a\n2,a\n3,b\n", "at least 2 examples; 1 class"),
        ("id,label\n1,a\n2,b\n999,a\n", "1 of 3 labels .* name no item"),
        ("path,label\n/img/1.jpg,a\n/nowhere.jpg,b\n", "name no item.*nowhere"),
        ("id,label\n1,a\n1,b\n", "two labels"),
        ("name,label\nx,a\n", "needs an 'id' or a 'path' column"),
        ("id,kind\n1,a\n", "no 'label' column"),
    ],
)
def test_bad_labels_are_clear_errors(tmp_path: Path, table: str, message: str) -> None:
    vectors, _ = separable(10)
    collection = make_collection(tmp_path / "c", [None] * 30, vectors)
    (tmp_path / "labels.csv").write_text(table)
    with pytest.raises(LabelError, match=message):
        train_classifier(collection, "m", labels=tmp_path / "labels.csv")


def test_names_existing_unknown_and_bad(synthetic: Collection) -> None:
    train_classifier(synthetic, "m")
    with pytest.raises(ClassifierError, match=r"already exists.*--overwrite"):
        train_classifier(synthetic, "m")
    replaced = train_classifier(synthetic, "m", model="knn", overwrite=True)
    assert [c["model"] for c in list_classifiers(synthetic)] == ["knn"] == [replaced.card["model"]]
    with pytest.raises(ClassifierError, match=r"no classifier named 'nope'.*known: m"):
        Predictor.open(synthetic.path, "nope")
    for bad in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(ClassifierError, match="bad classifier name"):
            train_classifier(synthetic, bad)
    with pytest.raises(ValueError, match="unknown model 'forest'"):
        train_classifier(synthetic, "f", model="forest")


# ----- prediction on real embeddings ----------------------------------------------------------


@pytest.mark.slow
def test_predict_new_images_and_stored_items(
    digit_collection: Path, digit_dir: Path, tmp_path: Path
) -> None:
    report = train_classifier(digit_collection, "digits", folds=3)
    assert report.card["n_train"] == 36 and report.card["classes"] == ["0", "1", "7"]
    from sklearn.datasets import load_digits

    digits = load_digits()
    unseen = np.flatnonzero(digits.target == 0)[20]  # not among the 12 embedded zeros
    query = tmp_path / "new-zero.png"
    Image.fromarray((255 - digits.images[unseen] * 255 / 16).astype(np.uint8)).resize(
        (32, 32)
    ).save(query)

    predictor = Predictor.open(digit_collection, "digits")  # no index yet: exact neighbours
    [exact] = predictor.predict_images([query], k=4, with_embedding=True)
    assert set(exact.probabilities) == {"0", "1", "7"}
    assert abs(sum(exact.probabilities.values()) - 1) < 1e-5
    assert exact.label == max(exact.probabilities, key=exact.probabilities.get)
    assert len(exact.neighbours) == 4 and all(h.label in {"0", "1", "7"} for h in exact.neighbours)
    assert len(exact.embedding) == Collection.open(digit_collection).spec.dims["embedding"]
    [stored] = predictor.predict_ids([0], k=1)
    assert stored.neighbours[0].id == 0 and stored.neighbours[0].distance < 1e-5
    predictor.close()

    build_index(Collection.open(digit_collection), progress=False)
    indexed = Predictor.open(digit_collection, "digits")
    [again] = indexed.predict_images([query.read_bytes()], k=4)
    assert [h.id for h in again.neighbours] == [h.id for h in exact.neighbours]
    assert again.probabilities == exact.probabilities
    indexed.close()


# ----- the probe ------------------------------------------------------------------------------


def test_probe_ranks_the_planted_informative_layer_first() -> None:
    vectors, labels = separable(30)
    targets = np.searchsorted(CLASSES, labels)
    rng = np.random.default_rng(1)
    features = {
        ("early", "avg"): rng.standard_normal((90, 32)).astype(np.float32),
        ("middle", "max"): vectors,
        ("late", "avg"): rng.standard_normal((90, 64)).astype(np.float32),
    }
    rows = probe_features(features, targets, folds=3)
    assert (rows[0].layer, rows[0].pooling) == ("middle", "max")
    assert rows[0].accuracy >= 0.95 and rows[0].knn_recall >= 0.95
    assert all(r.accuracy < 0.7 for r in rows[1:])


@pytest.mark.slow
def test_probe_a_labelled_folder_with_a_real_model(digit_dir: Path) -> None:
    report = probe_folder(
        digit_dir, embedder=TINY, poolings=("avg", "max"), folds=3, progress=False
    )
    keys = {row.key for row in report.rows}
    assert keys == {f"layer{n}/{p}" for n in range(1, 5) for p in ("avg", "max")} | {"embedding"}
    assert [r.accuracy for r in report.rows] == sorted(
        (r.accuracy for r in report.rows), reverse=True
    )
    assert report.n_items == 36 and report.classes == ["0", "1", "7"]
    assert report.chart()[:4] == b"\x89PNG"
    assert "layer" in report.table().splitlines()[0]


# ----- the command line -----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_predict_list_and_errors(digit_collection: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["train", "-c", str(digit_collection), "--name", "d", "--folds", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "stratified 3-fold CV, selection score (these folds chose the layer among 4)" in (
        result.output
    )  # --layer auto, the default: the score is labelled for what it is
    assert "<- chosen" in result.output and "confusion.png" in result.output
    result = runner.invoke(main, ["train", "-c", str(digit_collection), "--name", "d"])
    assert (
        result.exit_code == 1
        and "already exists" in result.output
        and "Traceback" not in result.output
    )
    query = tmp_path / "cat.jpg"
    photo("chelsea").resize((64, 48)).save(query)
    result = runner.invoke(
        main,
        ["predict", "-c", str(digit_collection), "--name", "d", str(query), "--json", "-k", "2"],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["source"] == str(query) and len(answer["neighbours"]) == 2
    assert "embedding" not in answer
    result = runner.invoke(main, ["classifiers", "-c", str(digit_collection)])
    assert result.output.startswith("d ") and "3 classes, 36 items" in result.output
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    result = runner.invoke(
        main, ["predict", "-c", str(digit_collection), "--name", "d", str(broken)]
    )
    assert (
        result.exit_code == 1 and "broken.jpg" in result.output and "Traceback" not in result.output
    )
    result = runner.invoke(
        main, ["predict", "-c", str(digit_collection), "--name", "zzz", "--id", "1"]
    )
    assert result.exit_code == 1 and "no classifier named 'zzz'" in result.output


@pytest.mark.slow
def test_cli_probe_collection_writes_a_chart(digit_collection: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "probe",
            "-c",
            str(digit_collection),
            "--pooling",
            "avg",
            "--layer",
            "layer4",
            "--layer",
            "layer2",
            "--folds",
            "2",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["layer", "pooling", "dim"]
    assert {line.split()[0] for line in lines[1:4]} == {"layer4", "layer2", "embedding"}
    assert (digit_collection / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_classes_get_clear_errors_or_work(tmp_path: Path) -> None:
    vectors, labels = separable(2)  # two examples a class
    collection = make_collection(tmp_path / "c", labels, vectors)
    with pytest.raises(LabelError, match="linear-svm calibrates"):
        train_classifier(collection, "svm", model="linear-svm")
    for model in ("logreg", "knn", "mlp"):
        report = train_classifier(collection, model, model=model)
        assert report.evaluation.method.startswith("stratified 2-fold CV, selection score")
        assert report.evaluation.confusion.sum() == 6
    with pytest.raises(LabelError, match="nested CV needs"):
        train_classifier(collection, "nested", nested=True)  # one example a class per fold


def test_layers_side_by_side_train_and_predict_stored_items(synthetic: Collection) -> None:
    report = train_classifier(synthetic, "both", layer=["layer3", "embedding"])
    assert report.card["layers"] == ["layer3", "embedding"] and report.card["layer"] == "layer3"
    assert report.evaluation.accuracy >= 0.95  # the informative layer carries the noisy one
    predictor = Predictor.open(synthetic.path, "both")
    [first, last] = predictor.predict_ids([0, 89], k=2)
    assert (first.label, last.label) == ("cat", "fox")
    assert first.neighbours[0].id == 0  # neighbours from the first layer
    with pytest.raises(ValueError, match="also needs layers"):
        predictor.predict_vectors(np.zeros((1, WIDTH), np.float32), ["v"])
    with pytest.raises(KeyError, match="not cached in this collection"):
        train_classifier(synthetic, "x", layer=["embedding", "nope"])
