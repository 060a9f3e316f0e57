"""Live writes: a collection open with its index, kept in step by every write, from any process.

`LiveCollection` is what the server runs on and what a Python user gets: add images (stored,
embedded, appended as a fsynced shard, then indexed) and delete items (tombstoned, then
unindexed), each durable when the call returns and serialised by the collection's lock; reads
that first catch the index up with writes made by other processes (a bulk job, another server
worker), told by the collection's generation (two `stat`s).

A write durable on disk whose store write fails (a shared store that is down) raises
`WritePending`: the write stands, the store catches up on the next call once it is back, and
retrying the request is safe (the same bytes keep their id; a deleted item stays deleted).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lookalike.durable import acquire_lock
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS
from lookalike.errors import (
    CollectionBusy,
    CollectionError,
    FolderGone,
    VectorStoreUnavailable,
    WritePending,
)
from lookalike.store.collection import Collection
from lookalike.store.ingest import Added, Upload, add_uploads
from lookalike.store.layout import MANIFEST, WRITE_LOCK

from .maintain import exact_index, prepare_index, sync_index
from .search import Searcher

WRITE_WAIT_SECONDS = 30.0

log = logging.getLogger(__name__)


class LiveCollection:
    """A collection, its writable index and embedder; safe to share between threads."""

    def __init__(self, searcher: Searcher, wait: float = WRITE_WAIT_SECONDS) -> None:
        self._searcher = searcher
        self.wait = wait
        self._writing = threading.Lock()  # this process's one writer (the file lock: any process)
        self._syncing = threading.Lock()  # changes to the live index and item table
        self._seen = searcher.collection.generation()
        self._pending = False  # writes on disk the store could not take yet (it was down)

    @classmethod
    def open(
        cls,
        path: str | Path,
        wait: float = WRITE_WAIT_SECONDS,
        store: str | None = None,
        name: str | None = None,
    ) -> LiveCollection:
        """The collection at `path` with its saved index (built or caught up first: see
        `prepare_index`); an empty collection gets an empty exact index, filled by writes.
        With `store` (a Milvus URI, see `milvus_sync`; `name` the Milvus collection's where the
        URI names none), searches and writes go to that shared store instead: created if
        missing, and reconciled with the collection first (ids missing on either side)."""
        collection = Collection.open(path)
        generation = collection.generation()
        layer = collection.spec.layers[0]
        if store is not None:
            from .milvus_sync import open_milvus, reconcile

            vectors = open_milvus(store, collection, layer, create=True, default_name=name)
            reconcile(vectors, wait)
            return cls(Searcher(collection, vectors, layer), wait)
        collection, index = prepare_index(Path(path), read_only=False)
        live = cls(Searcher(collection, index or exact_index(collection, layer), layer), wait)
        live._seen = generation  # what `prepare_index` caught up with, at the latest
        return live

    @property
    def collection(self) -> Collection:
        return self._searcher.collection

    def searcher(self) -> Searcher:
        """The searcher, first caught up with writes made elsewhere: a catch-up is short, so a
        reader waits for one under way rather than answer without an item another process
        acknowledged (even while a write of this process is under way). Pending writes are
        applied first where the store is back."""
        self.check_folder()
        if self._pending:
            self._apply_pending()
        if self.collection.generation() != self._seen:
            with self._syncing:
                generation = self.collection.generation()  # before the sync: nothing missed
                if generation != self._seen:
                    self._catch_up(full=False)
                    self._seen = generation
        return self._searcher

    @property
    def current(self) -> Searcher:
        """The searcher as it stands, not caught up first: for readiness and metrics, which must
        not trigger index work."""
        return self._searcher

    def check_folder(self) -> None:
        """`FolderGone` if the collection's folder is gone (deleted or unmounted)."""
        check_folder(self.collection.path)

    def check_ready(self) -> None:
        """Raise unless this collection can answer now: its folder is there and its vector store
        answers (`ping`: a shared store restarted is reloaded); pending writes are applied."""
        self.check_folder()
        ping = getattr(self._searcher.vector_store, "ping", None)
        if ping is not None:
            ping()
        if self._pending:
            self._apply_pending()

    def catch_up(self) -> tuple[int, int]:
        """Bring the live index up to the collection now (after a bulk job); (added, removed).
        A store that cannot take it leaves it pending (applied once the store is back)."""
        with self._syncing:
            try:
                return self._catch_up()
            except VectorStoreUnavailable:
                self._pending = True
                raise

    def add_images(
        self, uploads: Sequence[Upload], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> list[Added]:
        """Store, embed and append images, then index them; durable when this returns. The same
        bytes again give the existing item (`Added.created` False)."""
        with self.writing() as searcher:
            added, ids, vectors = add_uploads(
                searcher.collection, searcher.backbone(), uploads, max_pixels, wait=self.wait
            )
            with self._store_write([item.id for item in added], "stored"):
                with self._syncing:  # a reader's catch-up may have indexed them already
                    fresh = ~searcher.vector_store.has(ids)
                    if fresh.any():
                        searcher.refresh_items()  # before the index can return the new ids
                        fields = _fields(added, uploads, ids[fresh])
                        xb = vectors[searcher.layer][fresh]
                        searcher.vector_store.upsert(ids[fresh], xb, fields)
                if searcher.vector_store.shared:
                    _store_existing(searcher, [item.id for item in added if not item.created])
        return added

    def delete(self, ids: Sequence[int]) -> None:
        """Tombstone items durably (an unknown or deleted id raises `UnknownItem` first), then
        drop them from the live index."""
        with self.writing() as searcher:
            with searcher.collection.writer(wait=self.wait) as writer:
                writer.delete(ids)
            with self._store_write(list(ids), "deleted (gone from search)"), self._syncing:
                searcher.refresh_items()  # first: its hits are skipped from now on
                searcher.vector_store.remove(ids)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Searcher]:
        """This process's write slot; `CollectionBusy` if another write holds it past `wait`."""
        searcher = self.searcher()
        if not self._writing.acquire(timeout=self.wait):
            raise CollectionBusy(
                f"collection {self.collection.path} is busy with another write; retry shortly"
            )
        try:
            yield searcher
        finally:
            self._writing.release()

    def close(self) -> None:
        self._searcher.close()

    @contextlib.contextmanager
    def _store_write(self, ids: list[int], done: str) -> Iterator[None]:
        """The store's half of a write already durable on disk: if the store cannot take it,
        the write is pending (applied by the next call once the store is back): `WritePending`."""
        try:
            yield
        except VectorStoreUnavailable as error:
            self._pending = True
            raise WritePending(
                f"items {ids} are {done} in the collection (durable), but not yet in the vector "
                f"store ({error}); they reach it when it is back, and retrying is safe (the same "
                "image keeps its id; a deleted item stays deleted)",
                ids,
            ) from None

    def _apply_pending(self) -> None:
        """Bring the store in step with the collection under its write lock (as a server's
        start-up reconcile), once the store is back; left pending while it is not."""
        with self._syncing:
            if not self._pending:
                return
            try:
                with acquire_lock(self.collection.path / WRITE_LOCK, self.wait):
                    added, removed = self._catch_up()
            except (VectorStoreUnavailable, CollectionError) as error:
                log.warning("pending writes not yet in the vector store: %s", error)
                return
            self._pending = False
            log.info(
                "pending writes applied to the vector store: %d added, %d removed", added, removed
            )

    def _catch_up(self, full: bool = True) -> tuple[int, int]:
        """Items re-read, then the store brought in step; a shared store (Milvus) only when
        `full` (its writers write it themselves: no per-write scan of every id)."""
        searcher = self._searcher
        searcher.refresh_items()  # first: hits for ids not (or no longer) in it are skipped
        if searcher.vector_store.shared and not full:
            return 0, 0
        return sync_index(searcher.vector_store, searcher.collection, searcher.layer)


def check_folder(path: Path) -> None:
    """`FolderGone` unless `path` still holds a collection (its manifest)."""
    if not (Path(path) / MANIFEST).is_file():
        raise FolderGone(
            f"the folder of collection {path} is gone (deleted, moved or unmounted); restore it, "
            "or stop serving it"
        )


def _fields(added: Sequence[Added], uploads: Sequence[Upload], ids: np.ndarray) -> dict:
    """The label and path of each new item in `ids`, for stores that filter themselves."""
    label_of: dict[int, str | None] = {}
    for item, upload in zip(added, uploads, strict=True):
        label_of.setdefault(item.id, upload.label)  # the same bytes twice: the first one's
    path_of = {item.id: item.path for item in added}
    return {
        "label": [label_of[i] for i in ids.tolist()],
        "path": [path_of[i] for i in ids.tolist()],
    }


def _store_existing(searcher: Searcher, ids: list[int]) -> None:
    """Existing items answered again (the same bytes) into a shared store that lacks them: a
    replica killed between its disk write and its store write left them out."""
    if not ids:
        return
    store, wanted = searcher.vector_store, np.unique(np.asarray(ids, np.int64))
    missing = wanted[~store.has(wanted)]
    if len(missing):
        store.upsert(missing, searcher.collection.vectors(missing, searcher.layer))
