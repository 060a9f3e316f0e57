"""Shared fixtures: real photos from scikit-image, small real models, folders with planted bad files."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.embedder.spec import BackboneSpec, Preprocess
from lookalike.server.serve import READY_LINE

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# resnet18 with random weights at 64 px: a real torchvision model that runs in milliseconds.
TINY = {"name": "resnet18", "weights": None, "image_size": 64}


# Fixtures that start a server of their own (Milvus Lite: slow to start, slow to answer): a test
# using one is `slow`, so `pytest -m "not slow"` stays the fast loop.
SLOW_FIXTURES = frozenset({"milvus_uri"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ONNX exports made without a collection go to a temporary cache, not the user's."""
    folder = tmp_path_factory.mktemp("lookalike-cache")
    previous = os.environ.get("LOOKALIKE_CACHE")
    os.environ["LOOKALIKE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["LOOKALIKE_CACHE"]
    else:
        os.environ["LOOKALIKE_CACHE"] = previous


def photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real photos as JPEGs."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        photo(name).save(folder / f"{name}.jpg", quality=90)
    return folder


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_bad_files(folder: Path) -> dict[str, str]:
    """Plant one file of each bad kind; returns file name -> a word its failure reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    whole = jpeg_bytes(photo("coffee"))
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.png").write_text("this is not an image\n")
    Image.new("1", (9000, 9000)).save(folder / "huge.png")  # 81 M pixels, a few kB on disk
    Image.new("RGB", (20, 20)).save(folder / "old.jpg", format="PCX")  # a format we do not allow
    Image.new("L", (4000, 10)).save(folder / "banner.png")  # 400:1, would resize to 89,600 x 224
    return {
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "notes.png": "not an image",
        "huge.png": "pixels",
        "old.jpg": "PCX",
        "banner.png": "times the other",
    }


@pytest.fixture
def mixed_dir(tmp_path: Path, photo_dir: Path) -> tuple[Path, dict[str, str], list[str]]:
    """Good photos in labelled sub-folders, bad files beside them, and a non-image file to ignore."""
    root = tmp_path / "images"
    good = []
    for index, name in enumerate(PHOTOS):
        label = "animals" if name == "chelsea" else "things"
        target = root / label / f"{index}-{name}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((photo_dir / f"{name}.jpg").read_bytes())
        good.append(str(target))
    rng = np.random.default_rng(0)
    for index in range(4):
        target = root / "noise" / f"noise-{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(target)
        good.append(str(target))
    bad = write_bad_files(root / "bad")
    (root / "README.txt").write_text("not walked: the extension is not an image's\n")
    return root, bad, sorted(good)


def make_spec(**changes) -> BackboneSpec:
    fields = dict(
        backbone="resnet18",
        weights=None,
        layers=("embedding", "layer3"),
        pooling="avg",
        normalize=True,
        dims={"embedding": 8, "layer3": 4},
        preprocess=Preprocess(resize=72, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3),
        dtype="float32",
    )
    fields.update(changes)
    return BackboneSpec(**fields)


@pytest.fixture(scope="session")
def digit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real handwritten digits (scikit-learn's), 3 classes x 12 PNGs in one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for digit in (0, 1, 7):
        rows = np.flatnonzero(digits.target == digit)[:12]
        (root / str(digit)).mkdir()
        for row in rows:
            ink = (255 - digits.images[row] * 255 / 16).astype(np.uint8)
            Image.fromarray(ink).resize((32, 32)).save(root / str(digit) / f"{row}.png")
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(
    collections: dict[str, Path],
    environment: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[tuple[str, list[str]]]:
    """`lookalike serve` (gunicorn) on a free loopback port; yields (base URL, output lines).

    On exit it is stopped with SIGTERM; its output (filled in after the stop) and exit status
    are checked by the caller through the yielded list.
    """
    port = free_port()
    command = [sys.executable, "-m", "lookalike", "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    command += [f"{name}={path}" for name, path in collections.items()]
    server = subprocess.Popen(
        command,
        env={**os.environ, **(environment or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in server.stdout:
            lines.put(line.decode(errors="replace"))
        lines.put("")  # the server closed its output: it exited

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        ready = 0
        while ready < workers:  # every worker's ready line (its model and index are loaded)
            line = lines.get(timeout=240)
            output.append(line)
            if not line:
                raise AssertionError(f"the server exited: {''.join(output)}")
            ready += READY_LINE in line
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as response:
            assert response.status == 200
        yield base, output
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        while (line := lines.get(timeout=10)) != "":
            output.append(line)
        output[:] = ["".join(output), f"exit status {server.returncode}"]


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "3m") mounted at `folder`: a disk that fills up for real (root
    only; the test is skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a small tmpfs here: {error}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def read_only_view(source: Path, folder: Path) -> Iterator[Path]:
    """`source` bind-mounted read-only at `folder`: a real read-only file system (EROFS even for
    root, whom permissions do not stop; the test is skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "--bind", str(source), str(folder)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot bind-mount here: {error}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True
        )
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def synthetic(tmp_path: Path):
    """A synthetic collection: three separable classes on `embedding`, noise on `layer3`."""
    from synthetic import make_collection, separable

    vectors, labels = separable(30)
    return make_collection(tmp_path / "c", labels, vectors)


@pytest.fixture(scope="session")
def embedded_digits(digit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits embedded with the tiny model, labelled by folder, once a session: copy it
    (`digit_collection`) before writing to it."""
    from lookalike.jobs.bulk import embed_images

    path = tmp_path_factory.mktemp("embedded") / "digits"
    embed_images([digit_dir], path, TINY, labels_from_folders=True, progress=False, num_workers=0)
    return path


@pytest.fixture(scope="session")
def served_digits(embedded_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`embedded_digits` indexed, with a trained classifier `digits`, once a session: copy it
    (`copy_of`) before serving it to tests that write."""
    from lookalike.classify.train import train_classifier
    from lookalike.index import build_index
    from lookalike.store.collection import Collection

    path = copy_of(embedded_digits, tmp_path_factory.mktemp("served") / "digits")
    build_index(Collection.open(path), progress=False)
    train_classifier(path, "digits", folds=3)
    return path


def copy_of(collection: Path, target: Path) -> Path:
    """A private copy of a collection folder at `target` (its items keep their image paths)."""
    shutil.copytree(collection, target, symlinks=True)
    return target


@pytest.fixture
def digit_collection(embedded_digits: Path, tmp_path: Path) -> Path:
    """The digits embedded with the tiny model, labelled by folder: a private copy."""
    return copy_of(embedded_digits, tmp_path / "digits")


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus Lite gRPC server on a free loopback port for the whole session:
    ``milvus://127.0.0.1:PORT`` (add ``/NAME`` per Milvus collection: `milvus_server.fresh_name`)."""
    pytest.importorskip("pymilvus", reason="the `milvus` extra is not installed")
    pytest.importorskip("milvus_lite", reason="the `milvus` extra is not installed")
    from milvus_server import milvus_lite_server

    folder = tmp_path_factory.mktemp("milvus")
    with milvus_lite_server(folder / "data", free_port()) as uri:
        yield uri
