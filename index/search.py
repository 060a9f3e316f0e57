"""Similarity search over a collection: by image files, item ids or raw vectors; top-k, range, filters.

Distances are reported the same way for every metric: smaller is closer (`lookalike.index.metric`
holds the rule). On L2-normalised embeddings (inner-product index) the distance is the cosine
distance ``1 - cos`` (0 = same direction, 2 = opposite) and ``similarity`` is the cosine; otherwise
it is the Euclidean distance.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lookalike.embedder.sources import DEFAULT_MAX_PIXELS
from lookalike.errors import InvalidArgument, UnknownItem
from lookalike.store.collection import Collection

from .maintain import exact_index, prepare_index
from .metric import distances, radius
from .vector_index import MAX_K, VectorIndex
from .vector_store import Filters, VectorStore, as_store

if (
    TYPE_CHECKING
):  # the embedder (torch) loads on the first image query: id, vector, dedup need none
    from lookalike.embedder.backbone import Backbone


@dataclass(frozen=True)
class Hit:
    id: int
    distance: float
    similarity: float | None
    path: str
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "distance": self.distance,
            "similarity": self.similarity,
            "path": self.path,
            "label": self.label,
        }


@dataclass(frozen=True)
class _Items:
    """The item table sorted by id, with its ids, paths and labels as arrays (a hit's metadata
    in microseconds): replaced as one object when items change."""

    table: pa.Table
    ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> _Items:
        table = table.sort_by("id")
        return cls(
            table,
            table.column("id").to_numpy(),
            np.array(table.column("path").to_pylist(), dtype=object),
            np.array(table.column("label").to_pylist(), dtype=object),
        )

    def find(self, item_id: int) -> int | None:
        row = int(np.searchsorted(self.ids, item_id))
        return row if row < len(self.ids) and self.ids[row] == item_id else None

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """The row of each id, -1 where the table does not hold it (one vectorised lookup)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, item_ids)
        held = rows < len(self.ids)
        held[held] = self.ids[rows[held]] == item_ids[held]
        return np.where(held, rows, -1)

    def row(self, item_id: int, where: Path) -> int:
        row = self.find(item_id)
        if row is None:
            raise UnknownItem(f"no item with id {item_id} in {where}")
        return row


class Searcher:
    """A collection with its (checked) vector store, and the collection's own embedder for image
    queries. A `VectorIndex` given as the store is searched as a `FaissStore`.

    The embedder runs on `engine` (auto: ONNX Runtime on a CPU where it exports and matches torch,
    its export cached in `engine_dir`, by default the collection's ``engines/`` folder, else in
    the user's cache; torch elsewhere).
    """

    def __init__(
        self,
        collection: Collection,
        index: VectorIndex | VectorStore,
        layer: str,
        engine: str = "auto",
    ) -> None:
        self.collection = collection
        self.vector_store = as_store(index, self.allowed_ids)
        self.layer = layer
        self.engine = engine
        self.engine_dir: Path | None = collection.path  # where an engine export is cached first
        self._backbone: Backbone | None = None
        self._backbone_lock = threading.Lock()
        self._allowed: tuple[_Items, Filters, np.ndarray] | None = None
        self.refresh_items()

    @classmethod
    def open(
        cls,
        collection_dir: str | Path,
        layer: str | None = None,
        read_only: bool = True,
        engine: str = "auto",
        store: str | None = None,
    ):
        """The collection with its saved index, built or caught up first if the collection
        changed since (`prepare_index`); an empty collection searches an empty exact index.
        With `store` (a Milvus URI: `milvus_sync`), the Milvus collection pushed there instead."""
        if store is not None:
            from .milvus_sync import open_milvus

            collection = Collection.open(collection_dir)
            vectors = open_milvus(store, collection, layer)
            return cls(collection, vectors, vectors.layer, engine)
        collection, index = prepare_index(collection_dir, read_only, layer)
        layer = layer or collection.spec.layers[0]
        return cls(collection, index or exact_index(collection, layer), layer, engine)

    @property
    def metric(self) -> str:
        return self.vector_store.metric

    def refresh_items(self) -> None:
        """Re-read the item table (after items were added)."""
        self._snapshot = _Items.of(self.collection.items(["id", "path", "label"]))  # swapped whole

    # ----- queries ----------------------------------------------------------------------------

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int | None = 10,
        threshold: float | None = None,
        filters: Filters | None = None,
        spec_fingerprint: str | None = None,
    ) -> list[list[Hit]]:
        """Neighbours of each vector: the top `k`, those within `threshold` distance, or both."""
        if spec_fingerprint is not None:
            self.collection.spec.check_same(
                spec_fingerprint,
                "the query vectors",
                f"collection {self.collection.path} ({self.collection.spec.backbone})",
                "embed them with this collection's embedder",
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != self.vector_store.dim:
            raise InvalidArgument(
                f"query vectors have shape {vectors.shape}; this index holds vectors of width "
                f"{self.vector_store.dim} ({self.collection.spec.backbone}, layer {self.layer})"
            )
        if k is None and threshold is None:
            raise InvalidArgument("give k, a distance threshold, or both")
        if k is not None and not 0 < k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {k}")
        radius = None if threshold is None else self._radius(threshold)
        results = self.vector_store.search(vectors, k, radius, filters or None)
        return [self._hits(scores, ids) for scores, ids in results]

    def within(
        self, vectors: np.ndarray, threshold: float, filters: Filters | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per vector, (ids, distances) of the items within `threshold`, as arrays: a range
        search with no `Hit` per result (dedup reads thousands per query)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        results = self.vector_store.search(vectors, None, self._radius(threshold), filters or None)
        snapshot, found = self._snapshot, []
        for scores, ids in results:
            live = snapshot.rows(ids) >= 0  # not deleted between the index search and now
            found.append((ids[live], self._distances(scores[live])))
        return found

    def search_ids(self, ids: Sequence[int], k: int | None = 10, **options) -> list[list[Hit]]:
        """Neighbours of stored items (each item itself comes first, at distance 0)."""
        return self.search_vectors(self.collection.vectors(ids, self.layer), k, **options)

    def search_images(self, images: Sequence[str | Path | bytes], k: int | None = 10, **options):
        """Neighbours of image files (or encoded bytes), embedded with the collection's embedder."""
        return self.search_vectors(self.embed_images(images), k, **options)

    def embed_images(
        self, images: Sequence[str | Path | bytes], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> np.ndarray:
        """The `layer` vectors of image files or encoded bytes; a bad one raises `BadImage` naming it."""
        return self.embed_layers(images, max_pixels)[self.layer]

    def embed_layers(
        self, images: Sequence[str | Path | bytes], max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> dict[str, np.ndarray]:
        """Every layer of the collection's spec for each image, from one forward pass (the
        embedder's one way from an image to vectors: `embedder.images.embed_images`)."""
        from lookalike.embedder.images import embed_images

        return embed_images(self.backbone(), images, max_pixels)

    def backbone(self) -> Backbone:
        """The collection's embedder, built on first use (search by vector or id never needs it)."""
        from lookalike.embedder.build import backbone_from_spec

        with self._backbone_lock:
            if self._backbone is None:
                self._backbone = backbone_from_spec(
                    self.collection.spec, engine=self.engine, collection_dir=self.engine_dir
                )
        return self._backbone

    @property
    def embedder_loaded(self) -> bool:
        return self._backbone is not None

    def allowed_ids(self, filters: Filters) -> np.ndarray:
        """The ids `filters` keeps; the last answer is reused while the item table is the same
        (dedup and calibration ask it once per block of queries)."""
        snapshot, last = self._snapshot, self._allowed
        if last is not None and last[0] is snapshot and last[1] == filters:
            return last[2]
        table = snapshot.table
        keep = pa.scalar(True)
        if filters.labels:
            keep = pc.and_(keep, pc.is_in(table["label"], pa.array(list(filters.labels))))
        if filters.path_prefix:
            keep = pc.and_(keep, pc.starts_with(table["path"], filters.path_prefix))
        keep = pc.fill_null(keep, False)
        allowed = table["id"].filter(keep).to_numpy()
        self._allowed = (snapshot, filters, allowed)  # swapped whole, as the snapshot is
        return allowed

    def item(self, item_id: int) -> dict[str, Any]:
        snapshot = self._snapshot
        row = snapshot.row(item_id, self.collection.path)
        return {name: snapshot.table[name][row].as_py() for name in snapshot.table.column_names}

    # ----- internals --------------------------------------------------------------------------

    def _radius(self, threshold: float) -> float:
        return radius(self.metric, threshold)

    def _distances(self, scores: np.ndarray) -> np.ndarray:
        """The distances of raw scores, rounded as hits are."""
        return np.round(distances(self.metric, scores), 6)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        snapshot = self._snapshot
        rows = snapshot.rows(ids)
        found = rows >= 0  # not -1 padding, not deleted between the index search and now
        rows = rows[found]
        hits = []
        similarities = scores[found].tolist() if self.metric == "ip" else [None] * len(rows)
        for distance, similarity, item_id, path, label in zip(
            distances(self.metric, scores[found]).tolist(),
            similarities,
            ids[found].tolist(),
            snapshot.paths[rows],
            snapshot.labels[rows],
            strict=True,
        ):
            hits.append(
                Hit(
                    id=item_id,
                    distance=round(distance, 6),
                    similarity=None if similarity is None else round(similarity, 6),
                    path=path,
                    label=label,
                )
            )
        return hits

    def close(self) -> None:
        if self._backbone is not None:
            self._backbone.close()
