"""The served collections, each opened once per process as a live `service.Library` (its index,
embedder and classifiers); per-process caching and the HTTP side only."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from lookalike import service
from lookalike.errors import FolderGone, LookalikeError, VectorStoreUnavailable
from lookalike.index import Searcher
from lookalike.index.live import check_folder
from lookalike.store.collection import Collection
from lookalike.store.ingest import Added, Upload

from .decoding import PixelBudget
from .errors import ApiError
from .jobs import RunningJob
from .settings import Settings

DECODE_BUDGET_IMAGES = 2  # a process decodes at most this many max_pixels images at once
READY_CACHE_SECONDS = 1.5  # a readiness check (a stat, a Milvus ping) answers probes this long


class Served:
    """Lazily opened collections and predictors by name; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._live: dict[str, service.Library] = {}
        self._readiness: dict[str, tuple[float, str]] = {}  # name -> (checked at, state)
        self.decode_budget = PixelBudget(DECODE_BUDGET_IMAGES * settings.max_pixels)

    def names(self) -> list[str]:
        return sorted(self.settings.collections)

    def path(self, name: str) -> Path:
        if name not in self.settings.collections:
            raise ApiError(
                404, f"no collection named {name!r}; served: {', '.join(self.names()) or 'none'}"
            )
        return self.settings.collections[name]

    def folder(self, name: str) -> Path:
        """The collection's folder: 404 for a name not served, 503 naming it if it is gone."""
        path = self.path(name)
        try:
            check_folder(path)
        except FolderGone as error:
            raise ApiError(503, f"collection {name!r}: {error}") from None
        return path

    def live(self, name: str) -> service.Library:
        """The collection open live with its index (opened once per process)."""
        path = self.folder(name)
        with self._lock:
            if name not in self._live:
                self._live[name] = service.open(
                    path, live=True, store=self.settings.store, store_name=name
                )
            return self._live[name]

    def searcher(self, name: str) -> Searcher:
        """The collection's searcher, in step with what every process has written to it."""
        return self.live(name).searcher()

    def embed_folder(
        self,
        name: str,
        folder: Path,
        labels_from_folders: bool,
        job: RunningJob,
        prune: bool = False,
    ) -> dict:
        """Bring a served collection in step with a folder, then its live index (a job's work).
        The write lock is taken per shard commit only, so uploads and deletes go on meanwhile;
        only files whose real path lies in an allowed root are read."""
        done = self.live(name).embed_folder(
            folder,
            labels_from_folders,
            prune,
            within=self.settings.allowed_roots,
            max_pixels=self.settings.max_pixels,
            on_progress=job.progress,
            should_stop=job.cancel_requested,
        )
        report = done.report
        return {
            "found": report.found,
            "embedded": report.embedded,
            "changed": report.changed,
            "removed": report.removed,
            "skipped": report.skipped_done + report.skipped_known_bad,
            "failed": len(report.failed),
            "indexed": done.indexed,
            "unindexed": done.unindexed,
            "images_per_second": round(report.images_per_second, 2),
        }

    def add_images(self, name: str, uploads: list[Upload], pixels: int = 0) -> list[Added]:
        """Store, embed and append uploads, then index them; durable on return. `pixels`: the
        largest upload's, taken from this process's decode budget while they are decoded."""
        with self.decode_budget.take(pixels):
            return self.live(name).add_images(uploads, self.settings.max_pixels)

    def delete_item(self, name: str, item_id: int) -> None:
        """Tombstone an item durably, then drop it from the live index."""
        self.live(name).delete([item_id])

    def collection(self, name: str) -> Collection:
        with self._lock:
            if name in self._live:
                return self._live[name].collection
        return Collection.open(self.folder(name))

    def forget_predictor(self, name: str, classifier: str) -> None:
        """Drop a cached classifier of an opened collection (it was retrained)."""
        with self._lock:
            library = self._live.get(name)
        if library is not None:
            library.forget_predictor(classifier)

    def index_sizes(self) -> dict[str, int]:
        with self._lock:
            live = dict(self._live)
        sizes = {}
        for name, collection in live.items():
            with contextlib.suppress(VectorStoreUnavailable):  # a scrape still answers
                sizes[name] = len(collection.current.vector_store)
        return sizes

    def warm(self) -> None:
        """Open every collection's index and embedder now (what /readyz reports)."""
        for name in self.names():
            self.searcher(name).backbone()

    def ready(self) -> dict[str, str]:
        """Each collection's state: "ready" where it is loaded, its folder is there and its
        vector store answers (checked at most every `READY_CACHE_SECONDS`), else why not."""
        with self._lock:
            live = dict(self._live)
        return {name: self._state(name, live.get(name)) for name in self.names()}

    def _state(self, name: str, live: service.Library | None) -> str:
        if live is None or not live.current.embedder_loaded:
            return "not loaded"
        checked_at, state = self._readiness.get(name, (-READY_CACHE_SECONDS, ""))
        if time.monotonic() - checked_at < READY_CACHE_SECONDS:
            return state
        try:
            live.check_ready()
            state = "ready"
        except LookalikeError as error:
            state = f"not ready: {error}"
        self._readiness[name] = (time.monotonic(), state)
        return state

    def close(self) -> None:
        with self._lock:
            for collection in self._live.values():
                collection.close()
            self._live.clear()
