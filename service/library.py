"""One opened collection with its model, vector store and caches: the flows users run, written once.

`open(path)` gives a `Library`; the CLI and the server call its methods and only render the
answers, so a Python user gets what they get. Opened with `read_only=True` it never writes to the
collection's folder: an index that is missing or behind is built or caught up in memory only, a
calibration is measured but not stored, an embedder export is cached in the user's cache (not the
collection's ``engines/``), and writes (`add_images`, `delete`) raise `InvalidArgument`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.embedder.sources import DEFAULT_MAX_PIXELS
from lookalike.errors import InvalidArgument
from lookalike.index.live import LiveCollection, check_folder
from lookalike.index.maintain import exact_index, prepare_index
from lookalike.index.search import Hit, Searcher
from lookalike.index.vector_store import Filters

if TYPE_CHECKING:
    import pyarrow as pa

    from lookalike.classify.predict import Prediction, Predictor
    from lookalike.index.calibrate import Calibrated
    from lookalike.index.dedup import Duplicates
    from lookalike.jobs.report import EmbedReport
    from lookalike.store.collection import Collection
    from lookalike.store.ingest import Added, Upload

MayRead = Callable[[Path, str], bool]


@dataclass(frozen=True)
class Found:
    """The neighbours of one query: its name (a file, ``id N``, an upload's name, ``vector``),
    the file it shows (a query image's or a stored item's path; None for a vector) and its hits."""

    query: str
    path: str | None
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [hit.to_dict() for hit in self.hits]}


@dataclass(frozen=True)
class DedupReport:
    """Near-duplicate clusters at `threshold`, and the calibration that chose it (None when the
    threshold was given)."""

    threshold: float
    calibration: Calibrated | None
    found: Duplicates
    searcher: Searcher = field(repr=False)

    @property
    def clusters(self) -> list[list[int]]:
        return self.found.clusters

    @property
    def items_in_clusters(self) -> int:
        return sum(len(members) for members in self.found.clusters)

    def summary(self) -> str:
        """Pairs, clusters and items in them, and the groups of identical items among them."""
        exact = f" ({len(self.found.exact)} groups of identical items among them)"
        return (
            f"{self.found.pair_count} pairs within {self.threshold:.3f}; "
            f"{len(self.clusters)} clusters, {self.items_in_clusters} items"
            f"{exact if self.found.exact else ''}"
        )

    def item(self, item_id: int) -> dict[str, Any]:
        return self.searcher.item(item_id)

    def cluster_table(self) -> pa.Table:
        """One row per clustered item: its cluster, id, path and label."""
        return self.found.cluster_table(self.searcher)

    def to_dict(self, clusters: int, items_per_cluster: int) -> dict[str, Any]:
        """The report as the HTTP API answers it: the first `clusters`, each with its first
        `items_per_cluster` items."""
        calibration = None
        if self.calibration is not None:
            calibrated = self.calibration
            calibration = {
                **calibrated.calibration.to_dict(),
                "reused": calibrated.reused,
                "stored": calibrated.stored,
            }
        return {
            "threshold": self.threshold,
            "calibration": calibration,
            "pairs": self.found.pair_count,
            "items_in_clusters": self.items_in_clusters,
            "cluster_count": len(self.clusters),
            "exact_groups": len(self.found.exact),
            "clusters": [
                {"size": len(members), "items": [self.item(i) for i in members[:items_per_cluster]]}
                for members in self.clusters[:clusters]
            ],
        }


@dataclass(frozen=True)
class FolderEmbedded:
    """What `Library.embed_folder` did: the bulk job's report, and the items the vector store
    then took in (`indexed`) and let go (`unindexed`)."""

    report: EmbedReport
    indexed: int
    unindexed: int


class Library:
    """A collection opened once: its model (loaded on the first image), its vector store (FAISS
    or Milvus) and its caches (the item table, classifiers); safe to share between threads.

    Opened writable, the first write (`add_images`, `delete`) switches it to a live collection
    (`LiveCollection`: every search first catches up with other processes' writes). See the
    module docstring for what `read_only` guarantees.
    """

    def __init__(
        self,
        path: Path,
        read_only: bool,
        searcher: Searcher | None = None,
        live: LiveCollection | None = None,
        store: str | None = None,
        store_name: str | None = None,
        engine: str = "auto",
    ) -> None:
        if (searcher is None) == (live is None):
            raise InvalidArgument("a Library needs a searcher or a live collection (one)")
        self.path = path
        self.read_only = read_only
        self._searcher = searcher
        self._live = live
        self._store, self._store_name, self._engine = store, store_name, engine
        self._layers: dict[str, Searcher] = {}  # other layers' searchers (a classifier's)
        self._lock = threading.Lock()
        self._predictors: dict[str, tuple[float, Predictor]] = {}

    # ----- what it holds ------------------------------------------------------------------------

    def searcher(self) -> Searcher:
        """The collection with its vector store and embedder (caught up with writes made
        elsewhere, once live)."""
        live = self._live
        return live.searcher() if live is not None else self._searcher  # type: ignore[return-value]

    @property
    def live(self) -> LiveCollection | None:
        """The live collection, once a write (or `open(live=True)`) made one."""
        return self._live

    @property
    def current(self) -> Searcher:
        """The searcher as it stands, not caught up first (readiness, metrics)."""
        return self._live.current if self._live is not None else self._searcher  # type: ignore[return-value]

    @property
    def collection(self) -> Collection:
        return self.current.collection

    @property
    def layer(self) -> str:
        return self.current.layer

    def check_ready(self) -> None:
        """Raise unless this collection can answer now: its folder is there and, once live, its
        vector store answers (pending writes are applied)."""
        if self._live is not None:
            self._live.check_ready()
        else:
            check_folder(self.path)

    def item(self, item_id: int) -> dict[str, Any]:
        """A stored item's fields (id, path, label, ...); `UnknownItem` if there is none."""
        return self.searcher().item(item_id)

    def embed(
        self, images: Sequence[str | Path | bytes], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> np.ndarray:
        """The searched layer's vectors of image files or encoded bytes."""
        return self.searcher().embed_images(images, max_pixels)

    # ----- search -------------------------------------------------------------------------------

    def search_images(
        self,
        images: Sequence[str | Path | bytes],
        k: int | None = 10,
        threshold: float | None = None,
        filters: Filters | None = None,
        names: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Found]:
        """Neighbours of image files or encoded bytes (named by `names`, else their paths)."""
        if names is None:
            names = [
                f"upload {n + 1}" if isinstance(im, bytes) else str(im)
                for n, im in enumerate(images)
            ]
        searcher = self.searcher()
        vectors = searcher.embed_images(images, max_pixels)
        results = searcher.search_vectors(vectors, k, threshold=threshold, filters=filters)
        paths = [None if isinstance(im, bytes) else str(im) for im in images]
        return [Found(*row) for row in zip(names, paths, results, strict=True)]

    def search_ids(
        self,
        ids: Sequence[int],
        k: int | None = 10,
        threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[Found]:
        """Neighbours of stored items (each item itself comes first, at distance 0)."""
        searcher = self.searcher()
        results = searcher.search_ids(ids, k, threshold=threshold, filters=filters)
        paths = [searcher.item(i)["path"] for i in ids]
        return [
            Found(f"id {i}", path, hits) for i, path, hits in zip(ids, paths, results, strict=True)
        ]

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int | None = 10,
        threshold: float | None = None,
        filters: Filters | None = None,
        spec_fingerprint: str | None = None,
    ) -> list[Found]:
        """Neighbours of vectors from this collection's embedder (`spec_fingerprint`, when
        given, is checked against it)."""
        results = self.searcher().search_vectors(
            vectors, k, threshold=threshold, filters=filters, spec_fingerprint=spec_fingerprint
        )
        return [Found("vector", None, hits) for hits in results]

    # ----- dedup --------------------------------------------------------------------------------

    def dedup(
        self,
        threshold: float | None = None,
        filters: Filters | None = None,
        recalibrate: bool = False,
        may_read: MayRead | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: bool = False,
    ) -> DedupReport:
        """Every pair of near-duplicate items (within `threshold`), grouped in clusters. With no
        threshold, one calibrated on the collection (`calibrated_threshold`: the stored one while
        it fits, else measured and stored unless read-only); `may_read` says which item files
        the calibration may read."""
        from lookalike.index.calibrate import calibrated_threshold
        from lookalike.index.dedup import find_duplicates

        searcher = self.searcher()
        calibrated = None
        if threshold is None:
            options: dict[str, Any] = {"max_pixels": max_pixels, "progress": progress}
            if may_read is not None:
                options["may_read"] = may_read
            calibrated = calibrated_threshold(
                searcher,
                recalibrate=recalibrate,
                filters=filters,
                save=not self.read_only,
                **options,
            )
            threshold = calibrated.calibration.threshold
        found = find_duplicates(searcher, threshold, filters, progress=progress)
        return DedupReport(threshold, calibrated, found, searcher)

    # ----- writes -------------------------------------------------------------------------------

    def add_images(
        self, uploads: Sequence[Upload], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> list[Added]:
        """Store, embed and append images, then index them; durable when this returns."""
        return self._writable().add_images(uploads, max_pixels)

    def delete(self, ids: Sequence[int]) -> None:
        """Tombstone items durably, then drop them from the vector store."""
        self._writable().delete(ids)

    def embed_folder(
        self,
        folder: str | Path,
        labels_from_folders: bool = False,
        prune: bool = False,
        **options: Any,
    ) -> FolderEmbedded:
        """Bring the collection in step with the images under `folder` (`jobs.bulk.embed_images`:
        `options` such as `within`, `max_pixels`, `on_progress`, `should_stop`), then the vector
        store; shards committed before a failure are made searchable all the same. The write
        lock is taken per shard commit, so adds and deletes go on meanwhile."""
        from lookalike.jobs.bulk import embed_images

        self._writable()
        try:
            report = embed_images(
                [folder],
                self.path,
                labels_from_folders=labels_from_folders,
                prune=prune,
                progress=options.pop("progress", False),
                **options,
            )
        finally:  # shards written before a failure are durable: make them searchable too
            added, removed = self.catch_up()
        return FolderEmbedded(report, added, removed)

    def catch_up(self) -> tuple[int, int]:
        """Bring the vector store up to the collection now (after a bulk job); (added, removed)."""
        return self._writable().catch_up()

    def _writable_folder(self) -> None:
        if self.read_only:
            raise InvalidArgument(
                f"collection {self.path} was opened read-only: open it with read_only=False to change it"
            )

    def _writable(self) -> LiveCollection:
        self._writable_folder()
        with self._lock:
            if self._live is None:
                searcher = self._searcher
                if searcher is not None and searcher.layer != searcher.collection.spec.layers[0]:
                    raise InvalidArgument(
                        f"writes keep the first layer's index; open {self.path} without layer="
                    )
                self._live = LiveCollection.open(
                    self.path, store=self._store, name=self._store_name
                )
                # the reader's searcher stays open (a search may be using it) until `close`
                self._predictors.clear()  # they searched it
            return self._live

    # ----- predict ------------------------------------------------------------------------------

    def predictor(self, classifier: str) -> Predictor:
        """The named classifier with a searcher of its layer (this library's own where it is
        the searched layer, sharing its index and model); reloaded when it is retrained (its
        card changed). A live library searches one layer: a classifier of another is refused."""
        from lookalike.classify.predict import Predictor
        from lookalike.classify.store import classifier_dir, read_card

        collection = self.collection
        card = classifier_dir(collection, classifier) / "card.json"
        stamp = card.stat().st_mtime if card.exists() else -1.0
        with self._lock:
            cached = self._predictors.get(classifier)
        if cached and cached[0] == stamp:
            return cached[1]
        layer = read_card(collection, classifier)["layer"]  # unknown: `UnknownClassifier`
        predictor = Predictor.from_searcher(self._searcher_of(layer), classifier)
        with self._lock:
            self._predictors[classifier] = (stamp, predictor)
        return predictor

    def _searcher_of(self, layer: str) -> Searcher:
        """A searcher of `layer`: this library's own, else one opened the same way (once)."""
        searcher = self.searcher()
        if layer == searcher.layer or self._live is not None:
            return searcher
        with self._lock:
            if layer not in self._layers:
                self._layers[layer] = self._open_searcher(layer)
            return self._layers[layer]

    def _open_searcher(self, layer: str | None) -> Searcher:
        if self.read_only:
            return _read_only_searcher(self.path, layer, self._store, self._engine)
        return Searcher.open(self.path, layer, store=self._store, engine=self._engine)

    def forget_predictor(self, classifier: str) -> None:
        """Drop a cached classifier (retrained or deleted elsewhere)."""
        with self._lock:
            self._predictors.pop(classifier, None)

    def delete_classifier(self, classifier: str) -> None:
        """Delete a classifier from the collection (`UnknownClassifier` if there is none)."""
        from lookalike.classify.store import delete_classifier

        self._writable_folder()
        self.forget_predictor(classifier)
        delete_classifier(self.collection, classifier)

    def predict_images(
        self,
        classifier: str,
        images: Sequence[str | Path | bytes],
        k: int = 5,
        with_embedding: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Prediction]:
        """Class probabilities and labelled neighbours of images never seen before."""
        return self.predictor(classifier).predict_images(images, k, with_embedding, max_pixels)

    def predict_ids(
        self, classifier: str, ids: Sequence[int], k: int = 5, with_embedding: bool = False
    ) -> list[Prediction]:
        """Class probabilities and labelled neighbours of stored items."""
        return self.predictor(classifier).predict_ids(ids, k, with_embedding)

    def close(self) -> None:
        with self._lock:
            self._predictors.clear()
            others, self._layers = list(self._layers.values()), {}
        for searcher in others:
            searcher.close()
        if self._live is not None:
            self._live.close()
        if self._searcher is not None:
            self._searcher.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    path: str | Path,
    read_only: bool = False,
    *,
    layer: str | None = None,
    store: str | None = None,
    store_name: str | None = None,
    engine: str = "auto",
    live: bool = False,
) -> Library:
    """The collection at `path`, ready to search, dedup, predict and change.

    Args:
        read_only: never write to the collection's folder (see the module docstring).
        layer: the layer searched (default: the collection's first).
        store: a Milvus URI (see `index push`) to search instead of the FAISS index.
        store_name: the Milvus collection's name where `store` names none (a served name).
        engine: where the embedder runs ("auto", "torch", "onnx").
        live: open as a live collection now (what a server does: created in `store` if missing
            and reconciled; searches catch up with other processes' writes). Otherwise the
            first write makes it live.
    """
    path = Path(path)
    if live:
        if read_only:
            raise InvalidArgument("a live collection is writable: open it without read_only")
        return Library(path, False, live=LiveCollection.open(path, store=store, name=store_name))
    if read_only:
        searcher = _read_only_searcher(path, layer, store, engine)
    else:
        searcher = Searcher.open(path, layer, store=store, engine=engine)
    return Library(path, read_only, searcher, store=store, store_name=store_name, engine=engine)


def _read_only_searcher(path: Path, layer: str | None, store: str | None, engine: str) -> Searcher:
    """A searcher that writes nothing: the saved index when it fits, else one in memory; the
    embedder's export cached outside the collection."""
    if store is not None:  # a Milvus reader: nothing written to the folder
        searcher = Searcher.open(path, layer, store=store, engine=engine)
    else:
        collection, index = prepare_index(path, read_only=True, layer=layer, save=False)
        layer = layer or collection.spec.layers[0]
        searcher = Searcher(collection, index or exact_index(collection, layer), layer, engine)
    searcher.engine_dir = None
    return searcher
