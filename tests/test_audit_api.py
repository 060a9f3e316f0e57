"""The audit over HTTP: a job runs it on a real server, `GET .../audit` answers it; bad input 4xx."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY, photo, running_server

from lookalike.jobs.bulk import embed_images
from lookalike.server.app import create_app
from lookalike.server.settings import Settings

AUDIT = "/v1/collections/digits/audit"


@pytest.fixture(scope="module")
def split_digits(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits labelled by folder under train/ and test/, one train image copied into test, a
    photo among the train 1s."""
    root = tmp_path_factory.mktemp("split-digits")
    for label_dir in sorted(digit_dir.iterdir()):
        files = sorted(label_dir.iterdir())
        for split, part in (("train", files[:8]), ("test", files[8:])):
            (root / split / label_dir.name).mkdir(parents=True)
            for file in part:
                shutil.copy(file, root / split / label_dir.name / file.name)
    shutil.copy(sorted((root / "train/0").iterdir())[0], root / "test/0/leaked.png")
    photo("coffee").resize((96, 96)).save(root / "train/1/coffee.png")
    collection = root / "collection"
    embed_images(
        [root / "train", root / "test"], collection, TINY, labels_from_folders=True,
        progress=False, num_workers=0,
    )  # fmt: skip
    return collection


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/problem+json"
        return error.code, json.load(error)


@pytest.mark.slow
def test_an_audit_job_on_a_real_server_then_get(split_digits: Path) -> None:
    with running_server({"digits": split_digits}) as (base, output):
        status, missing = call(base + AUDIT)
        assert status == 404 and "no audit yet" in missing["detail"]
        status, job = call(base + AUDIT, {"k": 5})
        assert status == 202 and job["kind"] == "audit"
        deadline = time.monotonic() + 120
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = call(f"{base}/v1/jobs/{job['id']}")[1]
        assert job["state"] == "succeeded", job
        assert job["result"]["leaks"]["pairs"] >= 1
        status, found = call(base + AUDIT + "?top=3")
    assert "Traceback" not in output[0]
    assert status == 200 and not found["stale"] and found["items"] == 38
    assert len(found["label_errors"]["top"]) == 3 and found["label_errors"]["audited"] == 38
    assert found["outliers"]["top"][0]["path"].endswith("train/1/coffee.png")
    leak = found["leaks"]["top"][0]
    assert {leak["split"], leak["other_split"]} == {"train", "test"}
    assert "leaked.png" in leak["path"] + leak["other_path"]
    assert found["leaks"]["threshold_from"] == "calibration" and found["skipped"] == {}


@pytest.fixture(scope="module")
def client(split_digits: Path):
    app = create_app(Settings(collections={"digits": split_digits}))
    app.testing = True
    return app.test_client()


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "detail"),
    [
        ("post", AUDIT, {"k": 0}, 422, None),
        ("post", AUDIT, {"parts": []}, 422, None),
        ("post", AUDIT, {"parts": ["everything"]}, 422, None),
        ("post", AUDIT, {"labels": {"seven": "7"}}, 422, "map item ids"),
        ("post", AUDIT, {"splits": 5}, 422, None),
        ("post", AUDIT, {"threshold": -1}, 422, None),
        ("post", AUDIT, {"model": "forest"}, 422, None),
        ("post", "/v1/collections/nope/audit", {}, 404, None),
        ("get", AUDIT + "?top=1000", None, 422, None),
        ("get", AUDIT + "?top=x", None, 422, None),
        ("get", "/v1/collections/nope/audit", None, 404, None),
    ],
)
def test_bad_audit_requests_are_4xx_problems(client, method, url, body, status, detail) -> None:
    answer = getattr(client, method)(url, json=body) if body is not None else client.get(url)
    assert answer.status_code == status, answer.json
    assert answer.mimetype == "application/problem+json"
    if detail:
        assert detail in answer.json["detail"]


def test_the_routes_are_in_the_openapi_document(client) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert {"get", "post"} <= set(paths["/v1/collections/{name}/audit"])
