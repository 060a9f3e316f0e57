"""The bulk embedding job: bad files reported, resumable (also after kill -9), spec mismatch refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, photo
from PIL import Image

from lookalike.embedder import get_backbone
from lookalike.embedder.preprocess import to_batch
from lookalike.errors import SpecMismatch
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection


def embed(inputs, collection, **options):
    options.setdefault("progress", False)
    options.setdefault("num_workers", 0)
    return embed_images(inputs, collection, TINY, **options)


def assert_complete(collection: Collection, expected_paths: list[str]) -> None:
    """Every expected path exactly once, ids unique, one vector per item."""
    items = collection.items()
    paths = items.column("path").to_pylist()
    ids = items.column("id").to_pylist()
    assert sorted(paths) == sorted(expected_paths)
    assert len(set(paths)) == len(paths), "duplicate rows"
    assert len(set(ids)) == len(ids), "duplicate ids"
    all_ids, xb = collection.embeddings()
    assert all_ids.tolist() == ids and xb.shape == (len(ids), collection.spec.dims["embedding"])
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, rtol=1e-4)


def test_bad_files_are_reported_and_good_ones_embedded(mixed_dir, tmp_path: Path) -> None:
    root, bad, good = mixed_dir
    report = embed([root], tmp_path / "c", labels_from_folders=True, batch_size=3)
    collection = Collection.open(tmp_path / "c")
    assert_complete(collection, good)
    assert report.found == len(good) + len(bad) and report.embedded == len(good)
    reasons = {Path(f["path"]).name: f["reason"] for f in report.failed}
    assert set(reasons) == set(bad)
    for name, word in bad.items():
        assert word in reasons[name]
    assert {Path(f["path"]).name for f in collection.failures()} == set(bad)
    labels = dict(
        zip(
            collection.items().column("path").to_pylist(),
            collection.items().column("label").to_pylist(),
            strict=True,
        )
    )
    assert {labels[p] for p in good if "chelsea" in p} == {"animals"}
    assert {labels[p] for p in good if "noise" in p} == {"noise"}
    row = collection.items().to_pylist()[0]
    assert len(row["sha256"]) == 64 and row["width"] > 0 and row["bytes"] > 0


def test_stored_vectors_are_the_backbones_output(photo_dir: Path, tmp_path: Path) -> None:
    embed([photo_dir / "chelsea.jpg"], tmp_path / "c")
    collection = Collection.open(tmp_path / "c")
    # by default the embedding and the two deepest inner stages, GeM-pooled, from one pass
    assert collection.spec.layers == ("embedding", "layer2/gem", "layer3/gem")
    assert collection.spec.dims == {"embedding": 512, "layer2/gem": 128, "layer3/gem": 256}
    layers = ["embedding", "layer2", "layer3"]
    with get_backbone(**TINY, layers=layers, pooling="gem") as backbone:
        direct = backbone.embed(to_batch([photo("chelsea")], backbone.spec.preprocess))
    # JPEG round trip of the file vs the in-memory photo: close, not bit-identical
    for layer in layers:
        stored = collection.vectors([0], collection.spec.layers[layers.index(layer)])
        assert float(stored[0] @ direct[layer][0]) > 0.99, layer
    assert collection.embeddings()[1].shape == (1, 512)  # search reads the embedding


def test_a_collection_made_with_named_layers_keeps_them(photo_dir: Path, tmp_path: Path) -> None:
    embed_images([photo_dir / "chelsea.jpg"], tmp_path / "c", {**TINY, "layers": ["embedding"]},
                 progress=False)  # fmt: skip
    before = Collection.open(tmp_path / "c").spec.fingerprint()
    embed([photo_dir], tmp_path / "c")  # no layers asked for: the collection's own, not defaults
    collection = Collection.open(tmp_path / "c")
    assert collection.spec.layers == ("embedding",) and collection.spec.fingerprint() == before
    assert len(collection) == 4


@pytest.mark.slow
def test_second_run_skips_done_and_known_bad_and_retries_on_request(mixed_dir, tmp_path) -> None:
    root, bad, good = mixed_dir
    embed([root], tmp_path / "c")
    again = embed([root], tmp_path / "c")
    assert (again.embedded, again.skipped_done, again.skipped_known_bad, again.failed) == (
        0,
        len(good),
        len(bad),
        [],
    )
    retried = embed([root], tmp_path / "c", retry_failed=True)
    assert len(retried.failed) == len(bad) and retried.embedded == 0

    fixed = root / "bad" / "truncated.jpg"  # a bad file replaced by a good one is tried again
    photo("rocket").save(fixed)
    os.utime(fixed, ns=(1, 1))
    third = embed([root], tmp_path / "c")
    assert third.embedded == 1 and third.skipped_known_bad == len(bad) - 1
    assert_complete(Collection.open(tmp_path / "c"), [*good, str(fixed)])
    assert "truncated.jpg" not in {
        Path(f["path"]).name for f in Collection.open(tmp_path / "c").failures()
    }


class StopAfter:
    """A pipeline that dies after `n` batches, as an interrupted job would."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def batches(self, sources, preprocess):
        for count, batch in enumerate(self.inner.batches(sources, preprocess)):
            if count == self.n:
                raise KeyboardInterrupt
            yield batch


@pytest.mark.slow
def test_interrupted_run_resumes_without_duplicates_or_gaps(tmp_path: Path) -> None:
    from lookalike.embedder.pipeline import DataLoaderPipeline

    folder = write_noise_images(tmp_path / "images", 20)
    with pytest.raises(KeyboardInterrupt):
        embed(
            [folder],
            tmp_path / "c",
            shard_size=4,
            pipeline=StopAfter(DataLoaderPipeline(batch_size=3, num_workers=0), 3),
        )
    partial = len(Collection.open(tmp_path / "c"))
    assert 0 < partial < 20
    report = embed([folder], tmp_path / "c", shard_size=4)
    assert report.skipped_done == partial and report.embedded == 20 - partial
    assert_complete(Collection.open(tmp_path / "c"), [str(p) for p in folder.iterdir()])


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    """SIGKILL a real `lookalike embed` process after its third shard; the rerun completes it."""
    folder = write_noise_images(tmp_path / "images", 60)
    command = [
        sys.executable,
        "-m",
        "lookalike",
        "-v",
        "embed",
        str(folder),
        "--collection",
        str(tmp_path / "c"),
        "--backbone",
        TINY["name"],
        "--weights",
        "none",
        "--image-size",
        "128",
        "--shard-size",
        "4",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "-q",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "wrote shard 000003" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    collection = Collection.open(tmp_path / "c")
    killed_at = len(collection)
    assert 12 <= killed_at < 60
    result = subprocess.run(
        [*command[:3], *command[4:]], capture_output=True, text=True, check=True
    )
    assert f"{killed_at} skipped as done" in result.stdout
    assert_complete(collection, [str(p) for p in folder.iterdir()])


@pytest.mark.slow
def test_other_backbone_or_layer_is_refused(photo_dir: Path, tmp_path: Path) -> None:
    embed([photo_dir], tmp_path / "c")
    with pytest.raises(SpecMismatch, match="layers"):
        embed_images([photo_dir], tmp_path / "c", {"layers": ["layer4"]}, progress=False)
    with pytest.raises(SpecMismatch, match="backbone"):
        embed_images([photo_dir], tmp_path / "c", {"name": "resnet34"}, progress=False)
    assert len(Collection.open(tmp_path / "c")) == 4  # nothing was written by the refused runs


def write_noise_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


@pytest.mark.slow
def test_deleted_items_stay_deleted_when_the_folder_is_embedded_again(
    mixed_dir, tmp_path: Path
) -> None:
    root, _, _ = mixed_dir
    first = embed_images([root], tmp_path / "c", TINY, progress=False, num_workers=0)
    with Collection.open(tmp_path / "c").writer() as writer:
        writer.delete([0])
    again = embed_images([root], tmp_path / "c", TINY, progress=False, num_workers=0)
    assert again.embedded == 0 and again.skipped_done == first.embedded
    assert len(Collection.open(tmp_path / "c")) == first.embedded - 1


@pytest.mark.slow
def test_resuming_with_the_same_weights_option_and_no_name(mixed_dir, tmp_path: Path) -> None:
    root, _, _ = mixed_dir
    options = {"weights": None, "image_size": 64}  # the default backbone, random init
    first = embed_images([root], tmp_path / "c", options, progress=False, num_workers=0)
    again = embed_images([root], tmp_path / "c", options, progress=False, num_workers=0)
    assert first.embedded > 0 and again.embedded == 0 and again.skipped_done == first.embedded
