"""The map's layout time: `compute_map` (PCA to 50 dimensions, then UMAP) on 100k x 1280 vectors
written through the store's writer, by stage; against UMAP on the raw 1280-d vectors (no PCA) on
a smaller set, both timed on that set in this run, with the neighbours each keeps (the share of
points whose nearest point on the map has their cluster); then new items placed on the map.

    python bench/map_bench.py            # 100k x 1280; the baseline on 10k
    python bench/map_bench.py --quick    # 20k x 1280; the baseline on 5k

Synthetic embeddings: 50 clusters of different spreads in a 64-d subspace, lifted to 1280-d with
isotropic noise and L2-normalised, like a backbone's pooled features. The page's hover time at
100k points is measured by `tests/test_page_map.py` (`--page` runs that test and prints its line).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.embedder.spec import BackboneSpec, Preprocess
from lookalike.explore.map import compute_map, map_points
from lookalike.store.collection import Collection

WIDTH, CLUSTERS, LATENT = 1280, 50, 64
WARM_UP = 4_500  # above UMAP's 4,096: its nearest-neighbour descent is compiled too
BUDGET_SECONDS = 180  # the figure: 100k x 1280 in under 3 minutes on 2 cores


def embeddings(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, cluster of each): clustered in a subspace, noisy, L2-normalised."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, CLUSTERS, count)
    centres = rng.standard_normal((CLUSTERS, LATENT)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, CLUSTERS).astype(np.float32)
    latent = centres[cluster] + spread[cluster, None] * rng.standard_normal(
        (count, LATENT), np.float32
    )
    lift = rng.standard_normal((LATENT, WIDTH)).astype(np.float32) / np.sqrt(LATENT)
    vectors = latent @ lift + 0.3 * rng.standard_normal((count, WIDTH), np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, cluster


def write_collection(path: Path, vectors: np.ndarray, cluster: np.ndarray) -> Collection:
    spec = BackboneSpec(
        backbone="synthetic", weights=None, layers=("embedding",), pooling="avg", normalize=True,
        dims={"embedding": WIDTH}, preprocess=Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3), dtype="float32",
    )  # fmt: skip
    collection = Collection.create(path, spec)
    with collection.writer(shard_size=10_000) as writer:
        for start in range(0, len(vectors), 10_000):
            block = slice(start, start + 10_000)
            rows = [{"path": f"/synthetic/{n}.jpg", "label": f"c{c}"} for n, c in
                    zip(range(start, start + len(cluster[block])), cluster[block], strict=True)]  # fmt: skip
            writer.add(rows, {"embedding": vectors[block]})
    return collection


def agreement(xy: np.ndarray, cluster: np.ndarray, sample: int = 2000) -> float:
    """Share of sampled points whose nearest other point on the map is of their cluster."""
    import faiss

    index = faiss.IndexFlatL2(2)
    index.add(np.ascontiguousarray(xy, np.float32))
    rows = np.random.default_rng(0).choice(len(xy), min(sample, len(xy)), replace=False)
    _, found = index.search(np.ascontiguousarray(xy[rows], np.float32), 2)
    return float(np.mean(cluster[found[:, 1]] == cluster[rows]))


def raw_umap(vectors: np.ndarray) -> tuple[float, np.ndarray]:
    """The baseline: UMAP on the raw vectors, the same settings as `compute_map` but no PCA."""
    import umap

    start = time.perf_counter()
    xy = umap.UMAP(random_state=0, n_jobs=1, low_memory=True).fit_transform(vectors)
    return time.perf_counter() - start, xy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k items; the baseline on 5k")
    parser.add_argument("--page", action="store_true", help="also run the page's 100k hover test")
    args = parser.parse_args()
    count, small = (20_000, 5_000) if args.quick else (100_000, 10_000)
    vectors, cluster = embeddings(count)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        collection = write_collection(Path(folder) / "big", vectors, cluster)
        print(
            f"set-up: {count:,} x {WIDTH} written through the store in {time.perf_counter() - start:.1f} s"
        )
        warm = write_collection(Path(folder) / "warm", *embeddings(WARM_UP, seed=1))
        compute_map(warm)  # numba compiles UMAP's kernels once per process: not the figure
        raw_umap(embeddings(WARM_UP, seed=1)[0])  # and for the baseline's width

        base_seconds, base_xy = raw_umap(vectors[:small])
        ours_small = write_collection(Path(folder) / "small", vectors[:small], cluster[:small])
        report = compute_map(ours_small)
        small_seconds = sum(report.seconds.values())
        print(f"\non {small:,} items (same vectors, same run):")
        print(f"  baseline, UMAP on the raw {WIDTH}-d vectors: {base_seconds:7.1f} s, "
              f"neighbour agreement {agreement(base_xy, cluster[:small]):.3f}")  # fmt: skip
        print(f"  ours, PCA to 50 then UMAP:                 {small_seconds:7.1f} s, "
              f"neighbour agreement {agreement(map_points(ours_small).xy, cluster[:small]):.3f}")  # fmt: skip
        print(f"  ratio baseline / ours: {base_seconds / small_seconds:.2f}x")

        report = compute_map(collection)
        total = sum(report.seconds.values())
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.seconds.items())
        print(f"\nours on {count:,} x {WIDTH}: {total:.1f} s ({stages}); "
              f"neighbour agreement {agreement(map_points(collection).xy, cluster):.3f}; "
              f"budget {BUDGET_SECONDS} s: {'met' if total < BUDGET_SECONDS else 'MISSED'}")  # fmt: skip
        place_new(collection, count)
    if args.page:
        page_hover()


def place_new(collection: Collection, count: int) -> None:
    """1 % new items: placed on the stored map, against the full layout just timed."""
    fresh, cluster = embeddings(count // 100, seed=2)
    with collection.writer() as writer:
        rows = [{"path": f"/new/{n}.jpg", "label": f"c{c}"} for n, c in enumerate(cluster)]
        writer.add(rows, {"embedding": fresh})
    report = compute_map(collection)
    print(f"placing {report.placed:,} new items on the map: {report.seconds['place']:.1f} s")


def page_hover() -> None:
    test = "tests/test_page_map.py::test_map_view_opens_100k_points_and_answers_a_hover_in_time"
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if "100k-point map" in line]
    print(lines[0] if lines else f"the page test did not report:\n{run.stdout[-2000:]}")


if __name__ == "__main__":
    main()
