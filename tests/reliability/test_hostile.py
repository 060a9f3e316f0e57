"""The hostile pass's findings against a real `lookalike serve --workers 2`: jobs any worker
answers for, that survive a restart, cancel and resume; a FIFO and a file link in an allowed folder;
thumbnails of files swapped on disk; a full disk on upload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import small_tmpfs

from lookalike.store.collection import Collection

from .harness import Client, Server, noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

GOOD_IMAGES = 300


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An allowed root holding noise PNGs, a FIFO named like a JPEG and a link to a file outside."""
    root = tmp_path / "allowed" / "images"
    root.mkdir(parents=True)
    for seed in range(GOOD_IMAGES):
        (root / f"{seed:04d}.png").write_bytes(noise_png(seed, size=32))
    os.mkfifo(root / "pipe.jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "camera.png").write_bytes(noise_png(10_000))
    (root / "cam.png").symlink_to(outside / "camera.png")
    return root


def serve(collection: Path, root: Path, workers: int = 2) -> Server:
    env = {"LOOKALIKE_ALLOWED_ROOTS": str(root.parent)}
    return Server({"c": collection}, env=env, workers=workers, threads=4).start()


def poll(client: Client, job_id: str, until, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.request("GET", f"/v1/jobs/{job_id}")
        assert answer.status == 200, answer.body
        job = answer.json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get there: {job}")


def submit(client: Client, root: Path, **options) -> str:
    answer = client.json(
        "POST", "/v1/jobs/embed", {"collection": "c", "folder": str(root), **options}
    )
    assert answer.status == 202, answer.body
    return answer.json()["id"]


def item_paths(collection: Path) -> list[str]:
    return Collection.open(collection).items(["path"]).column("path").to_pylist()


def test_jobs_are_shared_durable_cancellable_and_resumable(
    empty_collection: Path, folder: Path
) -> None:
    """Job status answered 404 half the time with two workers and a restart forgot every job;
    a FIFO held the write slot forever; a file link embedded a file outside the allowed roots."""
    server = serve(empty_collection, folder)
    try:
        server.wait_ready()
        client = Client(server.base)
        job_id = submit(client, folder)
        answers = [Client(server.base).request("GET", f"/v1/jobs/{job_id}") for _ in range(20)]
        assert [a.status for a in answers] == [200] * 20  # new connections: both workers answer
        poll(client, job_id, lambda job: job["state"] == "running" and job["done"] > 0)
        cancelled = client.request("DELETE", f"/v1/jobs/{job_id}")
        assert cancelled.status == 202 and cancelled.json()["cancel_requested"] is True
        job = poll(client, job_id, lambda job: job["state"] == "cancelled")
        assert job["done"] < job["total"]
        again = client.request("DELETE", f"/v1/jobs/{job_id}")
        assert again.status == 409 and again.content_type == "application/problem+json"

        resumed = client.request("POST", f"/v1/jobs/{job_id}/resume")
        assert resumed.status == 202 and resumed.json()["id"] == job_id
        poll(client, job_id, lambda job: job["state"] == "running")
        server.kill()  # a crash (or a restart) in the middle of the job

        server = serve(empty_collection, folder)
        server.wait_ready()
        client = Client(server.base)
        assert client.request("GET", f"/v1/jobs/{job_id}").json()["state"] == "interrupted"
        assert [j["id"] for j in client.request("GET", "/v1/jobs").json()["jobs"]] == [job_id]
        assert client.request("POST", f"/v1/jobs/{job_id}/resume").status == 202
        job = poll(client, job_id, lambda job: job["state"] not in ("queued", "running"))
        assert job["state"] == "succeeded", job
        assert job["result"]["failed"] == 2  # the FIFO and the link out, each with its reason
    finally:
        server.kill()
    paths = item_paths(empty_collection)
    assert len(paths) == len(set(paths)) == GOOD_IMAGES  # nothing twice, nothing missing
    failed = {
        Path(f["path"]).name: f["reason"] for f in Collection.open(empty_collection).failures()
    }
    assert "not a regular file (a FIFO)" in failed["pipe.jpg"]
    assert "outside the allowed folders" in failed["cam.png"]


def test_uploads_and_deletes_go_on_while_a_job_runs(empty_collection: Path, folder: Path) -> None:
    """A job held the collection's write slot for its whole run: every upload answered 409."""
    server = serve(empty_collection, folder, workers=1)
    try:
        server.wait_ready()
        client = Client(server.base)
        job_id = submit(client, folder)
        poll(client, job_id, lambda job: job["state"] == "running" and job["done"] > 0)
        uploaded = client.upload("/v1/collections/c/items", [("u.png", noise_png(99_999))])
        assert uploaded.status == 201 and uploaded.seconds < 10, uploaded.body
        item = uploaded.json()["items"][0]["id"]
        assert client.request("DELETE", f"/v1/collections/c/items/{item}").status == 204
        during = client.request("GET", f"/v1/jobs/{job_id}").json()
        assert during["state"] == "running", "the job ended before the upload: not a test of it"
        poll(client, job_id, lambda job: job["state"] == "succeeded")
    finally:
        server.kill()


def test_thumbnails_read_only_regular_files_where_they_were(
    empty_collection: Path, folder: Path, tmp_path: Path
) -> None:
    """A thumbnail of a FIFO hung; a link swapped in for an item's file served the outside image."""
    server = serve(empty_collection, folder, workers=1)
    try:
        server.wait_ready()
        client = Client(server.base)
        poll(client, submit(client, folder), lambda job: job["state"] == "succeeded")
        ids = {
            Path(path).name: number
            for number, path in zip(
                Collection.open(empty_collection).items(["id"]).column("id").to_pylist(),
                item_paths(empty_collection),
                strict=True,
            )
        }
        assert (
            client.request("GET", f"/v1/collections/c/items/{ids['0000.png']}/thumbnail").status
            == 200
        )
        (folder / "0001.png").unlink()
        os.mkfifo(folder / "0001.png")
        fifo = client.request("GET", f"/v1/collections/c/items/{ids['0001.png']}/thumbnail")
        assert fifo.status == 404 and "not a regular file" in fifo.json()["detail"]
        (folder / "0002.png").unlink()
        (folder / "0002.png").symlink_to(tmp_path / "elsewhere" / "camera.png")
        linked = client.request("GET", f"/v1/collections/c/items/{ids['0002.png']}/thumbnail")
        assert linked.status == 403 and linked.content_type == "application/problem+json"
        (folder / "0003.png").unlink()
        (folder / "0003.png").symlink_to(folder / "0000.png")  # a link inside the root is fine
        inside = client.request("GET", f"/v1/collections/c/items/{ids['0003.png']}/thumbnail")
        assert inside.status == 200 and inside.content_type == "image/jpeg"
    finally:
        server.kill()


def test_a_full_disk_answers_507_and_the_next_upload_after_freeing_works(
    tmp_path: Path, tiny_spec
) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        collection = Collection.create(mount / "c", tiny_spec).path
        server = Server({"c": collection}, workers=1).start()
        try:
            server.wait_ready()
            client = Client(server.base)
            upload = client.upload("/v1/collections/c/items", [("a.png", noise_png(1))])
            assert upload.status == 201
            free = os.statvfs(mount)
            filler = mount / "filler"
            filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize))
            second = [("b.png", noise_png(2, size=200))]
            full = client.upload("/v1/collections/c/items", second)
            assert full.status == 507 and full.content_type == "application/problem+json"
            assert "no space left on the device" in full.json()["detail"]
            search = client.json("POST", "/v1/collections/c/search", {"id": 0, "k": 1})
            assert search.status == 200  # reads go on
            filler.unlink()
            assert client.upload("/v1/collections/c/items", second).status == 201
        finally:
            server.kill()
