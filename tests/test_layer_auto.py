"""`--layer auto`: the classifier's layer(s) chosen by cross-validation among the cached ones,
recorded in its card; the CLI's layer and labelling options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic import WIDTH, make_collection, separable

from lookalike.classify import Predictor, train_classifier
from lookalike.cli import main
from lookalike.store.collection import Collection


@pytest.mark.slow
def test_auto_chooses_the_informative_layer_and_the_card_records_every_candidate(
    synthetic: Collection,
) -> None:
    report = train_classifier(synthetic, "auto")  # the default: layer "auto"
    choice = report.card["layer_choice"]
    assert choice["mode"] == "auto" and report.card["layers"] == ["embedding"] == choice["chosen"]
    scores = {c["key"]: c["accuracy"] for c in choice["candidates"]}
    assert set(scores) == {"embedding", "layer3", "embedding+layer3"}
    assert scores["embedding"] >= 0.95 and scores["layer3"] < 0.6  # noise: near chance
    assert choice["candidates"][0]["key"] == "embedding"  # best first
    assert report.evaluation.accuracy == scores["embedding"]
    assert "selection score" in report.card["metrics"]["method"]
    assert "<- chosen" in report.summary() and "embedding+layer3" in report.summary()
    honest = train_classifier(synthetic, "nested", nested=True)
    assert honest.evaluation.method.startswith("nested stratified 5-fold CV")
    assert honest.evaluation.accuracy >= 0.95
    held = train_classifier(synthetic, "held", holdout=0.3)
    assert "layer chosen by CV on the rest" in held.evaluation.method
    assert held.card["layer_choice"]["scored_by"].endswith("over 63 items")  # the fit part only
    with pytest.raises(ValueError, match="give it alone"):
        train_classifier(synthetic, "x", layer=["auto", "embedding"])
    with pytest.raises(ValueError, match="nested CV scores the choice"):
        train_classifier(synthetic, "x", layer="embedding", nested=True)


def test_auto_can_choose_the_layers_side_by_side_and_predict_with_them(tmp_path: Path) -> None:
    _, labels = separable(30)  # 30 cats, 30 dogs, 30 foxes
    rng = np.random.default_rng(5)
    half, other = rng.standard_normal((2, 90, WIDTH)).astype(np.float32)
    half[:30, 0] += 8  # the embedding tells cats from the rest, not dogs from foxes
    other[:, 0] += np.repeat([8, -8, 8, -8], [15, 15, 30, 30])  # layer3: dogs from foxes only
    collection = make_collection(tmp_path / "c", labels, half, layer3=other)
    report = train_classifier(collection, "both")
    assert report.card["layers"] == ["embedding", "layer3"]  # neither alone separates all three
    assert report.card["layer"] == "embedding"  # neighbours: the searched layer
    scores = {c["key"]: c["accuracy"] for c in report.card["layer_choice"]["candidates"]}
    assert scores["embedding+layer3"] >= 0.85 and max(scores["embedding"], scores["layer3"]) < 0.8
    predictor = Predictor.open(collection.path, "both")
    [first, last] = predictor.predict_ids([0, 89], k=2)
    assert (first.label, last.label) == ("cat", "fox") and first.neighbours[0].id == 0
    by_layer = {"embedding": half[[45]], "layer3": other[[45]]}
    assert predictor.predict_vectors(by_layer, ["v"], k=1)[0].label == "dog"
    with pytest.raises(ValueError, match=r"also needs layers \['layer3'\]"):
        predictor.predict_vectors({"embedding": half[[45]]}, ["v"])
    predictor.close()


@pytest.mark.slow
def test_cli_layer_and_labelling_options(
    digit_collection: Path, digit_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["train", "-c", str(digit_collection), "--folds", "2"]
    for layers, message in (
        (["--layer", "layer3"], "Error: layer 'layer3' is not cached in this collection; did you mean layer3/gem"),
        (["--layer", "auto", "--layer", "embedding"], "Error: layer 'auto' chooses among the cached layers"),
    ):  # fmt: skip
        result = runner.invoke(main, [*base, "--name", "x", *layers])
        assert result.exit_code == 1 and result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1
    embed = ["embed", str(digit_dir), "-c", str(tmp_path / "c"), "--layer", "a/median"]
    result = runner.invoke(main, embed)
    assert result.exit_code == 1 and "bad layer 'a/median'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "labels.csv").write_text(
        "id,label\n" + "".join(f"{n},{'ab'[n % 2]}\n" for n in range(12))
    )
    for labels in (["--labels-from-folders"], ["--labels", "folders"], []):
        result = runner.invoke(main, [*base, "--name", "f", "--overwrite", "--json", *labels])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["classes"] == ["0", "1", "7"]
    result = runner.invoke(main, [*base, "--name", "l", "--labels", str(tmp_path / "labels.csv")])
    assert result.exit_code == 0 and "trained on 12 items, 2 classes" in result.output
    both = ["--labels-from-folders", "--labels", str(tmp_path / "labels.csv")]
    result = runner.invoke(main, [*base, "--name", "z", *both])
    assert result.exit_code == 2 and "not both" in result.output
    probe = ["probe", "-c", str(digit_collection), "--layer", "layer4", "--pooling", "avg",
             "--folds", "2", "-q", "--json"]  # fmt: skip
    result = runner.invoke(main, [*probe, "--labels", str(tmp_path / "labels.csv")])
    assert result.exit_code == 0 and json.loads(result.output)["classes"] == ["a", "b"]
    result = runner.invoke(main, [*probe, "--labels-from-folders", "--layer", "layer3/max"])
    assert result.exit_code == 0 and json.loads(result.output)["classes"] == ["0", "1", "7"]
    keys = {row["key"] for row in json.loads(result.output)["rows"]}
    assert keys == {"layer4/avg", "layer3/max", "embedding"}  # a layer's own pooling: only that
