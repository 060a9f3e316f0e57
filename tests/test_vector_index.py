"""The FAISS index on its own: choice rule, tuned recall, add/remove/upsert, filters, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from lookalike.index import VectorIndex, choose_index, load_index, save_index
from lookalike.index.knn import exact_neighbours, held_out_truth, recall_at_k

FACTORIES = ["Flat", "HNSW16,Flat", "IVF32,Flat"]


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    x = (centres[rng.integers(0, 50, n)] + 0.4 * rng.standard_normal((n, d))).astype(np.float32)
    faiss.normalize_L2(x)
    return x


def built(factory: str, n: int = 3000, seed: int = 0) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    xb = clustered(n, seed=seed)
    ids = np.arange(n, dtype=np.int64) * 7 + 3  # item ids, not positions
    return VectorIndex.build(ids, xb, factory, "ip", spec={"backbone": "test"}), xb, ids


def test_choice_rule_follows_size_and_budget() -> None:
    assert choose_index(3_000, 1280, "ip").factory == "Flat"
    assert choose_index(20_000, 256, "ip").factory == "Flat"
    assert choose_index(20_000, 1280, "ip").factory.startswith("IVF")
    assert choose_index(100_000, 1280, "ip").factory == "IVF1024,Flat"
    assert choose_index(3_000_000, 512, "ip").factory == "IVF8192,Flat"
    assert choose_index(3_000_000, 1280, "ip", memory_budget=8 * 2**30).factory.endswith(",SQ8")
    assert ",PQ" in choose_index(3_000_000, 1280, "ip", memory_budget=2**30).factory
    with pytest.raises(ValueError, match="budget"):
        choose_index(3_000_000, 1280, "ip", memory_budget=2**20)


@pytest.mark.parametrize("factory", ["HNSW16,Flat", "IVF64,Flat"])
def test_tuning_reaches_target_recall_on_fresh_queries(factory: str) -> None:
    both = clustered(20_300)
    xb, xq = both[:20_000], both[20_000:]  # fresh queries from the same distribution
    ids = np.arange(len(xb), dtype=np.int64)
    index = VectorIndex.build(ids, xb, factory, "ip", spec={})
    sample = np.random.default_rng(0).choice(len(xb), 300, replace=False)
    truth = held_out_truth([(ids, xb)], xb[sample], ids[sample], 10, "ip")
    tuned_recall = index.tune(xb[sample], ids[sample], truth, target_recall=0.95, k=10)
    assert tuned_recall >= 0.95 and index.meta.recall == pytest.approx(tuned_recall, abs=1e-4)
    fresh = recall_at_k(index.search(xq, 10)[1], exact_neighbours([(ids, xb)], xq, 10, "ip")[1], 10)
    assert fresh >= 0.9
    cheapest = index.param_grid()[0]
    assert next(iter(index.meta.params.values())) >= cheapest


@pytest.mark.parametrize("factory", FACTORIES)
def test_add_remove_upsert_are_seen_by_search(factory: str) -> None:
    index, xb, ids = built(factory)
    assert index.search(xb[5], 1)[1][0, 0] == ids[5]
    assert index.remove(ids[:10]) == 10
    assert index.remove(ids[:10]) == 0  # already gone
    assert ids[5] not in index.search(xb[5], 20)[1]
    index.upsert([ids[20]], xb[500])  # id 20 now holds row 500's vector
    top = set(index.search(xb[500], 2)[1][0])
    assert top == {ids[20], ids[500]}
    assert ids[20] not in index.search(xb[20], 3)[1][0][:1]
    index.add([99_999], xb[700])
    assert set(index.search(xb[700], 2)[1][0]) == {ids[700], 99_999}
    with pytest.raises(ValueError, match="already indexed"):
        index.add([99_999], xb[8])
    expected = np.sort(np.concatenate([ids[10:], [99_999]]))
    assert np.array_equal(index.ids(), expected) and len(index) == len(expected)
    compact = index.compacted()
    assert compact.deleted == 0 and np.array_equal(compact.ids(), expected)
    assert set(compact.search(xb[500], 2)[1][0]) == {ids[20], ids[500]}


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(
    "share", [0.002, 0.5]
)  # exact over a small subset; a selector inside FAISS
def test_filters_return_only_allowed_ids(factory: str, share: float) -> None:
    index, xb, ids = built(factory)
    index.remove(ids[:50])
    rng = np.random.default_rng(3)
    allowed = rng.choice(ids, int(len(ids) * share), replace=False)
    xq = xb[100:110]
    _, found = index.search(xq, 5, allowed=allowed)
    live_allowed = np.setdiff1d(allowed, ids[:50])
    assert np.isin(found[found >= 0], live_allowed).all()
    exact = exact_neighbours([(live_allowed, xb[np.searchsorted(ids, live_allowed)])], xq, 5, "ip")[
        1
    ]
    assert recall_at_k(found, exact, 5) >= 0.9


@pytest.mark.parametrize("factory", FACTORIES)
def test_range_search_matches_brute_force(factory: str) -> None:
    index, xb, ids = built(factory)
    if index.tunable:
        index.meta.params = {index.tunable: index.param_grid()[-1]}  # exhaustive setting
    radius = 0.9
    results = index.range_search(xb[:5], radius)
    for query, (scores, found) in zip(xb[:5], results, strict=True):
        expected = ids[xb @ query > radius]
        assert set(found.tolist()) == set(expected.tolist())
        assert np.all(np.diff(scores) <= 1e-6)  # best first


def test_bad_queries_are_refused() -> None:
    index, xb, _ = built("Flat", n=100)
    with pytest.raises(ValueError, match="width 16; this index holds width 32"):
        index.search(np.zeros((1, 16)), 5)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 32), np.nan), 5)
    for k in (0, -1, 10**6):
        with pytest.raises(ValueError, match="k must be"):
            index.search(xb[:1], k)
    with pytest.raises(ValueError, match="not a FAISS factory string"):
        VectorIndex.empty("IVFx,Bogus", "ip", 32, spec={})
    with pytest.raises(ValueError, match="duplicate ids"):
        index.add([1, 1], xb[:2])
    assert index.search(xb[:1], 500)[1].shape == (1, 500)  # fewer vectors than k: padded with -1
    assert (index.search(xb[:1], 500)[1][0, 100:] == -1).all()


@pytest.mark.parametrize("factory", FACTORIES)
def test_save_load_gives_identical_results(factory: str, tmp_path: Path) -> None:
    index, xb, ids = built(factory)
    index.remove(ids[:5])
    save_index(index, tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.meta == index.meta and np.array_equal(loaded.live, index.live)
    for a, b in zip(index.search(xb[:50], 10), loaded.search(xb[:50], 10), strict=True):
        np.testing.assert_array_equal(a, b)
    mapped = load_index(tmp_path, read_only=True, mmap=True)
    np.testing.assert_array_equal(mapped.search(xb[:50], 10)[1], index.search(xb[:50], 10)[1])
    with pytest.raises(ValueError, match="read-only"):
        mapped.add([10**9], xb[0])


def test_interrupted_save_leaves_the_last_good_index(tmp_path: Path) -> None:
    index, _xb, ids = built("Flat", n=200)
    save_index(index, tmp_path)
    # A save killed midway leaves a temporary folder, or a renamed generation CURRENT never named.
    (tmp_path / ".tmp-crashed").mkdir()
    (tmp_path / ".tmp-crashed" / "index.faiss").write_bytes(b"torn")
    (tmp_path / "gen-000009").mkdir()
    (tmp_path / "gen-000009" / "index.faiss").write_bytes(b"torn")
    loaded = load_index(tmp_path)
    assert np.array_equal(loaded.ids(), index.ids())
    loaded.remove(ids[:1])
    save_index(loaded, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == [
        "CURRENT",
        "gen-000010",
    ]
    assert len(load_index(tmp_path)) == 199


def test_searches_run_while_a_writer_adds() -> None:
    index, xb, ids = built("HNSW16,Flat", n=2000)
    extra = clustered(2000, seed=9)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for row in range(200):
                found = index.search(xb[row], 5)[1][0]
                assert found[0] == ids[row]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for start in range(0, 2000, 100):
        index.add(np.arange(start, start + 100) + 10**6, extra[start : start + 100])
    for thread in threads:
        thread.join()
    assert not errors and len(index) == 4000
