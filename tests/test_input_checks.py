"""Inputs refused at the door: numeric options out of range (CLI and library alike), and JSON
routes sent a body of another media type (415, not a 422 about missing fields)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_of

from lookalike.checks import FINETUNE, Range, check_range
from lookalike.classify import Predictor, probe, train_classifier
from lookalike.cli.classify import predict as predict_command
from lookalike.cli.classify import probe as probe_command
from lookalike.cli.classify import train as train_command
from lookalike.cli.distill import distill as distill_command
from lookalike.cli.finetune import advise as advise_command
from lookalike.cli.finetune import finetune as finetune_command
from lookalike.errors import InvalidArgument
from lookalike.server.app import create_app
from lookalike.server.settings import Settings
from lookalike.training.advise import advise
from lookalike.training.distill import DistillConfig, split_images
from lookalike.training.finetune import FinetuneConfig
from lookalike.training.images import LabelledImages, stratified_split

# ----- the helper -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("lr", -1.0, 0, None, True), "lr must be > 0, got -1.0"),
        (("epochs", 0, 1), "epochs must be >= 1, got 0"),
        (("share", 1.0, 0, 1, True, True), "share must be in (0, 1), got 1.0"),
        (("smoothing", 1.0, 0, 1, False, True), "smoothing must be in [0, 1), got 1.0"),
        (("lr", math.nan, 0, None, True), "lr must be > 0, got nan"),
        (("decay", math.inf), "decay must be a finite number, got inf"),
        (("workers", -1, 0), "workers must be >= 0, got -1"),
    ],
)
def test_check_range_names_the_parameter_and_the_range(arguments, message) -> None:
    name, value, *bounds = arguments
    keys = ("low", "high", "low_open", "high_open")
    with pytest.raises(InvalidArgument) as raised:
        check_range(name, value, **dict(zip(keys, bounds, strict=False)))
    assert str(raised.value) == message


def test_check_range_takes_numbers_in_range_only() -> None:
    check_range("lr", 1e-6, 0, low_open=True)
    check_range("fraction", 0.5, 0, 1, low_open=True, high_open=True)
    check_range("epochs", np.int64(3), 1, integer=True)  # NumPy integers are integers
    for value, wanted in ((2.5, "an integer"), (True, "an integer"), ("3", "an integer")):
        with pytest.raises(InvalidArgument, match=f"epochs must be {wanted}, got"):
            check_range("epochs", value, 1, integer=True)
    with pytest.raises(InvalidArgument, match=r"lr must be a number, got '0\.1'"):
        check_range("lr", "0.1", 0, low_open=True)
    assert Range(2, integer=True).describe() == ">= 2"


# ----- the library: each entry point names its parameter --------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, "lr must be > 0, got -1.0"),
        ({"lr": math.nan}, "lr must be > 0, got nan"),
        ({"backbone_lr": 0.0}, "backbone_lr must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 1\)"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"workers": -1}, "workers must be >= 0"),
        ({"seed": -1}, "seed must be in"),
        ({"image_size": 0}, "image_size must be >= 1"),
        ({"unfreeze": -1}, "unfreeze must be >= 0"),
    ],
)
def test_finetune_config_refuses_out_of_range_values(changes, message) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        FinetuneConfig(**changes)
    assert "--" not in str(raised.value)  # the parameter, not a CLI flag


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"kl_weight": -0.5}, "kl_weight must be >= 0"),
        ({"holdout": 1.0}, r"holdout must be in \(0, 1\)"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"k": 0}, "k must be >= 1"),
        ({"student_image_size": 0}, "student_image_size must be >= 1"),
        ({"speed_batch_size": 0}, "speed_batch_size must be >= 1"),
    ],
)
def test_distill_config_refuses_out_of_range_values(changes, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        DistillConfig(**changes)


def test_classifier_functions_check_before_reading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "no-collection"  # opening it would be a CollectionError
    with pytest.raises(InvalidArgument, match="folds must be >= 2, got 1"):
        train_classifier(missing, "x", folds=1)
    with pytest.raises(InvalidArgument, match=r"holdout must be in \(0, 1\), got 1.5"):
        train_classifier(missing, "x", holdout=1.5)
    with pytest.raises(InvalidArgument, match="sample must be >= 1, got 0"):
        probe([], sample=0)
    nothing = LabelledImages((), np.zeros(0, np.int64), ())
    with pytest.raises(InvalidArgument, match="sample must be >= 1, got 0"):
        advise(nothing, sample=0)
    with pytest.raises(InvalidArgument, match=r"fraction must be in \(0, 1\)"):
        stratified_split(np.array([0, 0, 1, 1]), 1.0)
    with pytest.raises(InvalidArgument, match=r"holdout must be in \(0, 1\)"):
        split_images(tmp_path, None, 0.0, 0)
    assert not missing.exists()


# ----- the CLI: exit 2 naming the option, before anything is built or written ------------------

COMMANDS = {
    "finetune": finetune_command,
    "advise": advise_command,
    "distill": distill_command,
    "train": train_command,
    "predict": predict_command,
    "probe": probe_command,
}


def run(command: str, *arguments: str):
    """`lookalike COMMAND ARGUMENTS` through click's CliRunner."""
    return CliRunner().invoke(COMMANDS[command], list(arguments))


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built for a command that should have been refused")

    monkeypatch.setattr("lookalike.training.classifier.create_model", refuse)
    monkeypatch.setattr("lookalike.training.distill.create_model", refuse)


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("finetune", "--lr", "-1"),
        ("finetune", "--lr", "nan"),
        ("finetune", "--epochs", "0"),
        ("finetune", "--batch-size", "0"),
        ("finetune", "--label-smoothing", "1"),
        ("finetune", "--val-fraction", "1.5"),
        ("finetune", "--weight-decay", "-0.01"),
        ("finetune", "--warmup", "-0.1"),
        ("finetune", "--workers", "-1"),
        ("finetune", "--patience", "0"),
        ("finetune", "--backbone-lr", "0"),
        ("distill", "--temperature", "0"),
        ("distill", "--holdout", "0"),
        ("distill", "--lr", "-0.001"),
        ("distill", "--epochs", "0"),
        ("distill", "--kl-weight", "-1"),
        ("distill", "--student-size", "-1"),
    ],
)
def test_training_commands_refuse_out_of_range_options(
    no_models, tmp_path: Path, command: str, option: str, value: str
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    result = run(command, "--data", str(data), "--out", str(out), option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        (["train", "--name", "x", "--folds", "1"], "--folds"),
        (["train", "--name", "x", "--holdout", "1"], "--holdout"),
        (["train", "--name", "x", "--seed", "-1"], "--seed"),
        (["predict", "image.png", "--name", "x", "-k", "-1"], "--k"),
        (["predict", "--name", "x", "--id", "-3"], "--id"),
        (["probe", "--sample", "0"], "--sample"),
        (["probe", "--folds", "1"], "--folds"),
    ],
)
def test_classifier_commands_refuse_out_of_range_options(
    tmp_path: Path, arguments: list[str], option: str
) -> None:
    collection = tmp_path / "collection"
    result = run(*arguments, "-c", str(collection))
    assert result.exit_code == 2, result.output
    assert option in result.output, result.output
    assert not collection.exists()


def test_advise_refuses_a_zero_sample(no_models, tmp_path: Path) -> None:
    result = run("advise", "--data", str(tmp_path), "--sample", "0")
    assert result.exit_code == 2 and "'--sample'" in result.output, result.output


def test_cli_defaults_lie_in_their_ranges() -> None:
    defaults = FinetuneConfig()
    for name, bound in FINETUNE.items():
        value = getattr(defaults, name)
        assert value is None or bound.contains(value), name


# ----- the server: 415 for JSON routes sent another media type ---------------------------------


@pytest.fixture(scope="module")
def served_dir(served_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits embedded with a tiny real model, indexed, with a trained classifier: this module's
    own copy."""
    return copy_of(served_digits, tmp_path_factory.mktemp("checked") / "digits")


@pytest.fixture(scope="module")
def client(served_dir: Path):
    app = create_app(Settings(collections={"digits": served_dir}))
    app.testing = True
    return app.test_client()


HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def operations(client, media_type: str) -> list[str]:
    """'POST /v1/...' of every documented operation whose body is `media_type` (names filled)."""
    spec = client.get("/openapi.json").json
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and media_type in operation.get("requestBody", {}).get(
                "content", {}
            ):
                url = path.replace("{name}", "digits").replace("{classifier}", "digits")
                found.append(f"{method.upper()} {url}")
    return found


def test_the_json_routes_are_known(client) -> None:
    assert set(operations(client, "application/json")) == {
        "POST /v1/collections/digits/search",
        "POST /v1/collections/digits/duplicates",
        "POST /v1/collections/digits/classifiers",
        "POST /v1/collections/digits/classifiers/digits/predict/items",
        "POST /v1/collections/digits/audit",
        "POST /v1/jobs/embed",
    }


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"id": 0}', "text/plain"),
        ("id=0&k=3", "application/x-www-form-urlencoded"),
        ('{"id": 0}', None),  # a body, and no Content-Type at all
    ],
)
def test_json_routes_answer_415_to_other_media_types(client, body, content_type) -> None:
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    for operation in operations(client, "application/json"):
        method, url = operation.split(" ")
        answer = client.open(url, method=method, data=body, headers=headers)
        assert answer.status_code == 415, (operation, answer.json)
        assert answer.mimetype == "application/problem+json"
        assert answer.json["status"] == 415 and "application/json" in answer.json["detail"]


def test_json_routes_take_json_and_json_suffix_types(client) -> None:
    search = "/v1/collections/digits/search"
    answer = client.post(search, json={"id": 0, "k": 3})
    assert answer.status_code == 200 and len(answer.json["results"][0]["hits"]) == 3
    suffixed = client.post(
        search, data='{"id": 0, "k": 2}', content_type="application/merge-patch+json"
    )
    assert suffixed.status_code == 200 and len(suffixed.json["results"][0]["hits"]) == 2
    bad = client.post(search, data='{"k": 2}', content_type="application/vnd.lookalike+json")
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    predicted = client.post(
        "/v1/collections/digits/classifiers/digits/predict/items",
        data='{"ids": [0], "k": 1}',
        content_type="application/json; charset=utf-8",
    )
    assert predicted.status_code == 200 and len(predicted.json["predictions"]) == 1
    for operation in operations(client, "application/json"):  # an empty body: fields missing
        method, url = operation.split(" ")
        if url.endswith(("/duplicates", "/audit")):  # every field has a default: {} runs it
            continue
        assert client.open(url, method=method, json={}).status_code == 422, operation


def test_multipart_routes_keep_their_answers(client, digit_dir: Path) -> None:
    image = sorted((digit_dir / "7").glob("*.png"))[0].read_bytes()
    form = {"image": [(io.BytesIO(image), "q.png")], "k": "2"}
    found = client.post(
        "/v1/collections/digits/search/images", data=form, content_type="multipart/form-data"
    )
    assert found.status_code == 200 and len(found.json["results"][0]["hits"]) == 2
    for operation in operations(client, "multipart/form-data"):
        method, url = operation.split(" ")
        answer = client.open(url, method=method, data="hello", content_type="text/plain")
        assert answer.status_code == 422, (operation, answer.json)  # no image: as before


def test_415_is_documented_for_json_bodies_only(client) -> None:
    spec = client.get("/openapi.json").json
    for item in spec["paths"].values():
        for operation in (item[method] for method in HTTP_METHODS if method in item):
            content = operation.get("requestBody", {}).get("content", {})
            assert ("415" in operation["responses"]) == ("application/json" in content)
    described = spec["components"]["responses"]["UNSUPPORTED_MEDIA_TYPE"]
    assert "application/problem+json" in described["content"]


def test_the_key_check_comes_before_the_media_type() -> None:
    app = create_app(Settings(collections={}, write_keys=frozenset({"secret"})))
    answer = app.test_client().post("/v1/jobs/embed", data="x", content_type="text/plain")
    assert answer.status_code == 401


def test_predictor_checks_k(served_dir: Path) -> None:
    predictor = Predictor.open(served_dir, "digits")
    try:
        with pytest.raises(InvalidArgument, match="k must be >= 0, got -1"):
            predictor.predict_ids([0], k=-1)
        assert len(predictor.predict_ids([0], k=0)[0].neighbours) == 0
    finally:
        predictor.close()
