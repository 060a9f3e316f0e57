"""A collection whose disk refuses writes: mounted read-only (a real read-only bind mount), or
full (a real small tmpfs). Reads (search, dedup, audit, calibration) answer, saying what they could
not store; writes (upload, delete, index build) are one clear error, never a 500 or a traceback."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, read_only_view, small_tmpfs
from synthetic import WIDTH, make_collection

from lookalike.cli import main
from lookalike.embedder import get_backbone
from lookalike.embedder.export import use_engine
from lookalike.index.store import index_dir
from lookalike.store.collection import Collection

from .harness import Client, Server, leaks_traceback, noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

REFUSED = "refuses writes (Read-only file system)"
FULL = "no space left on the device holding"


def lookalike(*arguments: str | Path):
    return CliRunner().invoke(main, [str(argument) for argument in arguments])


def not_stored(caplog: pytest.LogCaptureFixture, what: str) -> bool:
    return any(
        record.levelno == logging.WARNING and what in record.getMessage() and "not stored" in
        record.getMessage() for record in caplog.records
    )  # fmt: skip


def test_a_read_only_collection_answers_reads_and_refuses_writes_on_the_cli(
    digit_collection: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`dedup` computed a calibration, then failed writing it; `audit` failed writing its report;
    a search of a collection with no index yet failed building one."""
    with read_only_view(digit_collection, tmp_path / "ro") as view:
        found = lookalike("search", "-c", view, "--id", "0", "-k", "2")
        assert found.exit_code == 0, found.output
        assert "query id 0: 2 neighbours" in found.output
        assert not_stored(caplog, "the index in memory")
        dedup = lookalike("dedup", "-c", view, "-q")
        assert dedup.exit_code == 0, dedup.output
        assert "calibrated on 36 images" in dedup.output and "pairs within" in dedup.output
        assert not_stored(caplog, "the calibration of")
        audit = lookalike("audit", "-c", view, "--only", "outliers", "-q", "--top", "3")
        assert audit.exit_code == 0, audit.output
        assert "36 items" in audit.output
        assert not_stored(caplog, "the audit of")
        build = lookalike("index", "build", "-c", view)
        assert build.exit_code == 1 and REFUSED in build.output
        assert "internal error" not in build.output and "Traceback" not in build.output
    assert not (digit_collection / "index").exists()  # nothing was written behind the mount


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "no-index"])
def test_a_server_starts_on_a_read_only_collection_and_answers_problems_to_writes(
    digit_collection: Path, tmp_path: Path, indexed: bool
) -> None:
    """Uploads, deletes, `POST .../duplicates {}` and `POST .../audit` were bare 500s; with no
    index saved yet, the server did not start."""
    if indexed:
        assert lookalike("index", "build", "-c", digit_collection).exit_code == 0
    with read_only_view(digit_collection, tmp_path / "ro") as view:
        server = Server({"c": view}, workers=1).start()
        try:
            server.wait_ready()
            client = Client(server.base)
            search = client.json("POST", "/v1/collections/c/search", {"id": 0, "k": 2})
            assert search.status == 200 and len(search.json()["results"][0]["hits"]) == 2
            dedup = client.json("POST", "/v1/collections/c/duplicates", {})
            assert dedup.status == 200, dedup.body
            assert dedup.json()["calibration"]["stored"] is False
            writes = [
                client.upload("/v1/collections/c/items", [("a.png", noise_png(1))]),
                client.request("DELETE", "/v1/collections/c/items/3"),
                client.json("POST", "/v1/collections/c/audit", {}),
            ]
            for answer in writes:
                assert answer.status == 507 and answer.content_type == "application/problem+json"
                assert REFUSED in answer.json()["detail"] and not leaks_traceback(answer.body)
            assert client.request("GET", "/v1/jobs").status == 200
            again = client.json("POST", "/v1/collections/c/search", {"id": 3, "k": 1})
            assert again.status == 200 and again.json()["results"][0]["hits"][0]["id"] == 3
        finally:
            server.kill()
    assert "Traceback" not in server.output()
    assert len(Collection.open(digit_collection)) == 36


def _add_items(collection: Collection, first: int, count: int) -> None:
    vectors = np.random.default_rng(first).standard_normal((count, WIDTH)).astype(np.float32)
    rows = [
        {"path": f"/img/{n}.jpg", "sha256": f"{n:064x}", "width": 8, "height": 8, "bytes": 1,
         "mtime_ns": 1, "label": None}
        for n in range(first, first + count)
    ]  # fmt: skip
    with collection.writer(shard_size=500) as writer:
        writer.add(rows, {"embedding": vectors, "layer3": vectors})


def _fill(disk: Path, leave: int) -> Path:
    free = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - leave))
    return filler


def test_a_full_disk_during_an_index_write_is_storage_full_and_reads_use_the_index_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`index build` on a full disk printed FAISS's write_index RuntimeError as "internal error
    ... This is a bug"; `dedup` failed saving the index it had caught up."""
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        vectors = np.random.default_rng(0).standard_normal((1000, WIDTH)).astype(np.float32)
        collection = make_collection(disk / "c", [None] * 1000, vectors)
        assert lookalike("index", "build", "-c", collection.path).exit_code == 0
        _add_items(collection, 1000, 2000)  # the saved index now lacks 2000 items
        filler = _fill(disk, leave=64 * 2**10)  # the index of 3000 x 16 floats needs 192 kB
        build = lookalike("index", "build", "-c", collection.path)
        assert build.exit_code == 1 and FULL in build.output, build.output
        assert "internal error" not in build.output and "RuntimeError" not in build.output
        assert not list(index_dir(collection.path, "embedding").glob(".tmp-*"))  # space given back
        dedup = lookalike("dedup", "-c", collection.path, "--threshold", "0.5", "-q")
        assert dedup.exit_code == 0 and "pairs within 0.500" in dedup.output, dedup.output
        assert not_stored(caplog, "the index in memory")
        found = lookalike("search", "-c", collection.path, "--id", "2999", "-k", "1", "--json")
        assert found.exit_code == 0 and '"id": 2999' in found.output  # from the caught-up index
        filler.unlink()
        assert lookalike("index", "update", "-c", collection.path).exit_code == 0


def test_an_engine_export_passes_over_a_read_only_collection_to_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's EROFS read as "does not export to ONNX": torch ran instead of the cache's
    export."""
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c").mkdir()
    with read_only_view(tmp_path / "c", tmp_path / "ro") as view:
        backbone = use_engine(get_backbone(**TINY), "auto", view)
    assert backbone.engine is not None  # ONNX Runtime, from the export written to the cache
    assert list((tmp_path / "cache" / "engines").glob("*.onnx"))
