"""Milvus bench: the same searches through FAISS Flat (the baseline) and Milvus FLAT, one run.

One collection of clustered unit vectors, pushed into a Milvus Lite server started here; the same
queries (stored vectors plus noise) through `Searcher.search_vectors` on both stores: top-k,
label and path-prefix filters, a distance threshold (range search) and all at once. Prints, per
case, whether the id sets are identical, the seconds of each and the ratio; and the push rate.
Milvus Lite is a Python engine: its speed here says nothing of a Milvus server's.

    python bench/milvus_bench.py            # 20k x 128, 200 queries (the issue's figure)
    python bench/milvus_bench.py --quick    # 2k x 64, 50 queries
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from index_bench import clustered_vectors

from lookalike.embedder.spec import BackboneSpec, Preprocess
from lookalike.index import Filters, Searcher
from lookalike.index.maintain import exact_index
from lookalike.index.milvus_sync import open_milvus, push
from lookalike.store.collection import Collection

LABELS = 10


def make_collection(folder: Path, n: int, d: int) -> Collection:
    spec = BackboneSpec(
        backbone="synthetic",
        weights=None,
        layers=("embedding",),
        pooling="avg",
        normalize=True,
        dims={"embedding": d},
        preprocess=Preprocess(resize=72, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3),
        dtype="float32",
    )
    collection = Collection.create(folder, spec)
    vectors = clustered_vectors(n, d, clusters=max(20, n // 100))
    rows = [{"path": f"photos/{i % 7}/{i}.jpg", "label": f"group-{i % LABELS}"} for i in range(n)]
    with collection.writer(shard_size=10_000) as writer:
        writer.add(rows, {"embedding": vectors})
    return collection


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_milvus_lite(data: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"milvus://127.0.0.1:{port}"
        time.sleep(0.2)
    server.kill()
    raise SystemExit("milvus-lite server did not start")


def timed(searcher: Searcher, queries: np.ndarray, **options) -> tuple[float, list[set[int]]]:
    started = time.perf_counter()
    results = searcher.search_vectors(queries, **options)
    return time.perf_counter() - started, [{hit.id for hit in hits} for hits in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2k x 64, 50 queries")
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.queries = 2_000, 64, 50
    with tempfile.TemporaryDirectory() as tmp:
        collection = make_collection(Path(tmp) / "c", args.n, args.d)
        faiss_searcher = Searcher(collection, exact_index(collection, "embedding"), "embedding")
        server, base = start_milvus_lite(Path(tmp) / "milvus")
        try:
            run(collection, faiss_searcher, f"{base}/bench", args)
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(collection: Collection, faiss_searcher: Searcher, uri: str, args) -> None:
    started = time.perf_counter()
    push(collection, uri, progress=True)
    pushed = time.perf_counter() - started
    milvus_searcher = Searcher(collection, open_milvus(uri, collection), "embedding")
    print(
        f"{args.n} x {args.d} clustered unit vectors, {args.queries} queries, cosine; load {os.getloadavg()[0]:.1f}"
    )
    print(f"push into Milvus Lite: {pushed:.1f} s ({args.n / pushed:,.0f} vectors/s, FLAT)")
    rng = np.random.default_rng(3)
    picked = rng.choice(args.n, args.queries, replace=False)
    queries = collection.vectors(picked, "embedding") + 0.02 * rng.standard_normal(
        (args.queries, args.d), np.float32
    )
    twentieth = [hits[-1].distance for hits in faiss_searcher.search_vectors(queries, k=20)]
    threshold = float(np.median(twentieth))
    cases = {
        "top-10": {"k": 10},
        "top-10, label": {"k": 10, "filters": Filters(labels=("group-3",))},
        "top-10, path prefix": {"k": 10, "filters": Filters(path_prefix="photos/2/")},
        f"threshold {threshold:.4f}": {"k": None, "threshold": threshold},
        "top-5 + threshold + label + prefix": {
            "k": 5,
            "threshold": threshold * 2,
            "filters": Filters(labels=("group-1", "group-4"), path_prefix="photos/3/"),
        },
    }
    print(f"{'case':<40} {'identical':>10} {'FAISS s':>9} {'Milvus s':>9} {'ratio':>7}")
    for name, options in cases.items():
        for searcher in (faiss_searcher, milvus_searcher):  # warm: filters' first table scan
            searcher.search_vectors(queries[:2], **options)
        faiss_s, expected = timed(faiss_searcher, queries, **options)
        milvus_s, found = timed(milvus_searcher, queries, **options)
        same = sum(a == b for a, b in zip(expected, found, strict=True))
        print(
            f"{name:<40} {same:>5}/{len(queries):<4} {faiss_s:>9.3f} {milvus_s:>9.3f} "
            f"{milvus_s / faiss_s:>6.0f}x"
        )
        for a, b in zip(expected, found, strict=True):
            if a != b:
                print(
                    f"   differs: FAISS only {sorted(a - b)[:5]}, Milvus only {sorted(b - a)[:5]}"
                )
                break


if __name__ == "__main__":
    main()
