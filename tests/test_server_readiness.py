"""Readiness reflects what a collection can answer: a served collection whose folder is deleted
answers a clear 503 naming it (not a 500), and /readyz says not ready."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_server import make_client, served_dir  # noqa: F401 - the fixture


@pytest.mark.slow
def test_a_served_collection_whose_folder_is_deleted_is_a_clear_503_and_not_ready(
    served_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = shutil.copytree(served_dir, tmp_path / "digits")
    client = make_client(folder)
    client.application.extensions["lookalike"].warm()
    assert client.post("/v1/collections/digits/search", json={"id": 0, "k": 3}).status_code == 200
    assert client.get("/readyz").status_code == 200
    shutil.rmtree(folder)
    time.sleep(2)  # past the readiness cache (1.5 s)
    for answer in (
        client.post("/v1/collections/digits/search", json={"id": 0, "k": 3}),
        client.get("/v1/collections/digits/items/0"),
        client.get("/readyz"),
    ):
        assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
        assert "digits" in answer.get_data(as_text=True) and "gone" in answer.get_data(as_text=True)
    assert client.get("/readyz").json["collections"]["digits"].startswith("not ready")
