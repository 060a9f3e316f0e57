"""One contract, two vector stores: the embedded FAISS index and Milvus (a real Milvus-protocol
server: Milvus Lite's, started once per session). The same tests run against both; the answers
are also compared with exact search over the collection's raw vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_spec
from milvus_server import fresh_name
from synthetic import WIDTH, separable

from lookalike.errors import InvalidArgument
from lookalike.index import Filters, Searcher
from lookalike.index.knn import exact_neighbours
from lookalike.index.maintain import exact_index
from lookalike.store.collection import Collection

LABELS = ("cat", 'd"og', "fox")  # a quote inside a label: filters must escape it
PATHS = ("/img/a_%/", "/img/a_b/", "/img/b/")  # LIKE wildcards inside a path prefix


def planted(path: Path, normalize: bool) -> Collection:
    """90 vectors in three clusters, labels and paths spread so filters cut across clusters."""
    vectors, _ = separable(30)
    if normalize:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spec = make_spec(dims={"embedding": WIDTH, "layer3": WIDTH}, normalize=normalize)
    collection = Collection.create(path, spec)
    rows = [
        {
            "path": f"{PATHS[n % 3 if n % 7 else 2]}{n}.jpg",
            "sha256": f"{n:064x}",
            "width": 8,
            "height": 8,
            "bytes": 1,
            "mtime_ns": 1,
            "label": LABELS[n % 3] if n % 10 else None,
        }
        for n in range(len(vectors))
    ]
    with collection.writer(shard_size=40) as writer:
        writer.add(rows, {"embedding": vectors, "layer3": vectors})
    return collection


@pytest.fixture(params=[True, False], ids=["cosine", "l2"])
def collection(request, tmp_path: Path) -> Collection:
    return planted(tmp_path / "c", normalize=request.param)


@pytest.fixture(params=["faiss", "milvus"])
def searcher(request, collection: Collection) -> Searcher:
    layer = "embedding"
    if request.param == "faiss":
        return Searcher(collection, exact_index(collection, layer), layer)
    from lookalike.index.milvus_sync import open_milvus, push

    uri = f"{request.getfixturevalue('milvus_uri')}/{fresh_name()}"
    push(collection, uri, layer, progress=False)
    return Searcher(collection, open_milvus(uri, collection, layer), layer)


def exact(collection: Collection, xq: np.ndarray, k: int, keep=None) -> np.ndarray:
    ids, xb = collection.embeddings("embedding")
    if keep is not None:
        ids, xb = ids[keep(ids)], xb[keep(ids)]
    metric = "ip" if collection.spec.normalize else "l2"
    return exact_neighbours([(ids, xb)], xq, k, metric)[1]


def test_count_and_ids_are_the_collections(searcher: Searcher) -> None:
    wanted = np.sort(searcher.collection.items(["id"]).column("id").to_numpy())
    assert len(searcher.vector_store) == len(wanted) == 90
    assert np.array_equal(searcher.vector_store.ids(), wanted)
    assert searcher.vector_store.has([0, 89, 90, -5]).tolist() == [True, True, False, False]


def test_top_k_is_exact_search(searcher: Searcher, collection: Collection) -> None:
    xq = collection.vectors([0, 31, 62], "embedding")
    found = [[hit.id for hit in hits] for hits in searcher.search_vectors(xq, k=5)]
    assert found == exact(collection, xq, 5).tolist()
    assert [hits[0].distance for hits in searcher.search_vectors(xq, k=1)] == pytest.approx(
        [0, 0, 0], abs=1e-5
    )


def test_threshold_is_a_range_search(searcher: Searcher, collection: Collection) -> None:
    noise = np.random.default_rng(4).standard_normal((2, WIDTH)).astype(np.float32)
    xq = 1.3 * collection.vectors([5, 40], "embedding") + 0.1 * noise  # not unit length
    distances = exact_distances(collection, xq)  # as FAISS measures them: from the raw query
    threshold = float(np.median(distances))
    within = searcher.search_vectors(xq, k=None, threshold=threshold)
    ids = collection.embeddings("embedding")[0]
    for hits, row in zip(within, distances, strict=True):
        assert {h.id for h in hits} == set(ids[row <= threshold].tolist())
        expected = np.maximum(np.sort(row[row <= threshold]), 0)  # a distance is never < 0
        assert [h.distance for h in hits] == pytest.approx(expected, abs=1e-4)
    capped = searcher.search_vectors(xq, k=3, threshold=threshold)
    assert [[h.id for h in hits] for hits in capped] == [[h.id for h in w[:3]] for w in within]


def exact_distances(collection: Collection, xq: np.ndarray) -> np.ndarray:
    xb = collection.embeddings("embedding")[1]
    if collection.spec.normalize:
        return 1 - xq @ xb.T
    return np.sqrt(((xq[:, None, :] - xb[None]) ** 2).sum(-1))


@pytest.mark.parametrize(
    "filters",
    [
        Filters(labels=('d"og',)),
        Filters(labels=("cat", "fox")),
        Filters(path_prefix="/img/a_%/"),  # must not match /img/a_b/ (a LIKE would)
        Filters(labels=("cat",), path_prefix="/img/b"),
        Filters(labels=("nobody",)),
    ],
    ids=["quoted-label", "labels", "wildcard-prefix", "both", "none-match"],
)
def test_filters_keep_exactly_what_the_item_table_keeps(
    searcher: Searcher, collection: Collection, filters: Filters
) -> None:
    allowed = searcher.allowed_ids(filters)
    xq = collection.vectors([3, 50], "embedding")
    found = [[h.id for h in hits] for hits in searcher.search_vectors(xq, k=5, filters=filters)]
    truth = exact(collection, xq, 5, keep=lambda ids: np.isin(ids, allowed))
    assert found == [[i for i in row if i >= 0] for row in truth.tolist()]
    if filters.path_prefix == "/img/a_%/":
        assert found[0] and all("/img/a_%/" in searcher.item(i)["path"] for i in found[0])


def test_add_upsert_remove(searcher: Searcher, collection: Collection) -> None:
    store = searcher.vector_store
    xb = collection.vectors([1, 2], "embedding")
    with pytest.raises(InvalidArgument, match="already indexed"):
        store.add([1, 2], xb)
    moved = collection.vectors([70], "embedding")  # item 1 now sits where item 70 is
    store.upsert([1], moved, {"label": ["cat"], "path": ["/img/b/1.jpg"]})
    assert len(store) == 90
    assert set(searcher.search_vectors(moved, k=2)[0][i].id for i in range(2)) == {1, 70}
    assert store.remove([1, 2, 999]) == 2
    assert len(store) == 88 and not store.has([1, 2]).any()
    assert {1, 2}.isdisjoint(h.id for h in searcher.search_vectors(xb, k=10)[0])
    store.add([1, 2], xb, {"label": [None, "fox"], "path": ["/img/b/1.jpg", "/img/b/2.jpg"]})
    assert [h.id for h in searcher.search_vectors(xb, k=1)[0]] == [1]


@pytest.mark.parametrize(
    ("vectors", "k", "message"),
    [
        (np.ones((1, 5)), 3, "width"),
        (np.full((1, 16), np.nan), 3, "NaN"),
        (np.ones((1, 16)), 0, "k must be"),
    ],
)
def test_bad_queries_are_refused_alike(searcher: Searcher, vectors, k, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        searcher.vector_store.search(vectors, k)


def test_bad_rows_are_refused_alike(searcher: Searcher) -> None:
    with pytest.raises(InvalidArgument, match="duplicate ids"):
        searcher.vector_store.upsert([500, 500], np.ones((2, 16)))
    with pytest.raises(InvalidArgument, match="2 ids for 1 vectors"):
        searcher.vector_store.upsert([500, 501], np.ones((1, 16)))


def test_dedup_finds_the_pairs_exact_search_finds(
    searcher: Searcher, collection: Collection
) -> None:
    from lookalike.index import find_duplicates

    ids, xb = collection.embeddings("embedding")
    distances = exact_distances(collection, xb)
    threshold = float(np.quantile(distances[np.triu_indices(len(ids), 1)], 0.02))
    pairs = find_duplicates(searcher, threshold, progress=False).pairs
    found = set(zip(pairs["a"].to_pylist(), pairs["b"].to_pylist(), strict=True))
    a, b = np.nonzero(np.triu(distances <= threshold, 1))
    assert found == set(zip(ids[a].tolist(), ids[b].tolist(), strict=True)) and found
