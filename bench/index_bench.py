"""Index bench: each candidate FAISS index vs exact search on the same clustered vectors, one run.

For every candidate it tunes the search parameter (nprobe / efSearch) to the target recall@10 on
held-out queries, then prints build time, batched QPS, single-query latency and the QPS ratio
against exact `IndexFlatIP` measured in the same process. The figures justify `choose_index`.

    python bench/index_bench.py            # 100k x 1280, the issue's figure
    python bench/index_bench.py --quick    # 20k x 256, a minute
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from lookalike.index.choose import choose_index
from lookalike.index.knn import exact_neighbours, held_out_truth, recall_at_k
from lookalike.index.store import load_index, save_index
from lookalike.index.vector_index import VectorIndex


def clustered_vectors(
    n: int, d: int, seed: int = 0, clusters: int = 1000, intrinsic: int = 64, noise: float = 0.5
):
    """L2-normalised vectors with low intrinsic dimension and cluster structure, like embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, intrinsic)).astype(np.float32)
    z = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal(
        (n, intrinsic), np.float32
    )
    lift = rng.standard_normal((intrinsic, d)).astype(np.float32) / np.sqrt(intrinsic)
    x = z @ lift + 0.05 * rng.standard_normal((n, d), np.float32)
    x = x.astype(np.float32)
    faiss.normalize_L2(x)
    return x


def qps(search, queries: np.ndarray) -> float:
    started = time.perf_counter()
    search(queries)
    return len(queries) / (time.perf_counter() - started)


def single_query_ms(search, queries: np.ndarray) -> float:
    times = []
    for row in queries[:200]:
        started = time.perf_counter()
        search(row[None])
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--quick", action="store_true", help="20k x 256 vectors")
    parser.add_argument(
        "--noise", type=float, default=0.5, help="within-cluster spread (harder: 1.0)"
    )
    parser.add_argument(
        "--candidates",
        default="auto;HNSW32,Flat;IVF{nlist},Flat;IVF{nlist},SQ8",
        help="factories, separated by ;",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.d = 20_000, 256
    xb = clustered_vectors(args.n + args.queries, args.d, noise=args.noise)
    xq, xb = xb[: args.queries], xb[args.queries :]
    ids = np.arange(args.n, dtype=np.int64)
    truth = exact_neighbours([(ids, xb)], xq, args.k, "ip")[1]
    rng = np.random.default_rng(1)
    tuning = rng.choice(args.n, 500, replace=False)
    tuning_truth = held_out_truth([(ids, xb)], xb[tuning], ids[tuning], args.k, "ip")
    flat = faiss.IndexFlatIP(args.d)
    flat.add(xb)
    flat_qps = qps(lambda q: flat.search(q, args.k), xq)
    flat_ms = single_query_ms(lambda q: flat.search(q, args.k), xq)
    plan = choose_index(args.n, args.d, "ip")
    print(
        f"{args.n} x {args.d} clustered vectors, {args.queries} queries, k={args.k}, "
        f"{faiss.omp_get_max_threads()} threads; auto choice: {plan.factory} ({plan.reason})"
    )
    print(
        f"{'index':<22} {'build s':>8} {'param':>14} {'recall':>7} {'QPS':>8} "
        f"{'x flat':>7} {'1-query ms':>10}"
    )
    print(
        f"{'Flat (baseline)':<22} {0:>8.1f} {'-':>14} {1:>7.3f} {flat_qps:>8.0f} "
        f"{1:>7.1f} {flat_ms:>10.2f}"
    )
    nlist = plan.nlist_for(args.n)
    for candidate in args.candidates.split(";"):
        factory = plan.factory if candidate == "auto" else candidate.format(nlist=nlist)
        started = time.perf_counter()
        index = VectorIndex.build(ids, xb, factory, "ip", spec={})
        build_s = time.perf_counter() - started
        index.tune(xb[tuning], ids[tuning], tuning_truth, args.target, args.k)
        found = index.search(xq, args.k)[1]
        recall = recall_at_k(found, truth, args.k)
        ours = qps(lambda q, index=index: index.search(q, args.k), xq)
        ms = single_query_ms(lambda q, index=index: index.search(q, args.k), xq)
        with tempfile.TemporaryDirectory() as folder:
            save_index(index, Path(folder))
            same = np.array_equal(
                load_index(Path(folder)).search(xq, args.k)[1], index.search(xq, args.k)[1]
            )
        name = f"{factory}{' (auto)' if candidate == 'auto' else ''}"
        print(
            f"{name:<22} {build_s:>8.1f} {index.param_text():>14} {recall:>7.3f} {ours:>8.0f} "
            f"{ours / flat_qps:>7.1f} {ms:>10.2f}  save/load: {'identical' if same else 'DIFFERENT'}"
        )


if __name__ == "__main__":
    main()
