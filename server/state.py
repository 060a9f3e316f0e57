"""The served collections, each opened once per process with its index, embedder and classifiers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lookalike.classify import Predictor
from lookalike.classify.store import classifier_dir
from lookalike.index import (
    IndexMismatch,
    Searcher,
    VectorIndex,
    build_index,
    has_index,
    open_index,
    update_index,
)
from lookalike.index.maintain import exact_index, sync_index
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection
from lookalike.store.ingest import Added, Upload, add_uploads

from .decoding import PixelBudget
from .errors import ApiError
from .jobs import RunningJob
from .settings import Settings

WRITE_WAIT_SECONDS = 30.0
DECODE_BUDGET_IMAGES = 2  # a process decodes at most this many max_pixels images at once


class Served:
    """Lazily opened searchers and predictors by collection name; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._searchers: dict[str, Searcher] = {}
        self._predictors: dict[tuple[str, str], tuple[float, Predictor]] = {}
        self._writing = {name: threading.Lock() for name in settings.collections}  # one writer
        self._syncing = {name: threading.Lock() for name in settings.collections}  # index changes
        self._seen: dict[str, tuple[int, int]] = {}  # each collection's generation, as last synced
        self.decode_budget = PixelBudget(DECODE_BUDGET_IMAGES * settings.max_pixels)

    def names(self) -> list[str]:
        return sorted(self.settings.collections)

    def path(self, name: str) -> Path:
        if name not in self.settings.collections:
            raise ApiError(
                404, f"no collection named {name!r}; served: {', '.join(self.names()) or 'none'}"
            )
        return self.settings.collections[name]

    def searcher(self, name: str) -> Searcher:
        """The collection with its index, in step with what every process has written to it.

        Other server workers (processes) add and delete items too: a change of the collection's
        generation (two stats a request) makes this process catch its index and items up first.
        """
        path = self.path(name)
        with self._lock:
            if name not in self._searchers:
                generation = Collection.open(path).generation()
                self._searchers[name] = _open_searcher(path)
                self._seen[name] = generation
            searcher = self._searchers[name]
        if searcher.collection.generation() != self._seen.get(name):
            self._sync(name, searcher)
        return searcher

    def _sync(self, name: str, searcher: Searcher) -> None:
        """Catch up with writes made elsewhere, before answering: a catch-up is short, so a reader
        waits for one under way rather than answer without an item another worker acknowledged
        (even while a write of its own process holds the write slot)."""
        with self._syncing[name]:
            generation = searcher.collection.generation()  # before the sync: nothing missed
            if generation != self._seen.get(name):
                self.catch_up(searcher)
                self._seen[name] = generation

    @contextlib.contextmanager
    def writing(self, name: str, wait: float = WRITE_WAIT_SECONDS) -> Iterator[Searcher]:
        """The collection's one write slot (its searcher), or 409 if a job holds it too long."""
        searcher = self.searcher(name)
        if not self._writing[name].acquire(timeout=wait):
            raise ApiError(
                409,
                f"collection {name!r} is busy with another write (an embed job?); retry shortly",
                headers={"Retry-After": "5"},
            )
        try:
            yield searcher
        finally:
            self._writing[name].release()

    def catch_up(self, searcher: Searcher) -> tuple[int, int]:
        """Bring the live index up to the collection (after a bulk embed); (added, removed)."""
        searcher.refresh_items()  # first: hits for ids not (or no longer) in it are skipped
        return sync_index(searcher.index, searcher.collection, searcher.layer)

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
        searcher = self.searcher(name)
        try:
            report = embed_images(
                [folder],
                searcher.collection.path,
                labels_from_folders=labels_from_folders,
                prune=prune,
                within=self.settings.allowed_roots,
                progress=False,
                max_pixels=self.settings.max_pixels,
                on_progress=job.progress,
                should_stop=job.cancel_requested,
            )
        finally:  # shards written before a failure are durable: make them searchable too
            with self._syncing[name]:
                added, removed = self.catch_up(searcher)
        return {
            "found": report.found,
            "embedded": report.embedded,
            "changed": report.changed,
            "removed": report.removed,
            "skipped": report.skipped_done + report.skipped_known_bad,
            "failed": len(report.failed),
            "indexed": added,
            "unindexed": removed,
            "images_per_second": round(report.images_per_second, 2),
        }

    def add_images(self, name: str, uploads: list[Upload], pixels: int = 0) -> list[Added]:
        """Store, embed and append uploads, then add them to the live index; durable on return.
        `pixels`: the largest upload's, taken from the decode budget while they are decoded."""
        with self.writing(name) as searcher, self.decode_budget.take(pixels):
            added, ids, vectors = add_uploads(
                searcher.collection,
                searcher.backbone(),
                uploads,
                self.settings.max_pixels,
                wait=WRITE_WAIT_SECONDS,  # another worker process may be writing
            )
            with self._syncing[name]:  # a reader's catch-up may have indexed them already
                fresh = ~np.isin(ids, searcher.index.ids())
                if fresh.any():
                    searcher.refresh_items()  # before the index can return the new ids
                    searcher.index.add(ids[fresh], vectors[searcher.layer][fresh])
        return added

    def delete_item(self, name: str, item_id: int) -> None:
        """Tombstone an item durably, then drop it from the live index."""
        with self.writing(name) as searcher:
            with searcher.collection.writer(wait=WRITE_WAIT_SECONDS) as writer:
                writer.delete([item_id])
            with self._syncing[name]:
                searcher.index.remove([item_id])
                searcher.refresh_items()

    def collection(self, name: str) -> Collection:
        with self._lock:
            if name in self._searchers:
                return self._searchers[name].collection
        return Collection.open(self.path(name))

    def predictor(self, name: str, classifier: str) -> Predictor:
        """The named classifier over the collection's searcher; reloaded when it is retrained."""
        searcher = self.searcher(name)
        card = classifier_dir(searcher.collection, classifier) / "card.json"
        stamp = card.stat().st_mtime if card.exists() else -1.0
        with self._lock:
            cached = self._predictors.get((name, classifier))
            if cached and cached[0] == stamp:
                return cached[1]
        predictor = Predictor.from_searcher(searcher, classifier)
        with self._lock:
            self._predictors[(name, classifier)] = (stamp, predictor)
        return predictor

    def forget_predictor(self, name: str, classifier: str) -> None:
        with self._lock:
            self._predictors.pop((name, classifier), None)

    def index_sizes(self) -> dict[str, int]:
        with self._lock:
            return {name: len(searcher.index) for name, searcher in self._searchers.items()}

    def warm(self) -> None:
        """Open every collection's index and embedder now (what /readyz reports)."""
        for name in self.names():
            self.searcher(name).backbone()

    def ready(self) -> dict[str, str]:
        with self._lock:
            return {
                name: "ready"
                if name in self._searchers and self._searchers[name].embedder_loaded
                else "not loaded"
                for name in self.names()
            }

    def close(self) -> None:
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers.clear()
            self._predictors.clear()


def prepare_index(path: Path, read_only: bool = True) -> tuple[Collection, VectorIndex | None]:
    """The collection and its saved index, built or caught up with the collection (and saved)
    first; None for an empty collection with no index yet. `serve()` calls it once before the
    workers start, so no worker has to build or catch up (uploads since the last save)."""
    collection = Collection.open(path)
    layer = collection.spec.layers[0]
    if not has_index(collection.path, layer):
        if not len(collection):
            return collection, None
        build_index(collection, layer, progress=False)
    try:
        return collection, open_index(collection, layer, read_only=read_only)
    except IndexMismatch:
        update_index(collection, layer)
        return collection, open_index(collection, layer, read_only=read_only)


def _open_searcher(path: Path) -> Searcher:
    """A writable searcher over the prepared index; an empty collection gets an empty exact
    index, filled by uploads (and saved for real at the next start)."""
    collection, index = prepare_index(path, read_only=False)
    layer = collection.spec.layers[0]
    return Searcher(collection, index or exact_index(collection, layer), layer)
