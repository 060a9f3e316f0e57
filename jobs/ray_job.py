"""Bulk embedding on a Ray cluster with Ray Data; the commit rule is `lookalike.jobs.tasks`'.

Each actor of an autoscaling pool loads the backbone once (ONNX Runtime with as many threads as
the actor has CPUs, so actors never oversubscribe a node; torch on a GPU where the cluster has
GPUs) and embeds whole tasks with the local job's loop: the same decoding, limits and failure
records. An actor that sees the collection's folder (a local cluster, or a file system every
node mounts) stages its task there; one that does not sends the output back and the driver
stages it. The driver adopts each staged task once, as tasks finish.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lookalike import errors
from lookalike.durable import remove_temporaries
from lookalike.embedder.engines import OnnxEngine
from lookalike.embedder.sources import ImageSource
from lookalike.embedder.spec import BackboneSpec
from lookalike.errors import Cancelled, InvalidArgument, LookalikeError
from lookalike.jobs.embedding import default_pipeline, embedded_batches
from lookalike.jobs.report import EmbedReport
from lookalike.jobs.tasks import (
    StagedTask,
    Task,
    clear_staging,
    pack_task,
    plan_tasks,
    read_staged,
    stage_task,
    staging_dir,
    unpack_task,
)
from lookalike.store.collection import Collection

log = logging.getLogger(__name__)

RAY_MISSING = "Ray is not installed; install it with: pip install 'lookalike[ray]'"
COMMIT_WAIT_SECONDS = 300.0
LOCAL = "local"
REACH_SECONDS = 5.0  # a cluster address that does not answer a TCP connect within this is refused


class RayFailed(LookalikeError):
    """The Ray cluster could not be reached, or the job failed on it."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a job runs. `address`: None or "local" starts Ray on this machine;
    "auto" or "ray://host:10001" joins a running cluster. `actors`: the autoscaling pool's
    (min, max); None means 1 up to what the cluster's CPUs (or GPUs) hold."""

    address: str | None = None
    actors: tuple[int, int] | None = None
    cpus_per_actor: float = 1.0

    def __post_init__(self) -> None:
        if self.actors is not None:
            low, high = self.actors
            if not 1 <= low <= high:
                raise InvalidArgument(
                    f"actors must be (min, max) with 1 <= min <= max, got {self.actors}"
                )
        if self.cpus_per_actor <= 0:
            raise InvalidArgument(f"cpus_per_actor must be positive, got {self.cpus_per_actor}")


def check_ray(options: RayOptions) -> None:
    """Before anything is planned or written: Ray installed, and a cluster address given that
    answers (Ray itself waits minutes on a wrong one)."""
    import_ray()
    address = options.address
    if address in (None, LOCAL, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except ValueError:
        raise InvalidArgument(
            f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local"
        ) from None
    except OSError as error:
        raise RayFailed(f"cannot reach the Ray cluster at {address}: {error}") from None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayFailed(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[float]:
    """Ray, joined or started (and stopped after) unless this process already runs it; yields
    the seconds start-up took."""
    ray = import_ray()
    if ray.is_initialized():
        yield 0.0
        return
    started = time.perf_counter()
    try:
        ray.init(
            address=None if address in (None, LOCAL) else address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False,
        )
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise RayFailed(f"cannot reach the Ray cluster at {address}: {error}") from None
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


class TaskEmbedder:
    """A Ray Data actor: loads the backbone once, then embeds and stages whole tasks."""

    def __init__(
        self,
        collection_dir: str,
        run_token: str,
        spec: dict[str, Any],
        threads: int,
        device: str,
        batch_size: int | None,
        max_pixels: int,
        engine_file: str | None = None,
    ) -> None:
        torch.set_num_threads(threads)
        self.staging = staging_dir(Path(collection_dir))
        self.visible = (self.staging / run_token).exists()  # this node mounts the collection
        wanted = BackboneSpec.from_dict(spec)
        self.backbone = _checked_export(wanted, engine_file, threads) if device == "cpu" else None
        if self.backbone is None:  # no export to reuse: build the model, as the local job does
            from lookalike.embedder.build import get_backbone, spec_arguments  # timm, torch hub
            from lookalike.embedder.export import use_engine

            backbone = get_backbone(**spec_arguments(wanted), device=device)
            engine_home = collection_dir if self.visible else None
            engine = "auto" if engine_file else "torch"  # the driver ran torch: so do its actors
            self.backbone = use_engine(backbone, engine, engine_home, threads=threads)
        decoders = threads if device == "cpu" else None  # a GPU's reader threads: its own default
        self.pipeline = default_pipeline(self.backbone.device, batch_size, decoders, max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        receipts: dict[str, list[Any]] = {"key": [], "payload": [], "error": []}
        for key, sources in zip(batch["key"], batch["sources"], strict=True):
            task = Task.from_row({"key": key, "sources": sources})
            payload, error = b"", ""
            try:
                rows, vectors, failures = embed_task(self.backbone, self.pipeline, task.sources)
                if self.visible:
                    stage_task(self.staging, task.key, rows, vectors, failures)
                else:
                    payload = pack_task(rows, vectors, failures)
            except LookalikeError as failed:  # a full disk: sent back whole, not as Ray's chain
                error = f"{type(failed).__name__}: {failed}"
            receipts["key"].append(task.key)
            receipts["payload"].append(payload)
            receipts["error"].append(error)
        return {
            "key": np.array(receipts["key"]),
            "payload": np.array(receipts["payload"], object),
            "error": np.array(receipts["error"], object),
        }


@dataclass
class ExportedBackbone:
    """What the embedding loop needs of a backbone, from an ONNX export alone: no torch model is
    built, so an actor starts in a second or two."""

    spec: BackboneSpec
    engine: OnnxEngine

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def embed(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        return self.engine.run(pixels.numpy())


def _checked_export(
    spec: BackboneSpec, engine_file: str | None, threads: int
) -> ExportedBackbone | None:
    """The export the driver checked against torch in this run (`use_engine`), where this node
    sees it and it was made for `spec`; else None."""
    if engine_file is None or not Path(engine_file).is_file():
        return None
    try:
        engine = OnnxEngine(Path(engine_file), spec.layers, threads)
    except Exception as error:  # onnxruntime's own errors: a damaged or partial file
        log.warning("cannot reuse the export %s: %s", engine_file, error)
        return None
    return ExportedBackbone(spec, engine) if engine.fingerprint == spec.fingerprint() else None


def embed_task(
    backbone: Any, pipeline: Any, sources: tuple[ImageSource, ...]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, Any]]]:
    """One task's item rows, vectors by layer (same row order) and failures."""
    rows: list[dict[str, Any]] = []
    blocks: list[dict[str, np.ndarray]] = []
    failures: list[dict[str, Any]] = []
    for batch, vectors in embedded_batches(backbone, pipeline, sources):
        rows += batch.items
        failures += batch.failures
        if vectors is not None:
            blocks.append(vectors)
    dims = backbone.spec.dims
    stacked = {
        layer: np.concatenate([b[layer] for b in blocks])
        if blocks
        else np.empty((0, dim), np.float32)
        for layer, dim in dims.items()
    }
    return rows, stacked, failures


@dataclass
class _Run:
    """The driver's side of one job: what is adopted, and the report it fills."""

    collection: Collection
    report: EmbedReport
    bar: tqdm
    total: int
    on_progress: Callable[[int, int], None] | None
    adopted: set[str]

    def adopt(self, key: str, staged: StagedTask) -> None:
        """Commit a staged task once: its failures, then its folder as a shard."""
        if key in self.adopted:
            return
        with self.collection.writer(wait=COMMIT_WAIT_SECONDS) as writer:
            for failure in staged.failures:
                writer.record_failure(failure)
            writer.adopt(staged.folder, staged.rows)
        self.adopted.add(key)
        for failure in staged.failures:
            log.warning("skipped %s: %s", failure["path"], failure["reason"])
        self.report.embedded += len(staged.rows)
        self.report.failed.extend(staged.failures)
        done = len(staged.rows) + len(staged.failures)
        self.bar.update(done)
        self.bar.set_postfix(tasks=len(self.adopted), refresh=False)
        if self.on_progress is not None:
            self.on_progress(self.report.embedded + len(self.report.failed), self.total)


def run_on_ray(
    collection: Collection,
    todo: list[ImageSource],
    report: EmbedReport,
    options: RayOptions,
    *,
    engine_file: Path | None,
    shard_size: int,
    batch_size: int | None,
    max_pixels: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Embed `todo` on Ray into `collection` (the caller holds its embedding slot), one task per
    `shard_size` sources; tasks staged by an earlier, killed run are adopted, not embedded again.
    `engine_file`: the ONNX export the driver checked, which CPU actors that see it run as is."""
    tasks = plan_tasks(todo, collection.spec.fingerprint(), shard_size)
    staging = staging_dir(collection)
    ready = {t.key: s for t in tasks if (s := read_staged(staging, t.key)) is not None}
    clear_staging(staging, keep=ready)  # left by a killed run, for work since done or changed
    if not tasks:
        return
    token = f".run-{uuid.uuid4().hex}"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / token).touch()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, desc="embedding on ray")
    run = _Run(collection, report, bar, len(todo), on_progress, set())
    try:
        with ray_session(options.address) as startup:
            report.startup_seconds = startup
            started = time.perf_counter()
            try:
                for key, staged in ready.items():
                    run.adopt(key, staged)
                waiting = [t for t in tasks if t.key not in ready]
                if waiting:
                    settings = {"run_token": token, "batch_size": batch_size,
                                "max_pixels": max_pixels, "engine_file": engine_file}  # fmt: skip
                    _embed_tasks(run, waiting, options, settings, should_stop)
            finally:
                report.seconds = time.perf_counter() - started
    finally:
        bar.close()
        (staging / token).unlink(missing_ok=True)
        # the session is over: what attempts killed mid-write (a node lost) left is garbage
        remove_temporaries(staging)


def _embed_tasks(
    run: _Run,
    tasks: list[Task],
    options: RayOptions,
    settings: dict[str, Any],
    should_stop: Callable[[], bool] | None,
) -> None:
    ray = import_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus_per_actor))
    low, high = options.actors or (1, min(len(tasks), gpus or cpus))
    run.report.engine = f"ray: {low}-{high} actors on {'GPU' if gpus else 'CPU'}"
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    dataset = ray.data.from_items([t.to_row() for t in tasks], override_num_blocks=len(tasks))
    receipts = dataset.map_batches(
        TaskEmbedder,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=max(low, high)),
        num_cpus=options.cpus_per_actor,
        num_gpus=1 if gpus else 0,
        fn_constructor_kwargs={
            **settings,
            "engine_file": None
            if gpus or not settings["engine_file"]
            else str(settings["engine_file"]),
            "collection_dir": str(run.collection.path),
            "spec": run.collection.spec.to_dict(),
            "threads": max(1, int(options.cpus_per_actor)),
            "device": "cuda" if gpus else "cpu",
        },
    )  # Ray Data's actors restart and retry tasks forever (a node lost): staging makes it harmless
    staging = staging_dir(run.collection)
    try:
        for receipt in receipts.iter_rows():
            key = str(receipt["key"])
            if receipt["error"]:
                raise library_error(str(receipt["error"]))
            if receipt["payload"]:  # the actor could not see the collection: stage it here
                stage_task(staging, key, *unpack_task(receipt["payload"]))
            staged = read_staged(staging, key)
            if staged is None and key not in run.adopted:
                raise RayFailed(
                    f"task {key} was staged where this driver cannot see it: every node must "
                    f"mount {run.collection.path} at the same path, or none of them"
                )
            if staged is not None:
                run.adopt(key, staged)
            if should_stop is not None and should_stop():
                raise Cancelled(
                    f"stopped on request after {len(run.adopted)} of {len(tasks)} tasks"
                )
    except ray.exceptions.RayError as error:
        raise RayFailed(f"the Ray job failed: {error}") from None


def library_error(sent: str) -> LookalikeError:
    """The library error an actor sent back as "Name: message" (`TaskEmbedder`), as its own
    class where `lookalike.errors` holds it (`StorageFull`: what to do, in one line)."""
    name, _, message = sent.partition(": ")
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, LookalikeError):
        return kind(message)
    return RayFailed(f"a Ray task failed: {sent}")
