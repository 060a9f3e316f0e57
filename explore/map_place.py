"""The two numeric steps of a map: a streamed PCA, and placing new points on a fitted UMAP layout.

`place` is UMAP's own `transform` (umap-learn's functions, the same steps and defaults), fed by an
exact FAISS k-NN over the stored reference points instead of a pickled model: the map is stored
as plain arrays, and nothing is ever unpickled from a collection.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

INT32_MIN, INT32_MAX = np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1
EXACT_UP_TO = 20_000  # points; beyond, an inverted file finds the neighbours
TRAIN_PER_LIST = 40  # k-means training points per inverted list
PROBES = 24  # lists searched per query


def fit_pca(blocks: Iterable[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) of the top `dims` principal axes, from blocks of rows read one at a
    time (bounded memory for any collection size). Components are rows."""
    from scipy.linalg import eigh

    total, count, scatter = None, 0, None
    for block in blocks:
        block = np.asarray(block, np.float32)
        if total is None:
            total, scatter = np.zeros(block.shape[1]), np.zeros((block.shape[1],) * 2)
        total += block.sum(axis=0, dtype=np.float64)
        scatter += block.T @ block  # float32 products (twice as fast), summed in float64
        count += len(block)
    mean = total / count
    covariance = scatter / count - np.outer(mean, mean)
    width = len(mean)
    _, vectors = eigh(covariance, subset_by_index=[width - min(dims, width), width - 1])
    components = vectors[:, ::-1].T  # largest first
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return mean.astype(np.float32), (components * signs[:, None]).astype(np.float32)


def nearest_neighbours(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each point's `k` nearest points, itself first, with FAISS: exact
    up to `EXACT_UP_TO` points, else an inverted file probed widely: UMAP needs a good k-NN
    graph, not a perfect one (0.99 recall@15 at 100k x 50, in 19-45 s on the shared 2 cores
    where UMAP's own nearest-neighbour descent took 55 s; see the README's map figures)."""
    points = np.ascontiguousarray(points, np.float32)
    width = points.shape[1]
    if len(points) <= EXACT_UP_TO:
        index = faiss.IndexFlatL2(width)
    else:
        lists = int(4 * np.sqrt(len(points)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(width), width, lists)
        step = max(1, len(points) // (TRAIN_PER_LIST * lists))
        index.train(points[::step])
        index.nprobe = PROBES
    index.add(points)
    squared, found = index.search(points, k)
    return found, np.sqrt(np.maximum(squared, 0)).astype(np.float32)


def project(xb: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Rows of `xb` in the PCA space."""
    return ((np.asarray(xb, np.float32) - mean) @ components.T).astype(np.float32)


def place(
    reference: np.ndarray,
    reference_xy: np.ndarray,
    queries: np.ndarray,
    neighbours: int,
    min_dist: float,
    seed: int,
) -> np.ndarray:
    """2-D positions of `queries` on a layout of `reference` (UMAP's transform): each starts at
    its neighbours' weighted mean and is moved by a short optimisation with the layout fixed."""
    import scipy.sparse
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import (
        compute_membership_strengths,
        find_ab_params,
        init_graph_transform,
        make_epochs_per_sample,
        smooth_knn_dist,
    )

    k = min(neighbours, len(reference))
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, np.float32))
    squared, found = index.search(np.ascontiguousarray(queries, np.float32), k)
    distances = np.sqrt(np.maximum(squared, 0)).astype(np.float32)
    sigmas, rhos = smooth_knn_dist(distances=distances, k=float(k), local_connectivity=0.0)
    rows, cols, values, _ = compute_membership_strengths(
        knn_indices=found.astype(np.int32),
        knn_dists=distances,
        sigmas=sigmas,
        rhos=rhos,
        bipartite=True,
    )
    shape = (len(queries), len(reference))
    graph = scipy.sparse.coo_matrix((values, (rows, cols)), shape=shape)
    start = graph.tocsr()
    start.eliminate_zeros()
    layout = np.ascontiguousarray(reference_xy, np.float32)
    xy = init_graph_transform(graph=start, embedding=layout).astype(np.float32)
    epochs = 100 if len(queries) <= 10_000 else 30
    graph.data[graph.data < graph.data.max() / float(epochs)] = 0.0
    graph.eliminate_zeros()
    a, b = find_ab_params(spread=1.0, min_dist=min_dist)
    rng_state = np.random.RandomState(seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return optimize_layout_euclidean(
        head_embedding=xy,
        tail_embedding=layout.copy(),
        head=graph.row,
        tail=graph.col,
        n_epochs=epochs,
        n_vertices=len(reference),
        epochs_per_sample=make_epochs_per_sample(weights=graph.data, n_epochs=epochs),
        a=a,
        b=b,
        rng_state=rng_state,
        gamma=1.0,  # repulsion strength, UMAP's default
        initial_alpha=1.0 / 4.0,  # UMAP's transform: a quarter of the fit's learning rate
        negative_sample_rate=5,  # UMAP's default
        parallel=False,  # the seed decides the result
    )
