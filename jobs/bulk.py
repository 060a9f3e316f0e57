"""The bulk embedding job: image folders in, a collection in step with them out.

New files are embedded; a file whose size or mtime (with `checksum`, its content) changed is
embedded again as a new item and its old item tombstoned; with `prune`, items of files gone from
the inputs are tombstoned (`lookalike.store.sync`). Bad files (corrupt, truncated, empty, not an
image, not a regular file, too many pixels) are recorded in ``failed.jsonl`` and reported, never
fatal; with `within`, only files whose real path lies in those folders are read. One run at a time
embeds into a collection (another waits, then finds the work done); the collection's write lock
is held only while a shard is committed, so uploads and deletes go on meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lookalike.durable import acquire_lock
from lookalike.embedder.backbone import Backbone
from lookalike.embedder.build import get_backbone, spec_arguments
from lookalike.embedder.engines import engine_dirs
from lookalike.embedder.export import use_engine
from lookalike.embedder.pipeline import Batch, Pipeline
from lookalike.embedder.registry import DEFAULT_BACKBONE
from lookalike.embedder.sources import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    check_max_pixels,
)
from lookalike.errors import Cancelled
from lookalike.jobs.embedding import default_pipeline, embedded_batches
from lookalike.jobs.inputs import Inputs, gather_inputs
from lookalike.jobs.ray_job import RayOptions, check_ray, run_on_ray
from lookalike.jobs.report import EmbedReport
from lookalike.store.collection import EMBED_LOCK, MANIFEST, Collection
from lookalike.store.sync import SyncPlan, plan_sync, remove_items

log = logging.getLogger(__name__)

COMMIT_WAIT_SECONDS = 300.0  # a shard commit waits this long for an upload or delete to finish


def open_for_embedding(
    collection_dir: str | Path,
    embedder: Mapping[str, Any] | None = None,
    device: str | None = None,
    precision: str = "auto",
    engine: str = "auto",
) -> tuple[Collection, Backbone]:
    """The collection at `collection_dir` and the backbone to fill it with, on `engine`.

    A new collection takes the `embedder` options (`get_backbone` arguments; empty means the
    offline default; no `layers`, the embedding and the backbone's deepest inner stages). An
    existing one keeps its own spec: options that would change it are refused with
    `SpecMismatch`, naming the fields that differ. The engine never changes the spec; its export
    is cached in the collection's ``engines/`` folder.
    """
    embedder = {k: v for k, v in (embedder or {}).items() if k != "layers" or v is not None}
    if not Collection.exists(collection_dir):
        arguments = {"layers": None, **embedder}  # None: the embedding + default inner stages
        backbone = get_backbone(**arguments, device=device, precision=precision)
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
    prune: bool = False,
    checksum: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    within: Sequence[Path] | None = None,
    progress: bool = True,
    pipeline: Pipeline | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    wait: float = math.inf,
    ray: RayOptions | str | None = None,
) -> EmbedReport:
    """Bring the collection in step with the images under `inputs` (folders, image files, and
    listings: see `lookalike.jobs.inputs`; the module docstring says the rest); resumable after
    any interruption. With `ray` (`RayOptions`, or an address: "local", "auto",
    "ray://host:10001"), the work runs as tasks on a Ray cluster (`lookalike.jobs.ray_job`).
    `on_progress(done, total)` follows each batch; `should_stop()` is asked after each, and True
    ends the run with `Cancelled` once what was embedded is committed. Another run waits up to
    `wait` seconds (forever by default). `engine`: auto (ONNX Runtime on a CPU where the backbone
    exports, else torch), onnx or torch; files are decoded by `num_workers` threads on a CPU,
    DataLoader worker processes on a GPU."""
    check_max_pixels(max_pixels)
    ray = RayOptions(address=ray) if isinstance(ray, str) else ray
    if ray is not None:
        check_ray(ray)  # a missing Ray or a wrong address said before anything is written
    found = gather_inputs(inputs, labels_from_folders, within)
    with embedding_slot(collection_dir, wait):
        collection, backbone = open_for_embedding(
            collection_dir, embedder, device, precision, engine
        )
        with backbone:
            report = new_report(collection, found, backbone.engine_name)
            options = {"retry_failed": retry_failed, "prune": prune, "checksum": checksum}
            todo = _plan(collection, found, options, report)
            common = {"shard_size": shard_size, "progress": progress,
                      "on_progress": on_progress, "should_stop": should_stop}  # fmt: skip
            if ray is not None:
                run_on_ray(collection, todo, report, ray, engine_file=shared_export(collection, backbone),
                           batch_size=batch_size, max_pixels=max_pixels, **common)  # fmt: skip
            else:
                pipeline = pipeline or default_pipeline(
                    backbone.device, batch_size, num_workers, max_pixels
                )
                _run(collection, backbone, pipeline, todo, report, **common)
    log.info(report.summary())
    return report


def new_report(collection: Collection, found: Inputs, engine: str) -> EmbedReport:
    """A run's report before its work: what was found (every row, duplicates too) and labels."""
    return EmbedReport(
        collection.path, len(found) + found.duplicates, engine=engine,
        duplicates=found.duplicates, labels=found.label_counts(),
        unlabelled_rows=found.unlabelled_rows,
    )  # fmt: skip


def _plan(
    collection: Collection, found: Inputs, options: dict[str, bool], report: EmbedReport
) -> list[ImageSource]:
    """What to embed; the items of changed (and, with prune, gone) files tombstoned first."""
    plan = plan_inputs(collection, found, options)
    _count_plan(plan, report)
    remove_items(collection, plan.tombstones, COMMIT_WAIT_SECONDS, missing_ok=True)
    return plan.todo


def shared_export(collection: Collection, backbone: Backbone) -> Path | None:
    """The checked ONNX export `backbone` runs, preferably its copy in the collection (which
    every node of a cluster may see); None on torch."""
    if backbone.engine is None:
        return None
    copy = engine_dirs(collection.path)[0] / backbone.engine.path.name
    return copy if copy.is_file() else backbone.engine.path


def plan_inputs(collection: Collection, found: Inputs, options: dict[str, bool]) -> SyncPlan:
    """One plan for walked sources (by stat, under their roots) and listed ones (by path)."""
    plan = plan_sync(collection, found.walked, found.roots, **options)
    if found.listed:
        listed = plan_sync(collection, found.listed, by_stat=False, **{**options, "prune": False})
        plan.todo += listed.todo
        plan.unchanged += listed.unchanged
        plan.known_bad += listed.known_bad
    return plan


def _count_plan(plan: SyncPlan, report: EmbedReport) -> None:
    report.skipped_done, report.skipped_known_bad = plan.unchanged, plan.known_bad
    report.changed, report.removed = plan.changed, len(plan.gone)


def _run(
    collection: Collection,
    backbone: Backbone,
    pipeline: Pipeline,
    todo: list[ImageSource],
    report: EmbedReport,
    shard_size: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """Embed `todo` batch by batch, committing a shard whenever one is full (and at the end)."""
    started = time.perf_counter()
    commits = ShardCommits(collection, shard_size)
    try:
        with tqdm(total=len(todo), unit="img", disable=not progress, desc="embedding") as bar:
            done = 0
            for batch, vectors in embedded_batches(backbone, pipeline, todo):
                commits.add(batch.items, vectors, batch.failures)
                _count_batch(batch, report)
                done += len(batch.items) + len(batch.failures)
                bar.update(len(batch.items) + len(batch.failures))
                if on_progress is not None:
                    on_progress(done, len(todo))
                if should_stop is not None and should_stop():
                    raise Cancelled(f"stopped on request after {done} of {len(todo)} images")
    finally:  # what was embedded before an error or a cancel is kept
        commits.flush()
        report.seconds = time.perf_counter() - started


def _count_batch(batch: Batch, report: EmbedReport) -> None:
    for failure in batch.failures:
        log.warning("skipped %s: %s", failure["path"], failure["reason"])
    report.failed.extend(batch.failures)
    report.embedded += len(batch.items)


class ShardCommits:
    """Rows, vectors and failures buffered until a shard is full, then committed under the
    collection's write lock, which is held for that commit only."""

    def __init__(self, collection: Collection, shard_size: int) -> None:
        self.collection, self.shard_size = collection, shard_size
        self._rows: list[dict[str, Any]] = []
        self._vectors: list[dict[str, np.ndarray]] = []
        self._failures: list[dict[str, Any]] = []

    def add(
        self,
        rows: list[dict[str, Any]],
        vectors: dict[str, np.ndarray] | None,
        failures: list[dict[str, Any]],
    ) -> None:
        self._rows += rows
        if vectors is not None:
            self._vectors.append(vectors)
        self._failures += failures
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows and not self._failures:
            return
        layers = self.collection.spec.layers
        with self.collection.writer(max(1, len(self._rows)), COMMIT_WAIT_SECONDS) as writer:
            for failure in self._failures:
                writer.record_failure(failure)
            if self._rows:
                stacked = {
                    layer: np.concatenate([v[layer] for v in self._vectors]) for layer in layers
                }
                writer.add(self._rows, stacked)
        self._rows, self._vectors, self._failures = [], [], []


@contextlib.contextmanager
def embedding_slot(path: str | Path, wait: float = math.inf) -> Iterator[None]:
    """The one bulk-embedding run of the collection at `path` (created if need be): another run
    waits up to `wait` seconds for it, then finds its work done. A folder this made and left
    without a collection (the embedder could not be built, say) is removed again."""
    path = Path(path)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(
        path / EMBED_LOCK,
        wait,
        on_wait=lambda: log.warning("%s: waiting for another embedding run to finish", path),
        what="embedded",
    )
    try:
        yield
    finally:
        lock.close()
        if made and not (path / MANIFEST).exists():
            shutil.rmtree(path, ignore_errors=True)
