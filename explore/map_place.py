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


def fit_pca(blocks: Iterable[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) of the top `dims` principal axes, from blocks of rows read one at a
    time (float64 sums: bounded memory for any collection size). Components are rows."""
    total, count, scatter = None, 0, None
    for block in blocks:
        block = np.asarray(block, np.float64)
        if total is None:
            total, scatter = np.zeros(block.shape[1]), np.zeros((block.shape[1],) * 2)
        total += block.sum(axis=0)
        scatter += block.T @ block
        count += len(block)
    mean = total / count
    covariance = scatter / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(covariance)
    top = np.argsort(values)[::-1][:dims]
    components = vectors[:, top].T
    signs = np.sign(components[np.arange(len(top)), np.abs(components).argmax(axis=1)])
    return mean.astype(np.float32), (components * signs[:, None]).astype(np.float32)


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
    sigmas, rhos = smooth_knn_dist(distances, float(k), local_connectivity=0.0)
    rows, cols, values, _ = compute_membership_strengths(
        found.astype(np.int32), distances, sigmas, rhos, bipartite=True
    )
    shape = (len(queries), len(reference))
    graph = scipy.sparse.coo_matrix((values, (rows, cols)), shape=shape)
    start = graph.tocsr()
    start.eliminate_zeros()
    layout = np.ascontiguousarray(reference_xy, np.float32)
    xy = init_graph_transform(start, layout).astype(np.float32)
    epochs = 100 if len(queries) <= 10_000 else 30
    graph.data[graph.data < graph.data.max() / float(epochs)] = 0.0
    graph.eliminate_zeros()
    a, b = find_ab_params(1.0, min_dist)
    rng_state = np.random.RandomState(seed).randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
    return optimize_layout_euclidean(
        xy,
        layout.copy(),
        graph.row,
        graph.col,
        epochs,
        len(reference),
        make_epochs_per_sample(graph.data, epochs),
        a,
        b,
        rng_state,
        1.0,  # repulsion strength, UMAP's default
        1.0 / 4.0,  # UMAP's transform: a quarter of the fit's learning rate
        5,  # negative sample rate, UMAP's default
        False,  # not parallel: the seed decides the result
    )
