"""The bulk embedding job: image folders in, a resumable collection out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lookalike.collection import Collection, CollectionWriter
from lookalike.embedder.backbone import Backbone, get_backbone, spec_arguments
from lookalike.embedder.device_pipeline import DevicePipeline
from lookalike.embedder.engines import use_engine
from lookalike.embedder.pipeline import Batch, Pipeline, ThreadPipeline
from lookalike.embedder.registry import DEFAULT_BACKBONE
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS, ImageSource, walk_images

log = logging.getLogger(__name__)

GPU_BATCH_SIZE = 128
GPU_READ_THREADS = 8  # file reads and hashing ahead of the GPU
CPU_BATCH_SIZE = 8  # measured by bench/embed_bench.py on 2 cores (README "Speed")


@dataclass
class EmbedReport:
    """What one run did. `failed` holds this run's failure records (path, reason, ...)."""

    collection: Path
    found: int
    embedded: int = 0
    skipped_done: int = 0
    skipped_known_bad: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "torch"

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.collection}: {self.found} images found, {self.embedded} embedded, "
            f"{self.skipped_done} skipped as done, {self.skipped_known_bad} skipped as known-bad, "
            f"{len(self.failed)} failed; {self.images_per_second:.1f} images/s over {self.seconds:.1f} s "
            f"({self.engine})"
        )


def open_for_embedding(
    collection_dir: str | Path,
    embedder: Mapping[str, Any] | None = None,
    device: str | None = None,
    precision: str = "auto",
    engine: str = "auto",
) -> tuple[Collection, Backbone]:
    """The collection at `collection_dir` and the backbone to fill it with, on `engine`.

    A new collection takes the `embedder` options (`get_backbone` arguments; empty means the
    offline default). An existing one keeps its own spec: options that would change it are refused
    with `SpecMismatch`, naming the fields that differ. The engine never changes the spec; its
    export is cached in the collection's ``engines/`` folder.
    """
    embedder = dict(embedder or {})
    if not Collection.exists(collection_dir):
        backbone = get_backbone(**embedder, device=device, precision=precision)
        collection = Collection.create(collection_dir, backbone.spec)
        return collection, _on_engine(backbone, engine, collection)
    collection = Collection.open(collection_dir)
    arguments = {**spec_arguments(collection.spec), **embedder}
    if "weights" in embedder and "name" not in embedder:
        arguments["name"] = (
            DEFAULT_BACKBONE  # weights without a name mean what they did at creation
        )
    backbone = get_backbone(**arguments, device=device, precision=precision)
    try:
        collection.check_spec(backbone.spec)
    except Exception:
        backbone.close()
        raise
    return collection, _on_engine(backbone, engine, collection)


def _on_engine(backbone: Backbone, engine: str, collection: Collection) -> Backbone:
    try:
        return use_engine(backbone, engine, collection.path)
    except Exception:
        backbone.close()
        raise


def plan(
    collection: Collection, sources: Iterable[ImageSource], retry_failed: bool, report: EmbedReport
) -> list[ImageSource]:
    """The sources still to embed: not yet in the collection and not a known-bad, unchanged file."""
    # deleted items count as done: a delete sticks when the same folder is embedded again
    done = set(collection.items(["path"], include_deleted=True).column("path").to_pylist())
    known_bad = {f["path"]: (f.get("bytes"), f.get("mtime_ns")) for f in collection.failures()}
    todo: dict[str, ImageSource] = {}
    for source in sources:
        key = str(source.path)
        if key in done:
            report.skipped_done += 1
        elif not retry_failed and key in known_bad and known_bad[key] == _stat_key(source.path):
            report.skipped_known_bad += 1
        else:
            todo.setdefault(key, source)
    return list(todo.values())


def _stat_key(path: Path) -> tuple[int | None, int | None]:
    try:
        stat = path.stat()
    except OSError:
        return (None, None)
    return (stat.st_size, stat.st_mtime_ns)


def embed_images(
    inputs: Iterable[str | Path],
    collection_dir: str | Path,
    embedder: Mapping[str, Any] | None = None,
    *,
    labels_from_folders: bool = False,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | None = None,
    precision: str = "auto",
    engine: str = "auto",
    shard_size: int = 1024,
    retry_failed: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    pipeline: Pipeline | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed every image under `inputs` that the collection lacks; resumable after any interruption.

    Bad files (corrupt, truncated, empty, not an image, too many pixels) are recorded in
    ``failed.jsonl`` and reported, never fatal. `on_progress(done, total)` follows each batch.
    `engine`: auto (ONNX Runtime on a CPU where the backbone exports, else torch), onnx or torch.
    On a CPU, files are decoded by `num_workers` threads (default: one per core) while the engine
    runs; on a GPU by DataLoader worker processes.
    """
    sources = list(walk_images(inputs, labels_from_folders))
    collection, backbone = open_for_embedding(collection_dir, embedder, device, precision, engine)
    report = EmbedReport(
        collection=collection.path, found=len(sources), engine=backbone.engine_name
    )
    todo = plan(collection, sources, retry_failed, report)
    if pipeline is None:
        pipeline = default_pipeline(backbone.device, batch_size, num_workers, max_pixels)
    started = time.perf_counter()
    with (
        backbone,
        collection.writer(shard_size) as writer,
        tqdm(total=len(todo), unit="img", disable=not progress, desc="embedding") as bar,
    ):
        done = 0
        for batch in pipeline.batches(todo, backbone.spec.preprocess):
            _write_batch(batch, backbone, writer, report)
            done += len(batch.items) + len(batch.failures)
            bar.update(len(batch.items) + len(batch.failures))
            if on_progress is not None:
                on_progress(done, len(todo))
    report.seconds = time.perf_counter() - started
    log.info(report.summary())
    return report


def default_pipeline(
    device: torch.device, batch_size: int | None, num_workers: int | None, max_pixels: int
) -> Pipeline:
    """Decode threads on a CPU (they overlap the engine in one process), worker processes on a GPU."""
    if device.type == "cuda":  # JPEGs decoded in batches on the GPU (nvJPEG)
        return DevicePipeline(
            device,
            batch_size=batch_size or GPU_BATCH_SIZE,
            read_threads=num_workers or GPU_READ_THREADS,
            max_pixels=max_pixels,
        )
    return ThreadPipeline(
        batch_size=batch_size or CPU_BATCH_SIZE, num_threads=num_workers, max_pixels=max_pixels
    )


def _write_batch(
    batch: Batch, backbone: Backbone, writer: CollectionWriter, report: EmbedReport
) -> None:
    for failure in batch.failures:
        writer.record_failure(failure)
        log.warning("skipped %s: %s", failure["path"], failure["reason"])
    report.failed.extend(batch.failures)
    if batch.items:
        writer.add(batch.items, backbone.embed(batch.pixels))
        report.embedded += len(batch.items)
