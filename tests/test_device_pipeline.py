"""The GPU path's pipeline (batched JPEG decode and preprocessing on the model's device).

It runs the same code on the CPU (torchvision's libjpeg), so CI checks its logic without a GPU:
every file is either embedded or a failure row, and its pixels match the reference transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import jpeg_bytes, photo
from PIL import Image

from lookalike.embedder.device_pipeline import DevicePipeline
from lookalike.embedder.pipeline import DataLoaderPipeline
from lookalike.embedder.registry import IMAGENET_PREPROCESS
from lookalike.embedder.sources import walk_images
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection


def cmyk_jpeg(name: str) -> bytes:
    import io

    buffer = io.BytesIO()
    photo(name).convert("CMYK").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def pixels_by_path(pipeline, sources) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    pixels, failures = {}, {}
    for batch in pipeline.batches(sources, IMAGENET_PREPROCESS):
        for item, tensor in zip(
            batch.items, batch.pixels.cpu() if batch.items else [], strict=True
        ):
            pixels[Path(item["path"]).name] = tensor
        failures.update({Path(f["path"]).name: f["reason"] for f in batch.failures})
    return pixels, failures


def run_against_reference(mixed_dir, device: str) -> None:
    root, bad, _ = mixed_dir
    (root / "cmyk.jpg").write_bytes(cmyk_jpeg("coffee"))  # nvJPEG refuses CMYK: Pillow decodes it
    exif = Image.open(root / "animals" / "0-chelsea.jpg")
    rotated = exif.getexif()
    rotated[0x0112] = 6  # EXIF orientation: rotate 90 degrees on display
    exif.save(root / "rotated.jpg", exif=rotated)
    sources = list(walk_images([root]))
    ours, failed = pixels_by_path(DevicePipeline(device, batch_size=4, read_threads=2), sources)
    reference, expected_failures = pixels_by_path(DataLoaderPipeline(num_workers=0), sources)
    assert set(ours) | set(failed) == {s.path.name for s in sources}  # nothing dropped
    assert set(ours) == set(reference) and set(failed) == set(expected_failures)
    for name, word in bad.items():
        assert word in failed[name], (name, failed[name])
    for name, tensor in ours.items():
        a, b = tensor.flatten().double(), reference[name].flatten().double()
        cosine = float(a @ b / (a.norm() * b.norm()))
        assert cosine > 0.99, (name, cosine)  # the same pixels within resampling differences
    assert ours["rotated.jpg"].shape == reference["rotated.jpg"].shape


def test_device_pipeline_on_the_cpu_matches_the_reference_and_drops_nothing(mixed_dir) -> None:
    run_against_reference(mixed_dir, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_pipeline_on_the_gpu_matches_the_reference(mixed_dir) -> None:
    run_against_reference(mixed_dir, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bulk_job_on_the_gpu_uses_the_device_pipeline(mixed_dir, tmp_path: Path) -> None:
    root, bad, good = mixed_dir
    report = embed_images(
        [root], tmp_path / "c", {"name": "resnet18", "weights": None}, device="cuda", progress=False
    )
    assert report.embedded == len(good) and len(report.failed) == len(bad)
    on_cpu = embed_images(
        [root], tmp_path / "cpu", {"name": "resnet18", "weights": None}, device="cpu",
        progress=False, engine="torch",
    )  # fmt: skip
    gpu, cpu = Collection.open(tmp_path / "c"), Collection.open(tmp_path / "cpu")
    paths = [c.items(["path"]).column("path").to_pylist() for c in (gpu, cpu)]
    assert paths[0] == paths[1]  # the same files, in the same order, with the same ids
    gpu_vectors, cpu_vectors = gpu.embeddings()[1], cpu.embeddings()[1]
    cosines = np.sum(np.asarray(gpu_vectors) * np.asarray(cpu_vectors), axis=1)
    assert on_cpu.embedded == report.embedded and cosines.mean() >= 0.99


def test_a_cmyk_jpeg_is_embedded_beside_an_rgb_one(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(photo("rocket")))
    (tmp_path / "b.jpg").write_bytes(cmyk_jpeg("rocket"))
    sources = list(walk_images([tmp_path]))
    batches = list(DevicePipeline("cpu", batch_size=8).batches(sources, IMAGENET_PREPROCESS))
    assert [len(b.items) for b in batches] == [2] and not batches[0].failures
    assert batches[0].pixels.shape == (2, 3, 224, 224)
