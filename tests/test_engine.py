"""The CPU engine (ONNX Runtime) and decode path: same vectors as torch, cached exports, fallbacks."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY, jpeg_bytes, photo
from PIL import Image

from lookalike.embedder import get_backbone
from lookalike.embedder.engines import EngineRefused, min_cosines
from lookalike.embedder.export import check_pixels, use_engine
from lookalike.embedder.pipeline import ThreadPipeline
from lookalike.embedder.preprocess import build_transform, to_array, to_batch
from lookalike.embedder.sources import ImageSource, decode
from lookalike.embedder.spec import Preprocess
from lookalike.index import Searcher, build_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

# the offline default (real ImageNet weights) at a small input: quick, and a real network
SMALL_DEFAULT = {"name": "default", "image_size": 96, "device": "cpu"}


def cosines(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", xa, xb) / (np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1))


def engine_files(folder: Path) -> list[Path]:
    return sorted((folder / "engines").glob("*.onnx"))


def test_onnx_matches_torch_on_the_output_and_a_hooked_layer(tmp_path: Path) -> None:
    layers = ["embedding", "blocks.4"]
    with get_backbone(**SMALL_DEFAULT, layers=layers) as backbone:
        pixels = check_pixels(backbone)
        expected = backbone.embed(pixels)
        use_engine(backbone, "onnx", tmp_path)
        assert backbone.engine_name == "onnx"
        found = backbone.embed(pixels)
        single = backbone.embed(pixels[:1])  # the batch axis is dynamic
        assert backbone.spec.dims == {"embedding": 1280, "blocks.4": 112}
    for layer in layers:
        assert found[layer].shape == expected[layer].shape and found[layer].dtype == np.float32
        assert cosines(found[layer], expected[layer]).min() >= 0.999
    assert cosines(single["embedding"], expected["embedding"][:1]).min() >= 0.999


def test_gem_pooling_without_normalising_exports_too(tmp_path: Path) -> None:
    with get_backbone(
        **TINY, layers=["layer3", "embedding"], pooling="gem", normalize=False, device="cpu"
    ) as backbone:
        pixels = check_pixels(backbone)
        expected = backbone.embed(pixels)
        found = use_engine(backbone, "onnx", tmp_path).embed(pixels)
    assert min(min_cosines(expected, found).values()) >= 0.999
    np.testing.assert_allclose(found["layer3"], expected["layer3"], rtol=1e-3, atol=1e-4)


def test_the_export_is_cached_and_reused_and_keyed_by_spec(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lookalike.embedder.engines")
    get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path).close()
    [first] = engine_files(tmp_path)
    stamp = first.stat().st_mtime_ns
    caplog.clear()
    with get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path) as again:
        assert again.engine.path == first and again.engine_name == "onnx"
    assert "exported" not in caplog.text and first.stat().st_mtime_ns == stamp
    other = {**TINY, "layers": ["embedding", "layer2"]}
    get_backbone(**other, device="cpu", engine="onnx", collection_dir=tmp_path).close()
    files = engine_files(tmp_path)
    assert len(files) == 2 and first in files
    with get_backbone(**other, device="cpu") as backbone:
        assert f"{backbone.spec.fingerprint()}.onnx" in {f.name for f in files}


def test_a_corrupt_cached_file_is_rebuilt(tmp_path: Path, caplog) -> None:
    get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path).close()
    [path] = engine_files(tmp_path)
    path.write_bytes(b"not an onnx file")
    with get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path) as backbone:
        assert backbone.engine_name == "onnx"
        pixels = check_pixels(backbone)
        found = backbone.embed(pixels)
        backbone.engine = None
        assert min(min_cosines(backbone.embed(pixels), found).values()) >= 0.999
    assert "does not load or run" in caplog.text and path.stat().st_size > 1000


@pytest.mark.slow
def test_a_drifted_cached_file_is_refused_and_rebuilt(tmp_path: Path, caplog) -> None:
    get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path).close()
    [path] = engine_files(tmp_path)
    model = onnx.load(str(path))
    for weights in model.graph.initializer:  # same spec tag, other numbers: a stale export
        values = onnx.numpy_helper.to_array(weights)
        if values.ndim == 4:
            weights.CopyFrom(onnx.numpy_helper.from_array(values[::-1].copy(), weights.name))
    path.write_bytes(model.SerializeToString())
    drifted = path.read_bytes()
    with get_backbone(**TINY, device="cpu", engine="onnx", collection_dir=tmp_path) as backbone:
        assert backbone.engine_name == "onnx"
    assert "drifts from torch" in caplog.text and path.read_bytes() != drifted


@pytest.mark.slow
def test_a_refused_engine_falls_back_to_torch_under_auto_and_raises_under_onnx(
    tmp_path: Path, caplog
) -> None:
    with get_backbone(**TINY, device="cpu") as backbone:
        pixels = check_pixels(backbone)
        expected = backbone.embed(pixels)
        use_engine(backbone, "auto", tmp_path, min_cosine=1.5)  # no export can pass that
        assert backbone.engine_name == "torch"
        np.testing.assert_array_equal(backbone.embed(pixels)["embedding"], expected["embedding"])
        assert "embedding with torch" in caplog.text and "drifts from torch" in caplog.text
        with pytest.raises(EngineRefused, match="drifts"):
            use_engine(backbone, "onnx", tmp_path, min_cosine=1.5)
        with pytest.raises(ValueError, match="known: auto, onnx, torch"):
            use_engine(backbone, "tensorrt")


@pytest.mark.slow
def test_bulk_job_on_onnx_gives_the_torch_collection(mixed_dir, tmp_path: Path) -> None:
    root, bad, good = mixed_dir
    reports = {
        engine: embed_images(
            [root], tmp_path / engine, TINY, engine=engine, batch_size=3, progress=False
        )
        for engine in ("onnx", "torch")
    }
    assert reports["onnx"].engine == "onnx" and reports["torch"].engine == "torch"
    assert "(onnx)" in reports["onnx"].summary()
    onnx_c, torch_c = Collection.open(tmp_path / "onnx"), Collection.open(tmp_path / "torch")
    assert onnx_c.spec.fingerprint() == torch_c.spec.fingerprint()  # the engine is not in the spec
    columns = ["id", "path", "sha256", "width", "height", "label"]
    assert onnx_c.items(columns).to_pylist() == torch_c.items(columns).to_pylist()
    assert sorted(onnx_c.items(["path"]).column("path").to_pylist()) == good
    assert {Path(f["path"]).name for f in onnx_c.failures()} == set(bad)
    assert cosines(onnx_c.embeddings()[1], torch_c.embeddings()[1]).min() >= 0.999
    assert len(engine_files(tmp_path / "onnx")) == 1 and not engine_files(tmp_path / "torch")


@pytest.mark.slow
def test_search_embeds_queries_on_the_collection_engine(photo_dir: Path, tmp_path: Path) -> None:
    embed_images([photo_dir], tmp_path / "c", TINY, progress=False)
    build_index(Collection.open(tmp_path / "c"), progress=False)
    query = photo_dir / "coffee.jpg"
    searcher = Searcher.open(tmp_path / "c")
    hits = searcher.search_images([query], k=1)
    assert searcher.backbone().engine_name == "onnx"
    assert hits[0][0].path == str(query) and hits[0][0].distance < 1e-4
    on_torch = Searcher.open(tmp_path / "c", engine="torch")
    assert on_torch.search_images([query], k=1)[0][0].path == str(query)
    assert on_torch.backbone().engine_name == "torch"


@pytest.mark.slow
def test_draft_decoding_of_a_large_jpeg_embeds_like_full_decoding() -> None:
    retina = photo("retina").resize((2816, 2816), Image.BICUBIC)  # a real photo, camera-sized
    data = jpeg_bytes(retina)
    with get_backbone("default", device="cpu") as backbone:
        short_side = backbone.spec.preprocess.resize
        drafted = decode(data, short_side=short_side)
        full = decode(data)
        assert (drafted.width, drafted.height) == (full.width, full.height) == (2816, 2816)
        assert full.image.size == (2816, 2816)
        assert short_side <= min(drafted.image.size) <= 2 * short_side  # libjpeg scaled 1/8
        vectors = [
            backbone.embed(to_batch([d.image], backbone.spec.preprocess))["embedding"]
            for d in (drafted, full)
        ]
    assert cosines(*vectors)[0] >= 0.99


def test_small_jpegs_and_other_formats_are_never_drafted() -> None:
    data = jpeg_bytes(photo("chelsea"))  # 451x300: no scale keeps the short side at 256
    assert decode(data, short_side=256).image.size == (451, 300)
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), "red").save(buffer, format="PNG")
    assert decode(buffer.getvalue(), short_side=100).image.size == (2000, 1000)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "nearest"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1920, 1080), (257, 300), (60, 40)])
def test_to_array_is_torchvision_within_one_grey_level(interpolation: str, size) -> None:
    preprocess = Preprocess(
        resize=256,
        crop=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation=interpolation,
    )
    image = photo("coffee").resize(size)
    expected = build_transform(preprocess)(image).numpy()
    found = to_array(image, preprocess)
    one_level = 1 / (255 * min(preprocess.std)) + 1e-5
    assert found.shape == expected.shape == (3, 224, 224) and found.dtype == np.float32
    assert np.abs(found - expected).max() <= one_level
    assert np.mean(np.abs(found - expected) > 1e-5) < 0.01


def test_thread_pipeline_keeps_order_and_records_bad_files(mixed_dir) -> None:
    root, bad, good = mixed_dir
    sources = [ImageSource(Path(p)) for p in sorted(root.rglob("*.*")) if p.suffix != ".txt"]
    preprocess = Preprocess(resize=73, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    threaded = list(ThreadPipeline(batch_size=3, num_threads=2).batches(sources, preprocess))
    inline = list(ThreadPipeline(batch_size=3, num_threads=0).batches(sources, preprocess))
    for batches in (threaded, inline):
        items = [item["path"] for batch in batches for item in batch.items]
        failed = [Path(f["path"]).name for batch in batches for f in batch.failures]
        assert items == sorted(good) and sorted(failed) == sorted(bad)
        assert all(len(b.items) + len(b.failures) == 3 for b in batches[:-1])
    pixels = [
        torch.cat([b.pixels for b in batches if b.pixels is not None])
        for batches in (threaded, inline)
    ]
    torch.testing.assert_close(*pixels)


def test_stopping_early_leaves_no_decoding_behind(mixed_dir) -> None:
    _, _, good = mixed_dir
    sources = [ImageSource(Path(p)) for p in good] * 20
    preprocess = Preprocess(resize=73, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    batches = ThreadPipeline(batch_size=4, num_threads=2).batches(sources, preprocess)
    first = next(batches)
    batches.close()  # what an interrupted job does
    assert len(first.items) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_keeps_torch_on_a_gpu(tmp_path: Path) -> None:
    with get_backbone(**TINY, device="cuda", engine="auto", collection_dir=tmp_path) as backbone:
        assert backbone.engine_name == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        get_backbone(**TINY, device="cuda", engine="onnx")


def test_cli_embed_takes_an_engine(photo_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lookalike.cli import main

    tiny = ["--backbone", "resnet18", "--weights", "none", "--image-size", "64", "-q"]
    for engine in ("torch", "onnx"):
        result = CliRunner().invoke(
            main, ["embed", str(photo_dir), "-c", str(tmp_path / engine), *tiny, "--engine", engine]
        )
        assert result.exit_code == 0, result.output
        assert f"({engine})" in result.output and "4 embedded" in result.output


@pytest.mark.slow
def test_grid_pooling_keeps_the_layout_and_exports_too(tmp_path: Path) -> None:
    """`grid`: 3 x 3 cells of the map side by side, each L2-normalised; ONNX Runtime agrees."""
    with get_backbone(**TINY, layers=["layer3"], pooling="avg", device="cpu") as pooled:
        pixels = check_pixels(pooled)
        flipped = pixels.flip(-1)  # the same content in another layout
        pooled_moved = cosines(pooled.embed(flipped)["layer3"], pooled.embed(pixels)["layer3"])
    with get_backbone(**TINY, layers=["layer3"], pooling="grid", device="cpu") as backbone:
        expected = backbone.embed(pixels)
        found = use_engine(backbone, "onnx", tmp_path).embed(pixels)
        grid_moved = cosines(backbone.embed(flipped)["layer3"], found["layer3"])
        assert backbone.spec.dims == {"layer3": 256 * 9}
    assert min(min_cosines(expected, found).values()) >= 0.999
    assert grid_moved.max() < pooled_moved.min()  # a global pool barely sees a flip; the grid does
