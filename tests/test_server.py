"""The HTTP API: routes over a real embedded collection, one error shape, API keys, a real server."""

from __future__ import annotations

import io
import json
import os
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, copy_of, jpeg_bytes, photo, running_server

from lookalike.classify import train_classifier
from lookalike.server.app import create_app
from lookalike.server.serve import serve
from lookalike.server.settings import Settings
from lookalike.store.collection import Collection

READ, WRITE = "read-key-1", "write-key-1"


@pytest.fixture(scope="module")
def served_dir(served_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits embedded with a tiny real model, indexed, with a trained classifier: this module's
    own copy."""
    return copy_of(served_digits, tmp_path_factory.mktemp("served") / "digits")


def make_client(served_dir: Path, **changes):
    settings = Settings(collections={"digits": served_dir}, **changes)
    app = create_app(settings)
    app.testing = True
    return app.test_client()


@pytest.fixture(scope="module")
def client(served_dir: Path):
    return make_client(served_dir)


def digit_png(digit_dir: Path, label: str = "7") -> bytes:
    return sorted((digit_dir / label).glob("*.png"))[0].read_bytes()


def upload(*images: bytes, **fields) -> dict:
    data = {name: str(value) for name, value in fields.items()}
    data["image"] = [(io.BytesIO(image), f"q{n}.png") for n, image in enumerate(images)]
    return {"data": data, "content_type": "multipart/form-data"}


# ----- routes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_by_id_vector_and_image_agree(client, digit_dir: Path) -> None:
    image = digit_png(digit_dir)
    by_image = client.post("/v1/collections/digits/search/images", **upload(image, k=3))
    assert by_image.status_code == 200, by_image.json
    hits = by_image.json["results"][0]["hits"]
    assert hits[0]["distance"] < 1e-5 and hits[0]["label"] == "7"  # the same file is stored
    embedded = client.post("/v1/collections/digits/embed", **upload(image)).json
    vector = embedded["embeddings"][0]["vector"]
    by_vector = client.post(
        "/v1/collections/digits/search",
        json={"vector": vector, "k": 3, "spec_fingerprint": embedded["spec_fingerprint"]},
    ).json["results"][0]["hits"]
    assert [h["id"] for h in by_vector] == [h["id"] for h in hits]
    by_id = client.post("/v1/collections/digits/search", json={"id": hits[0]["id"], "k": 3})
    assert [h["id"] for h in by_id.json["results"][0]["hits"]] == [h["id"] for h in hits]
    only_zeros = client.post(
        "/v1/collections/digits/search", json={"id": 0, "k": 5, "labels": ["0"]}
    )
    assert {h["label"] for h in only_zeros.json["results"][0]["hits"]} == {"0"}


def test_collections_items_thumbnails_and_predict(client, digit_dir: Path) -> None:
    listing = client.get("/v1/collections").json["collections"]
    assert listing[0]["name"] == "digits" and listing[0]["items"] == 36
    item = client.get("/v1/collections/digits/items/4").json
    assert item["id"] == 4 and item["label"] in {"0", "1", "7"}
    thumbnail = client.get("/v1/collections/digits/items/4/thumbnail")
    assert thumbnail.mimetype == "image/jpeg" and thumbnail.data[:2] == b"\xff\xd8"
    answer = client.post(
        "/v1/collections/digits/classifiers/digits/predict",
        **upload(digit_png(digit_dir, "1"), k=2),
    ).json
    [prediction] = answer["predictions"]
    assert set(prediction["probabilities"]) == {"0", "1", "7"}
    assert len(prediction["neighbours"]) == 2 and "embedding" not in prediction
    cards = client.get("/v1/collections/digits/classifiers").json["classifiers"]
    assert cards[0]["name"] == "digits" and cards[0]["n_train"] == 36


def test_openapi_documents_every_route(client) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.0")  # what the bundled Swagger UI renders
    for path in (
        "/v1/collections/{name}/search",
        "/v1/collections/{name}/search/images",
        "/v1/collections/{name}/embed",
        "/v1/collections/{name}/classifiers/{classifier}/predict",
        "/healthz",
    ):
        assert path in spec["paths"]
    body = spec["paths"]["/v1/collections/{name}/search"]["post"]["requestBody"]
    assert "application/json" in body["content"]
    upload = spec["paths"]["/v1/collections/{name}/items"]["post"]["requestBody"]["content"]
    fields = spec["components"]["schemas"]["ItemsUpload"]["properties"]
    assert "multipart/form-data" in upload and {"image", "label"} <= set(fields)
    embed = spec["components"]["schemas"]["EmbedUpload"]["properties"]["collection"]
    assert "required when the server serves several" in embed["description"]
    problem = spec["components"]["responses"]["DEFAULT_ERROR"]["content"]
    assert "application/problem+json" in problem


def test_docs_page_and_its_assets_are_served_locally(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and b"/docs/assets/swagger-ui-bundle.js" in page.data
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000
    assert client.get("/docs/assets/../../app.py").status_code == 404


def test_embed_without_naming_the_collection_when_one_is_served(client, digit_dir: Path) -> None:
    image = digit_png(digit_dir)
    named = client.post("/v1/collections/digits/embed", **upload(image)).json
    unnamed = client.post("/v1/embed", **upload(image)).json
    assert unnamed["collection"] == "digits"
    assert unnamed["spec_fingerprint"] == named["spec_fingerprint"]
    assert np.allclose(unnamed["embeddings"][0]["vector"], named["embeddings"][0]["vector"])
    unknown = client.post("/v1/embed", **upload(image, collection="nope"))
    assert unknown.status_code == 404 and unknown.mimetype == "application/problem+json"


def test_embed_must_name_one_of_several_collections(served_dir: Path, digit_dir: Path) -> None:
    settings = Settings(collections={"a": served_dir, "b": served_dir})
    several = create_app(settings).test_client()
    answer = several.post("/v1/embed", **upload(digit_png(digit_dir)))
    assert answer.status_code == 422
    assert answer.json["detail"] == (
        "several collections are served (a, b): give the `collection` form field"
    )
    named = several.post("/v1/embed", **upload(digit_png(digit_dir), collection="b"))
    assert named.status_code == 200 and named.json["collection"] == "b"


def test_predict_stored_items_by_id(client) -> None:
    answer = client.post(
        "/v1/collections/digits/classifiers/digits/predict/items", json={"ids": [0, 5], "k": 2}
    )
    assert answer.status_code == 200, answer.json
    first, second = answer.json["predictions"]
    assert first["source"] == "id 0" and first["neighbours"][0]["id"] == 0
    assert second["neighbours"][0]["id"] == 5
    assert first["label"] in first["probabilities"]
    unknown = client.post(
        "/v1/collections/digits/classifiers/digits/predict/items", json={"ids": [424242]}
    )
    assert unknown.status_code == 404 and "424242" in unknown.json["detail"]


# ----- one error shape ------------------------------------------------------------------------

NOT_AN_IMAGE = b"this is not an image"
ERRORS = [
    ("get", "/v1/collections/nope", {}, 404, "no collection named 'nope'"),
    ("get", "/v1/collections/digits/items/999", {}, 404, "no item with id 999"),
    ("get", "/v1/collections/digits/items/abc", {}, 404, None),
    ("get", "/v1/collections/digits/items/99999999999999999999999", {}, 404, None),
    (
        "post",
        "/v1/collections/digits/search",
        {"data": '{"id": 1000000000000000000000000000000}', "content_type": "application/json"},
        422,
        None,
    ),
    ("get", "/no/such/route", {}, 404, None),
    ("put", "/v1/collections/digits/search", {}, 405, None),
    ("post", "/v1/collections/digits/search", {"json": {"k": 3}}, 422, None),
    ("post", "/v1/collections/digits/search", {"json": {"id": 1, "k": 0}}, 422, None),
    ("post", "/v1/collections/digits/search", {"json": {"id": 1, "bogus": 1}}, 422, None),
    ("post", "/v1/collections/digits/search", {"json": {"id": 12345}}, 404, "12345"),
    ("post", "/v1/collections/digits/search", {"json": {"vector": [0.5, 0.5]}}, 422, "width"),
    (
        "post",
        "/v1/collections/digits/search",
        {"data": '{"vector": [NaN, 1]}', "content_type": "application/json"},
        400,
        "not valid",  # NaN is not JSON
    ),
    (
        "post",
        "/v1/collections/digits/search",
        {"json": {"vector": [1e39, 1.0]}},  # beyond float32
        422,
        None,
    ),
    (
        "post",
        "/v1/collections/digits/search",
        {"data": "{", "content_type": "application/json"},
        400,
        None,
    ),
    (
        "post",
        "/v1/collections/digits/search",
        {"json": {"id": 1, "threshold": 3.0}},
        422,
        "at most 2",
    ),
    ("post", "/v1/collections/digits/search/images", upload(NOT_AN_IMAGE), 422, "not an image"),
    ("post", "/v1/collections/digits/search/images", {"data": {"k": "3"}}, 422, None),
    ("post", "/v1/collections/digits/search/images", upload(b"x" * 10, k="many"), 422, None),
    (
        "post",
        "/v1/collections/digits/classifiers/nope/predict",
        upload(NOT_AN_IMAGE),
        404,
        "no classifier",
    ),
    ("delete", "/v1/collections/digits/classifiers/nope", {}, 404, "no classifier"),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status", "detail"), ERRORS)
def test_every_error_is_problem_json(client, method, url, kwargs, status, detail) -> None:
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert "Traceback" not in response.get_data(as_text=True)
    if detail:
        assert detail in body["detail"]


def test_limits_give_413_and_bad_pixels_422(served_dir: Path, digit_dir: Path) -> None:
    client = make_client(
        served_dir, max_upload_bytes=50_000, max_images_per_request=2, max_pixels=500
    )
    big = client.post("/v1/collections/digits/search/images", **upload(os.urandom(60_000)))
    assert big.status_code == 413 and big.mimetype == "application/problem+json"
    many = client.post("/v1/collections/digits/embed", **upload(*[digit_png(digit_dir)] * 3))
    assert many.status_code == 413 and "limit is 2" in many.json["detail"]
    large = jpeg_bytes(photo("coffee").resize((40, 30)))  # 1,200 pixels > 500
    pixels = client.post("/v1/collections/digits/embed", **upload(large))
    assert pixels.status_code == 422 and "pixels" in pixels.json["detail"]


def test_unexpected_errors_are_a_500_problem_without_internals(served_dir: Path, caplog) -> None:
    client = make_client(served_dir)
    (served_dir / "classifiers" / "digits" / "card.json").rename(served_dir / "card.bak")
    try:
        (served_dir / "classifiers" / "digits" / "card.json").write_text("{ not json")
        response = client.get("/v1/collections/digits/classifiers")
    finally:
        (served_dir / "card.bak").replace(served_dir / "classifiers" / "digits" / "card.json")
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    assert "JSONDecodeError" not in response.get_data(as_text=True)
    assert "unhandled error" in caplog.text


# ----- API keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "read_status", "write_status"),
    [
        ({}, 401, 401),
        ({"Authorization": "Bearer wrong"}, 401, 401),
        ({"Authorization": f"Bearer {READ}"}, 200, 403),
        ({"X-API-Key": READ}, 200, 403),
        ({"Authorization": f"Bearer {WRITE}"}, 200, 404),  # allowed; the classifier is unknown
        ({"X-API-Key": WRITE}, 200, 404),
    ],
)
def test_auth_matrix(served_dir: Path, headers, read_status, write_status) -> None:
    client = make_client(served_dir, read_keys=frozenset({READ}), write_keys=frozenset({WRITE}))
    assert client.get("/healthz").status_code == 200  # probes need no key
    read = client.post("/v1/collections/digits/search", json={"id": 1}, headers=headers)
    assert read.status_code == read_status
    write = client.delete("/v1/collections/digits/classifiers/nope", headers=headers)
    assert write.status_code == write_status
    if write_status == 403:
        refused = client.post("/v1/collections/digits/items", headers=headers, **upload(b"x"))
        assert refused.status_code == 403
    if read_status == 401:
        assert read.headers["WWW-Authenticate"].startswith("Bearer")
    for response in (read, write):
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"


def test_write_key_deletes_a_classifier(served_dir: Path) -> None:
    train_classifier(served_dir, "spare", folds=2)
    client = make_client(served_dir, read_keys=frozenset({READ}), write_keys=frozenset({WRITE}))
    assert (
        client.delete(
            "/v1/collections/digits/classifiers/spare", headers={"X-API-Key": READ}
        ).status_code
        == 403
    )
    assert (
        client.delete(
            "/v1/collections/digits/classifiers/spare", headers={"X-API-Key": WRITE}
        ).status_code
        == 204
    )
    assert not (served_dir / "classifiers" / "spare").exists()


# ----- settings -------------------------------------------------------------------------------


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "lookalike.toml").write_text(
        'read_keys = ["a"]\nmax_upload_bytes = 1000\n[collections]\nphotos = "/data/photos"\n'
    )
    settings = Settings.from_file(tmp_path / "lookalike.toml").with_env(
        {"LOOKALIKE_WRITE_KEYS": "w1, w2", "LOOKALIKE_COLLECTIONS": "x=/data/x,y=/data/y"}
    )
    assert settings.read_keys == {"a"} and settings.write_keys == {"w1", "w2"}
    assert settings.collections == {"x": Path("/data/x"), "y": Path("/data/y")}
    assert settings.max_upload_bytes == 1000 and not settings.open_access
    with pytest.raises(ValueError, match="unknown settings: colour"):
        Settings.from_mapping({"colour": "red"})
    with pytest.raises(ValueError, match="NAME=DIR"):
        Settings().with_env({"LOOKALIKE_COLLECTIONS": "nodir"})
    with pytest.raises(ValueError, match="without API keys"):
        serve(Settings(collections={"x": tmp_path}), host="0.0.0.0")


# ----- a real server on loopback --------------------------------------------------------------


def call(url: str, body: dict | None = None, key: str | None = READ) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_real_server_serves_concurrent_searches_and_stops_on_sigterm(served_dir: Path) -> None:
    keys = {"LOOKALIKE_READ_KEYS": READ, "LOOKALIKE_WRITE_KEYS": WRITE}
    with running_server({"digits": served_dir}, keys) as (base, output):
        search = f"{base}/v1/collections/digits/search"
        assert call(search, {"id": 1}, key=None)[0] == 401
        expected = call(search, {"id": 1, "k": 5})[1]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: call(search, {"id": 1, "k": 5}), range(64)))
        assert all(status == 200 and body == expected for status, body in answers)
        status, body = call(search, {"id": 10**6})
        assert status == 404 and body["title"] == "Not Found"
    assert output[-1] == "exit status 0", output
    assert "Handling signal: term" in output[0]
    assert len(expected["results"][0]["hits"]) == 5


# ----- uploads and deletes --------------------------------------------------------------------


def noise_png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def writable(served_dir: Path, tmp_path: Path) -> Path:
    """A copy of the served collection that a test may change."""
    import shutil

    return Path(shutil.copytree(served_dir, tmp_path / "digits"))


def test_upload_search_delete_and_restart(writable: Path, digit_dir: Path) -> None:
    client = make_client(writable)
    cat = jpeg_bytes(photo("chelsea").resize((96, 64)))
    answer = client.post("/v1/collections/digits/items", **upload(cat, noise_png(1), label="new"))
    assert answer.status_code == 201, answer.json
    first, second = answer.json["items"]
    assert first["created"] and second["created"] and first["id"] != second["id"]
    assert Path(first["path"]).is_relative_to(writable / "uploads")
    hits = client.post("/v1/collections/digits/search/images", **upload(cat, k=1)).json
    assert hits["results"][0]["hits"][0]["id"] == first["id"]
    assert client.get(f"/v1/collections/digits/items/{first['id']}").json["label"] == "new"
    again = client.post("/v1/collections/digits/items", **upload(cat)).json["items"][0]
    assert again == {**first, "created": False, "name": "q0.png"}
    assert client.delete(f"/v1/collections/digits/items/{second['id']}").status_code == 204
    assert client.get(f"/v1/collections/digits/items/{second['id']}").status_code == 404
    assert client.delete(f"/v1/collections/digits/items/{second['id']}").status_code == 404
    bad = client.post("/v1/collections/digits/items", **upload(noise_png(2), NOT_AN_IMAGE))
    assert bad.status_code == 422 and "q1.png" in bad.json["detail"]
    assert Collection.open(writable).items(["id"]).num_rows == 37  # 36 + cat; noise 2 not written

    restarted = make_client(
        writable
    )  # a new process: the saved index catches up from the collection
    after = restarted.post("/v1/collections/digits/search/images", **upload(cat, k=2)).json
    ids = [hit["id"] for hit in after["results"][0]["hits"]]
    assert ids[0] == first["id"] and second["id"] not in ids
    listing = restarted.get("/v1/collections").json["collections"][0]
    assert listing["items"] == 37


def test_concurrent_uploads_and_searches_lose_nothing(writable: Path) -> None:
    client_app = make_client(writable).application

    def upload_one(seed: int) -> int:
        with client_app.test_client() as client:
            response = client.post("/v1/collections/digits/items", **upload(noise_png(100 + seed)))
            assert response.status_code == 201, response.json
            return response.json["items"][0]["id"]

    def search_one(seed: int) -> int:
        with client_app.test_client() as client:
            response = client.post("/v1/collections/digits/search", json={"id": seed % 36, "k": 5})
            assert response.status_code == 200, response.json
            return len(response.json["results"][0]["hits"])

    with ThreadPoolExecutor(6) as pool:
        uploads = [pool.submit(upload_one, n) for n in range(12)]
        searches = [pool.submit(search_one, n) for n in range(24)]
        acknowledged = [future.result() for future in uploads]
        assert all(future.result() == 5 for future in searches)
    assert len(set(acknowledged)) == 12
    stored = set(Collection.open(writable).items(["id"]).column("id").to_pylist())
    assert set(acknowledged) <= stored and len(stored) == 48
    restarted = make_client(writable)
    for item_id in acknowledged:
        hits = restarted.post("/v1/collections/digits/search", json={"id": item_id, "k": 1}).json
        assert hits["results"][0]["hits"][0]["id"] == item_id


def test_thumbnail_of_a_missing_or_damaged_file_is_a_404(writable: Path) -> None:
    client = make_client(writable)
    first, second = (
        client.post("/v1/collections/digits/items", **upload(noise_png(seed))).json["items"][0]
        for seed in (31, 32)
    )
    ok = client.get(f"/v1/collections/digits/items/{first['id']}/thumbnail")
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg"
    Path(first["path"]).unlink()
    Path(second["path"]).write_bytes(b"no longer a PNG")
    for item, words in ((first, "no longer on disk"), (second, "no longer an image")):
        answer = client.get(f"/v1/collections/digits/items/{item['id']}/thumbnail")
        assert answer.status_code == 404 and words in answer.json["detail"]
        assert answer.mimetype == "application/problem+json"
    assert client.get("/v1/collections/digits/items/4242/thumbnail").status_code == 404


def test_workers_see_each_others_writes(writable: Path) -> None:
    """Two apps on one collection stand for two worker processes: each has its own index."""
    first, second = make_client(writable), make_client(writable)
    assert second.post("/v1/collections/digits/search", json={"id": 0, "k": 1}).status_code == 200
    added = first.post("/v1/collections/digits/items", **upload(noise_png(7))).json["items"][0]
    hits = second.post("/v1/collections/digits/search", json={"id": added["id"], "k": 1}).json
    assert hits["results"][0]["hits"][0]["id"] == added["id"]  # the other worker found it
    assert second.get(f"/v1/collections/digits/items/{added['id']}").status_code == 200
    assert second.delete(f"/v1/collections/digits/items/{added['id']}").status_code == 204
    assert first.get(f"/v1/collections/digits/items/{added['id']}").status_code == 404
    hits = first.post("/v1/collections/digits/search", json={"id": 0, "k": 40}).json
    assert added["id"] not in [h["id"] for h in hits["results"][0]["hits"]]


@pytest.mark.slow
def test_the_same_bytes_from_two_workers_at_once_make_one_item(writable: Path) -> None:
    clients = [make_client(writable) for _ in range(4)]
    image = noise_png(11)

    def post(client) -> int:
        response = client.post("/v1/collections/digits/items", **upload(image))
        assert response.status_code == 201, response.json
        return response.json["items"][0]["id"]

    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(post, clients))
    assert len(ids) == 1
    assert len(Collection.open(writable)) == 37


@pytest.mark.slow
def test_a_two_worker_server_answers_every_acknowledged_upload(writable: Path) -> None:
    with running_server({"digits": writable}, workers=2) as (base, output):
        acknowledged = []
        for seed in range(12):  # new connections: the kernel hands each to either worker
            request = urllib.request.Request(
                f"{base}/v1/collections/digits/items",
                *multipart(noise_png(200 + seed)),
            )
            with urllib.request.urlopen(request) as answer:
                acknowledged.append(json.load(answer)["items"][0]["id"])
            for _ in range(3):
                with urllib.request.urlopen(
                    f"{base}/v1/collections/digits/items/{acknowledged[-1]}"
                ) as answer:
                    assert json.load(answer)["id"] == acknowledged[-1]
    assert output[-1] == "exit status 0", output[0]
    assert len(set(acknowledged)) == 12


def multipart(image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "lookalike-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# ----- metrics and rate limits ----------------------------------------------------------------


def test_metrics_count_requests_and_report_index_sizes(served_dir: Path) -> None:
    client = make_client(served_dir)
    for _ in range(3):
        assert client.post("/v1/collections/digits/search", json={"id": 2}).status_code == 200
    client.post("/v1/collections/digits/search", json={"id": 99999})
    text = client.get("/metrics").get_data(as_text=True)
    search = 'endpoint="/v1/collections/<name>/search",method="POST"'
    assert f'lookalike_requests_total{{{search},status="200"}} 3.0' in text
    assert 'status="404"' in text
    assert 'lookalike_index_items{collection="digits"} 36.0' in text
    assert "lookalike_request_seconds_bucket" in text


def test_rate_limit_answers_429_problem(served_dir: Path) -> None:
    client = make_client(served_dir, rate_limit="3/minute")
    statuses = [
        client.post("/v1/collections/digits/search", json={"id": 2}).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = client.post("/v1/collections/digits/search", json={"id": 2})
    assert limited.mimetype == "application/problem+json" and limited.json["status"] == 429
    assert "Retry-After" in limited.headers
    assert all(client.get("/healthz").status_code == 200 for _ in range(5))  # probes unlimited
    other = make_client(served_dir, rate_limit="3/minute")  # limits belong to one app
    assert other.post("/v1/collections/digits/search", json={"id": 2}).status_code == 200


# ----- jobs -----------------------------------------------------------------------------------


def wait_for(client, location: str, timeout: float = 120) -> dict:
    """The job at `location` once it has finished (waited for in the server, then read over HTTP)."""
    job_id = location.rsplit("/", 1)[-1]
    client.application.extensions["lookalike-jobs"].wait(job_id, timeout)
    job = client.get(location).json
    assert job["state"] in ("succeeded", "failed"), job
    return job


def test_embed_job_on_an_allowed_folder_then_search(writable: Path, tmp_path: Path) -> None:
    root = tmp_path / "incoming"
    for n in range(3):
        (root / "noise").mkdir(parents=True, exist_ok=True)
        (root / "noise" / f"n{n}.png").write_bytes(noise_png(300 + n))
    client = make_client(writable, allowed_roots=(root.resolve(),))
    started = client.post(
        "/v1/jobs/embed",
        json={"collection": "digits", "folder": str(root), "labels_from_folders": True},
    )
    assert started.status_code == 202 and started.headers["Location"].startswith("/v1/jobs/")
    job = wait_for(client, started.headers["Location"])
    assert job["state"] == "succeeded", job
    assert job["result"]["embedded"] == 3 and job["result"]["indexed"] == 3
    assert job["done"] == job["total"] == 3
    hits = client.post(
        "/v1/collections/digits/search", json={"id": 0, "k": 39, "labels": ["noise"]}
    ).json
    assert len(hits["results"][0]["hits"]) == 3
    assert client.get("/v1/jobs").json["jobs"][0]["id"] == job["id"]
    outside = client.post("/v1/jobs/embed", json={"collection": "digits", "folder": str(tmp_path)})
    assert outside.status_code == 403 and "outside the allowed roots" in outside.json["detail"]
    escape = client.post("/v1/jobs/embed", json={"collection": "digits", "folder": f"{root}/../.."})
    assert escape.status_code == 403
    missing = client.post("/v1/jobs/embed", json={"collection": "nope", "folder": str(root)})
    assert missing.status_code == 404
    closed = make_client(writable).post(
        "/v1/jobs/embed", json={"collection": "digits", "folder": str(root)}
    )
    assert closed.status_code == 403 and "no allowed_roots" in closed.json["detail"]
    assert client.get("/v1/jobs/abc").status_code == 404


def test_train_job_with_inline_labels_then_predict(writable: Path, digit_dir: Path) -> None:
    client = make_client(writable)
    items = Collection.open(writable).items(["id", "label"]).to_pylist()
    labels = {str(row["id"]): "seven" if row["label"] == "7" else "other" for row in items}
    started = client.post(
        "/v1/collections/digits/classifiers", json={"name": "sevens", "labels": labels, "folds": 3}
    )
    assert started.status_code == 202
    job = wait_for(client, started.headers["Location"])
    assert job["state"] == "succeeded", job
    assert job["result"]["classes"] == ["other", "seven"] and job["result"]["n_train"] == 36
    assert job["result"]["layer_choice"]["mode"] == "auto"  # the default, as for `train`
    assert len(job["result"]["layer_choice"]["candidates"]) == 4  # 3 cached layers + all 3
    answer = client.post(
        "/v1/collections/digits/classifiers/sevens/predict",
        **upload(digit_png(digit_dir, "7"), k=0),
    ).json
    assert answer["predictions"][0]["label"] == "seven"
    again = client.post("/v1/collections/digits/classifiers", json={"name": "sevens"})
    failed = wait_for(client, again.headers["Location"])
    assert failed["state"] == "failed" and failed["error"]["status"] == 409
    assert (
        "--overwrite" in failed["error"]["detail"] or "already exists" in failed["error"]["detail"]
    )
    bad = client.post(
        "/v1/collections/digits/classifiers", json={"name": "x", "labels": {"1": "a", "2": "a"}}
    )
    assert wait_for(client, bad.headers["Location"])["error"]["status"] == 422
    unknown = client.post("/v1/collections/digits/classifiers", json={"name": "x", "layer": "l9"})
    assert unknown.status_code == 422 and "not cached in this collection" in unknown.json["detail"]
    invalid = client.post("/v1/collections/digits/classifiers", json={"name": "x", "labels": 5})
    assert invalid.status_code == 422 and invalid.mimetype == "application/problem+json"


def test_made_up_keys_share_their_address_bucket_and_metrics_need_a_key(served_dir: Path) -> None:
    client = make_client(
        served_dir,
        rate_limit="3/minute",
        read_keys=frozenset({READ}),
        write_keys=frozenset({WRITE}),
    )
    statuses = [
        client.post(
            "/v1/collections/digits/search", json={"id": 2}, headers={"X-API-Key": f"guess-{n}"}
        ).status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": READ}).status_code == 200


def test_an_empty_collection_is_served_and_filled_by_uploads(tmp_path: Path) -> None:
    from lookalike.embedder import get_backbone

    with get_backbone(**TINY) as backbone:
        Collection.create(tmp_path / "empty", backbone.spec)
    client = make_client(tmp_path / "empty")
    assert client.get("/v1/collections").json["collections"][0]["items"] == 0
    added = client.post("/v1/collections/digits/items", **upload(noise_png(7))).json["items"][0]
    hits = client.post("/v1/collections/digits/search", json={"id": added["id"], "k": 3}).json
    assert [h["id"] for h in hits["results"][0]["hits"]] == [added["id"]]


def test_every_write_route_refuses_a_read_key_and_readyz_waits_for_loading(
    served_dir: Path,
) -> None:
    client = make_client(served_dir, read_keys=frozenset({READ}), write_keys=frozenset({WRITE}))
    app = client.application
    writes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "lookalike_scope", None) == "write":
            writes += [(method, rule.rule) for method in rule.methods - {"HEAD", "OPTIONS"}]
    assert len(writes) >= 5  # items POST/DELETE, classifiers POST/DELETE, embed jobs
    for method, rule in writes:
        url = re.sub(r"<int[^>]*:item_id>", "1", rule.replace("<name>", "digits"))
        url = url.replace("<classifier>", "x")
        response = client.open(url, method=method, headers={"X-API-Key": READ}, json={})
        assert response.status_code == 403, (method, url, response.json)
    assert client.get("/readyz").status_code == 503  # nothing loaded yet in this app
    assert client.get("/readyz").mimetype == "application/problem+json"
    app.extensions["lookalike"].warm()
    assert client.get("/readyz").json["collections"] == {"digits": "ready"}
