"""The one tuning loop (`lookalike.index.tuning.tune_parameter`) that FAISS and Milvus both use:
the cheapest parameter reaching the target, measured against exact k-NN; the plateau rule where
compressed codes cap recall; the one nprobe grid."""

from __future__ import annotations

import numpy as np
import pytest
from test_vector_index import clustered

from lookalike.index import VectorIndex
from lookalike.index.knn import drop_own, held_out_truth, recall_at_k
from lookalike.index.tuning import TUNING_PLATEAU, nprobe_grid, query_rows, tune_parameter


def _setup(factory: str):
    xb = clustered(6000)
    ids = np.arange(len(xb), dtype=np.int64) * 3 + 1
    index = VectorIndex.build(ids, xb, factory, "ip", spec={})
    rows = query_rows(len(ids), 300)
    truth = held_out_truth([(ids, xb)], xb[rows], ids[rows], 10, "ip")

    def search_with(nprobe: int, xq: np.ndarray, n: int) -> np.ndarray:
        index.meta.params = {"nprobe": nprobe}
        return index.search(xq, n)[1]

    def recall_of(nprobe: int) -> float:
        return recall_at_k(drop_own(search_with(nprobe, xb[rows], 11), ids[rows], 10), truth, 10)

    return search_with, xb[rows], ids[rows], truth, recall_of


def test_the_cheapest_parameter_reaching_the_target_is_chosen() -> None:
    search_with, xq, own, truth, recall_of = _setup("IVF64,Flat")
    grid = nprobe_grid(64)
    nprobe, recall = tune_parameter(search_with, grid, xq, own, truth, 0.95, 10, plateau=None)
    assert recall >= 0.95 and recall == pytest.approx(recall_of(nprobe))
    cheaper = grid[: grid.index(nprobe)]
    assert cheaper and all(recall_of(p) < 0.95 for p in cheaper)


def test_capped_recall_stops_where_searching_wider_finds_no_more() -> None:
    search_with, xq, own, truth, recall_of = _setup("IVF64,PQ4")
    grid = nprobe_grid(64)
    nprobe, recall = tune_parameter(search_with, grid, xq, own, truth, 0.99, 10)
    assert recall < 0.99 and nprobe < 64  # stopped short of the exhaustive setting
    wider = grid[grid.index(nprobe) + 1]
    assert recall_of(wider) - recall < TUNING_PLATEAU


def test_the_nprobe_grid_ends_at_every_list() -> None:
    assert nprobe_grid(64) == [1, 2, 4, 8, 16, 32, 64]
    assert nprobe_grid(100) == [1, 2, 4, 8, 16, 32, 64, 100]
