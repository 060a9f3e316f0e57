"""An index per collection layer: build (choose, train, fill, tune), update, and load with checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from lookalike.durable import store_if_possible
from lookalike.errors import CollectionError, InvalidArgument
from lookalike.store.collection import Collection

from .choose import DEFAULT_MEMORY_BUDGET, block_rows, choose_index, sample_limit
from .knn import held_out_truth
from .metric import metric_for
from .store import has_index, index_dir, load_index, save_index
from .tuning import TUNING_QUERIES, query_rows
from .vector_index import VectorIndex

if TYPE_CHECKING:
    from .vector_store import VectorStore

log = logging.getLogger(__name__)


class IndexMismatch(CollectionError):
    """An index that does not hold exactly the collection's items."""


def build_index(
    collection: Collection,
    layer: str | None = None,
    *,
    factory: str | None = None,
    target_recall: float = 0.95,
    k: int = 10,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = True,
    save: bool = True,
) -> VectorIndex:
    """Choose, train, fill and tune an index over `layer` of the collection, and save it (unless
    not `save`).

    Memory stays near `memory_budget` at any collection size (autofaiss's way): the index chosen
    fits it, training reads a sample of at most a quarter of it, vectors are added in blocks read
    from the memory-mapped shards, and tuning's ground truth is exact search block by block.
    """
    layer = layer or collection.spec.layers[0]
    collection.check_layer(layer)
    if not 0 < target_recall <= 1:
        raise InvalidArgument(f"target recall must be in (0, 1], got {target_recall}")
    n, d = len(collection), collection.spec.dims[layer]
    if n == 0:
        raise CollectionError(f"{collection.path} is empty: embed images before building an index")
    metric = metric_for(collection.spec)
    plan = choose_index(n, d, metric, memory_budget)
    factory = factory or plan.factory
    log.info("index for %d x %d (%s): %s (%s)", n, d, metric, factory, plan.reason)
    index = VectorIndex.empty(factory, metric, d, collection.spec.to_dict())
    index.meta.reason = plan.reason if factory == plan.factory else "chosen by the user"
    queries, own = _train(index, collection, layer, sample_limit(d, memory_budget))
    rows = block_rows(d, memory_budget)
    # every pass reads the collection as it stands now: later writes wait for `index update`
    shards, deleted = collection.shards(), collection.deleted_ids()

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return collection.iter_embeddings(layer, rows, shards=shards, deleted=deleted)

    # ground truth before the index fills: exact search's buffers then add to nothing
    truth = held_out_truth(blocks(), queries, own, k, metric)
    with tqdm(total=n, unit="vec", desc="indexing", disable=not progress) as bar:
        index.fill(blocks, bar)
    recall = index.tune(queries, own, truth, target_recall, k)
    if recall < target_recall:
        log.warning(
            "%s reaches recall@%d %.3f at most, under the target %.2f",
            factory,
            k,
            recall,
            target_recall,
        )
    if save:
        save_index(index, index_dir(collection.path, layer))
    return index


def _train(
    index: VectorIndex, collection: Collection, layer: str, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train `index` (where it needs it) on a sample of at most `limit` stored vectors; returns
    tuning queries drawn from the sample, with their ids (the rest of it is freed on return)."""
    size = TUNING_QUERIES if index.index.is_trained else min(index.training_size(), limit)
    sample_ids, sample = _sample(collection, layer, size)
    if not index.index.is_trained:
        index.train(sample)
    return _queries(sample_ids, sample)


@dataclass
class UpdateReport:
    added: int
    removed: int
    total: int


def update_index(collection: Collection, layer: str | None = None) -> UpdateReport:
    """Add the collection's items the index lacks, drop ids the collection no longer has; save."""
    layer = layer or collection.spec.layers[0]
    index, added, removed = _caught_up(collection, layer)
    if added or removed:
        save_index(index, index_dir(collection.path, layer))
    return UpdateReport(added, removed, len(index))


def _caught_up(collection: Collection, layer: str) -> tuple[VectorIndex, int, int]:
    """The layer's saved index, checked and brought in step with the collection in memory;
    (index, added, removed)."""
    index = load_index(index_dir(collection.path, layer))
    check_spec(index, collection)
    added, removed = sync_index(index, collection, layer)
    return index, added, removed


def sync_index(
    index: VectorIndex | VectorStore, collection: Collection, layer: str, progress: bool = False
) -> tuple[int, int]:
    """Add the collection's items the index (or any vector store) lacks and drop ids it no
    longer has; returns (added, removed). An item deleted by another process between the two
    reads is still added: the delete changed the generation, so the next catch-up drops it."""
    wanted = collection.ids()
    have = index.ids()
    missing = np.setdiff1d(wanted, have)
    gone = np.setdiff1d(have, wanted)
    if len(gone):
        index.remove(gone)
    block_size = 65536 if isinstance(index, VectorIndex) else 4096
    with tqdm(total=len(missing), unit="vec", desc="adding", disable=not progress) as bar:
        for start in range(0, len(missing), block_size):
            block = missing[start : start + block_size]
            index.add(block, collection.vectors(block, layer, deleted_ok=True))
            bar.update(len(block))
    return len(missing), len(gone)


def exact_index(collection: Collection, layer: str) -> VectorIndex:
    """An exact in-memory Flat index over the layer's stored vectors (nothing saved)."""
    index = VectorIndex.empty(
        "Flat", metric_for(collection.spec), collection.spec.dims[layer], collection.spec.to_dict()
    )
    for ids, xb in collection.iter_embeddings(layer):
        index.add(ids, np.asarray(xb))
    return index


def open_index(
    collection: Collection, layer: str | None = None, read_only: bool = True
) -> VectorIndex:
    """Load the layer's index and refuse it unless it holds exactly the collection's items."""
    layer = layer or collection.spec.layers[0]
    index = load_index(index_dir(collection.path, layer), read_only=read_only)
    check_spec(index, collection)
    check_items(index, collection)
    return index


def check_spec(index: VectorIndex, collection: Collection) -> None:
    """Refuse an index built from another embedder spec than the collection's."""
    collection.spec.check_same(
        index.meta.spec,
        f"the index of {collection.path}",
        "the collection",
        "rebuild it with `lookalike index build`",
    )


def check_items(index: VectorIndex, collection: Collection) -> None:
    wanted = collection.ids()
    have = index.ids()
    if len(wanted) == len(have) and np.array_equal(np.sort(wanted), have):
        return
    missing, extra = np.setdiff1d(wanted, have), np.setdiff1d(have, wanted)
    raise IndexMismatch(
        f"the index of {collection.path} disagrees with its items: {len(missing)} items not indexed"
        f"{_examples(missing)}, {len(extra)} indexed ids not in the collection{_examples(extra)}. "
        "Run `lookalike index update` (or `index build`)."
    )


def _examples(ids: np.ndarray) -> str:
    return f" (e.g. {', '.join(map(str, ids[:3].tolist()))})" if len(ids) else ""


def _sample(
    collection: Collection, layer: str, size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` (ids, vectors) drawn uniformly from the whole collection."""
    ids = collection.ids()
    if len(ids) > size:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))
    return ids, collection.vectors(ids, layer)


def _queries(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tuning queries: some of the sampled stored vectors (copies), with their ids."""
    chosen = query_rows(len(ids))
    return vectors[chosen], ids[chosen]


def prepare_index(
    path: str | Path, read_only: bool = True, layer: str | None = None, save: bool = True
) -> tuple[Collection, VectorIndex | None]:
    """The collection and its saved index of `layer` (default: the first), built or caught up
    with the collection (and saved) first; None for an empty collection with no index yet.
    `serve()` calls it once before the workers start, so no worker has to build or catch up;
    `Searcher.open` calls it, so a search after `embed` needs no `index update` first. Where the
    index cannot be saved (a full or read-only disk), the one in memory is answered, with a
    warning: searches go on. With `save` False nothing is written: an index built or caught up
    is kept in memory only (a read-only opening)."""
    collection = Collection.open(path)
    layer = layer or collection.spec.layers[0]
    collection.check_layer(layer)
    if has_index(collection.path, layer):
        try:
            return collection, open_index(collection, layer, read_only=read_only)
        except IndexMismatch:
            index, _, _ = _caught_up(collection, layer)
    elif len(collection):
        index = build_index(collection, layer, progress=False, save=False)
    else:
        return collection, None
    folder = index_dir(collection.path, layer)
    if save and store_if_possible(
        lambda: save_index(index, folder), f"the index in memory for {folder}"
    ):
        return collection, open_index(collection, layer, read_only=read_only)
    return collection, index
