"""One real server's hard life, in order: SIGKILLed at random points while clients upload and delete,
restarted and checked; then a malformed-input corpus; then mixed load from 16 clients; then SIGTERM
under load. Each test checks its own guarantee; they share the server to save its start-ups.

`bench/reliability_bench.py` runs the same drivers longer (20 crash cycles, 5 minutes of load).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.classify import train_classifier
from lookalike.index import open_index, prepare_index
from lookalike.store.collection import Collection

from .bad_images import encode, small_photo
from .corpus import corpus, run_corpus
from .crash import CrashReport, crash_cycles
from .harness import Client, Server
from .load import run_load, sigterm_under_load

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

READ, WRITE = "corpus-reader", "corpus-writer"
WRITER = {"Authorization": f"Bearer {WRITE}"}
MAX_UPLOAD = 4 * 2**20
CYCLES = 2
LOAD_SECONDS = 8


@dataclass
class Served:
    path: Path
    server: Server
    crash: CrashReport
    allowed: Path
    width: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_spec) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    path = Collection.create(root / "c", tiny_spec).path
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "link-out").symlink_to("/etc")  # a way out that resolving must catch
    env = {
        "LOOKALIKE_READ_KEYS": READ,
        "LOOKALIKE_WRITE_KEYS": WRITE,
        "LOOKALIKE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "LOOKALIKE_ALLOWED_ROOTS": str(allowed),
    }
    report, server = crash_cycles(path, CYCLES, seed=1, env=env, headers=WRITER)
    try:
        train_predict_classifier(path)
        yield Served(path, server, report, allowed, tiny_spec.dims[tiny_spec.layers[0]])
    finally:
        if server.process.poll() is None:
            server.kill()


def train_predict_classifier(path: Path) -> None:
    """A classifier for the predict routes: two classes over whatever the crash cycles left."""
    ids = existing_ids(path)
    assert len(ids) >= 4, "the crash cycles left too few items to train on"
    train_classifier(path, "clf", {item: "ab"[n % 2] for n, item in enumerate(ids)}, folds=2)


def test_sigkilled_server_loses_no_acknowledged_write(served: Served) -> None:
    report = served.crash
    assert not report.failures(), "\n".join(report.lines() + report.failures())
    assert report.acknowledged_uploads >= 3 and report.checked >= 1, report.lines()
    assert report.acknowledged_deletes >= 1, report.lines()  # deletes were crashed too


def test_malformed_inputs_are_refused_with_problems_never_5xx(served: Served) -> None:
    item = min(existing_ids(served.path))
    cases = corpus(served.width, str(served.allowed), MAX_UPLOAD, item)
    assert len(cases) >= 1000
    report = run_corpus(served.server.base, cases, WRITE)
    assert report.tried == len(cases)
    assert report.healthy_after and served.server.process.poll() is None, report.lines()
    assert report.five_xx == 0 and not report.failures, "\n".join(report.failures[:40])
    assert not report.cut_off, report.cut_off[:10]
    assert "Traceback" not in served.server.output()


def embed(client: Client, image: bytes) -> np.ndarray:
    answer = client.upload("/v1/collections/c/embed", [("x.png", image)])
    assert answer.status == 200, answer.body
    return np.asarray(answer.json()["embeddings"][0]["vector"])


# Pillow's exif_transpose turns orientation N upright with this transpose; stored pixels are the
# upright ones put through its inverse.
INVERSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def test_exif_rotation_is_applied_and_only_the_first_frame_counts(served: Served) -> None:
    client = Client(served.server.base, WRITER)
    upright = small_photo()
    expected = embed(client, encode(upright, "PNG"))
    for orientation, inverse in INVERSE.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = encode(upright.transpose(inverse), "PNG", exif=exif.tobytes())
        assert np.allclose(embed(client, stored), expected, atol=1e-5), orientation
    frames = [upright.rotate(angle) for angle in (0, 90, 180)]
    animated = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert np.allclose(embed(client, animated), expected, atol=1e-5)
    assert not np.allclose(embed(client, encode(frames[2], "PNG")), expected, atol=1e-3)
    client.close()


def existing_ids(path: Path) -> list[int]:
    return Collection.open(path).items(["id"]).column("id").to_pylist()


def test_mixed_load_answers_no_5xx_and_loses_no_write(served: Served) -> None:
    report = run_load(
        served.server,
        served.width,
        LOAD_SECONDS,
        clients=16,
        key=WRITER,
        ids=existing_ids(served.path),
    )
    summary = "\n".join(report.lines())
    assert report.five_xx == 0 and not report.unexpected, report.unexpected[:10]
    assert report.served > 100, summary
    assert report.acknowledged_uploads > 5 and report.acknowledged_deletes > 0, summary
    assert not report.not_read_back, report.not_read_back[:10]
    assert report.lost == 0, summary
    assert report.rss_growth_kib() < 200 * 1024, summary  # MiB-scale noise, not a leak


def test_sigterm_under_load_finishes_what_it_accepted(served: Served) -> None:
    """SIGTERM while 16 clients write and search and four big uploads are in flight (their first
    image already stored): every accepted upload answers 201, nothing acknowledged is lost."""
    report = sigterm_under_load(served.server, served.path, served.width, WRITER, seconds_before=2)
    summary = "\n".join(report.lines())
    assert report.exit_code == 0, served.server.output()[-3000:]
    assert report.probes_answered == report.probes_started >= 1, summary
    assert report.probes_in_flight >= 1, summary  # the signal came while they were under way
    assert report.five_xx == 0 and not report.unexpected, report.unexpected[:10]
    assert report.lost == 0, summary
    prepare_index(served.path)  # what the next start does: the saved index catches up
    open_index(Collection.open(served.path))
