"""Bounded build bench: `lookalike index build --memory-budget` on a collection larger than the
budget, against the same build with no budget, same data, same run.

The collection is written through the store's writer in blocks (generating it is bounded too):
clustered, L2-normalised vectors of low intrinsic dimension, like embeddings. Each build runs in
a subprocess that only runs the CLI command, and reports its own peak RSS (`VmHWM`; a forked
child's `getrusage` maximum starts at its parent's) and how far it rose above the libraries'
import. Recall@10 is measured on fresh queries (drawn from the same clusters,
never stored) against exact search block by block (`lookalike.index.knn`).

    python bench/bigbuild_bench.py            # 2M x 512 (3.8 GiB raw), budget 1 GiB: the issue's figure
    python bench/bigbuild_bench.py --quick    # 200k x 512, budget 0.1 GiB (the same ratio), a few minutes

The data lives under bench-data/ (git-ignored) and is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from lookalike.embedder.spec import BackboneSpec, Preprocess
from lookalike.index.choose import block_rows
from lookalike.index.knn import exact_neighbours, recall_at_k
from lookalike.index.store import index_dir, load_index
from lookalike.store.collection import Collection

GIB = 2**30
LAYER = "embedding"
BLOCK = 65_536  # vectors generated and written at once
BUILD = """
import json, sys, time
import faiss, numpy, pyarrow, tqdm, lookalike.index.maintain
from lookalike.cli import main
def peak_kib():  # this process's own high-water mark (ru_maxrss would start at the parent's)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = peak_kib()
started = time.perf_counter()
main(sys.argv[1:], standalone_mode=False)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "before_kib": before, "peak_kib": peak_kib()}))
"""


class Clusters:
    """Clustered, L2-normalised vectors, generated any number of rows at a time."""

    def __init__(self, d: int, clusters: int = 1000, intrinsic: int = 64, noise: float = 0.5):
        rng = np.random.default_rng(0)
        self.centres = rng.standard_normal((clusters, intrinsic)).astype(np.float32)
        self.lift = (rng.standard_normal((intrinsic, d)) / np.sqrt(intrinsic)).astype(np.float32)
        self.noise = noise

    def block(self, seed: int, count: int) -> np.ndarray:
        rng = np.random.default_rng(seed + 1)
        picked = self.centres[rng.integers(0, len(self.centres), count)]
        z = picked + self.noise * rng.standard_normal(picked.shape, np.float32)
        x = z @ self.lift + 0.05 * rng.standard_normal((count, self.lift.shape[1]), np.float32)
        faiss.normalize_L2(x)
        return x


def make_collection(path: Path, n: int, d: int, clusters: Clusters) -> Collection:
    """`n` vectors written shard by shard; an existing complete collection is reused."""
    if Collection.exists(path):
        collection = Collection.open(path)
        if len(collection) == n and collection.spec.dims[LAYER] == d:
            print(f"reusing {path}")
            return collection
        shutil.rmtree(path)
    spec = BackboneSpec(
        backbone="synthetic",
        weights=None,
        layers=(LAYER,),
        pooling="avg",
        normalize=True,
        dims={LAYER: d},
        preprocess=Preprocess(resize=8, crop=8, mean=(0.5,) * 3, std=(0.5,) * 3),
        dtype="float32",
    )
    collection = Collection.create(path, spec)
    with collection.writer(shard_size=8192) as writer, tqdm(total=n, desc="writing") as bar:
        for start in range(0, n, BLOCK):
            count = min(BLOCK, n - start)
            rows = [
                {"path": f"/synthetic/{i:07d}.jpg", "sha256": f"{i:064x}", "bytes": 1}
                for i in range(start, start + count)
            ]
            writer.add(rows, {LAYER: clusters.block(start // BLOCK, count)})
            bar.update(count)
    return Collection.open(path)


def build(path: Path, budget_gib: float | None) -> dict:
    """Run `lookalike index build` in a subprocess; its seconds and peak RSS."""
    args = ["index", "build", "-c", str(path), "-q"]
    args += [] if budget_gib is None else ["--memory-budget", f"{budget_gib:.4f}"]
    done = subprocess.run(
        [sys.executable, "-c", BUILD, *args], capture_output=True, text=True, env=os.environ
    )
    if done.returncode:
        sys.exit(f"build failed:\n{done.stdout}\n{done.stderr}")
    *said, figures = done.stdout.strip().splitlines()
    return {**json.loads(figures), "said": said}


def measure(path: Path, xq: np.ndarray, truth: np.ndarray, k: int) -> dict:
    """The saved index loaded as a server loads it (read-only: memory-mapped when large)."""
    index = load_index(index_dir(path, LAYER), read_only=True)
    started = time.perf_counter()
    found = index.search(xq, k)[1]
    seconds = time.perf_counter() - started
    return {
        "factory": index.meta.factory,
        "tuned": index.param_text(),
        "recall": recall_at_k(found, truth, k),
        "qps": len(xq) / seconds,
        "file_gib": _size(index_dir(path, LAYER)) / GIB,
    }


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _compare(ours: dict, base: dict) -> None:
    print(
        f"ours / baseline: peak RSS x{ours['peak_kib'] / base['peak_kib']:.2f}, build time "
        f"x{ours['seconds'] / base['seconds']:.2f}, recall {ours['recall'] - base['recall']:+.3f}, "
        f"QPS x{ours['qps'] / base['qps']:.2f}; load now {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--budget", type=float, default=1.0, help="GiB for the bounded build")
    parser.add_argument("--bound", type=float, default=1.5, help="peak RSS GiB to stay under")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="200k x 512, budget / 10")
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the build with no budget (full size: 5.7 GiB and as long again)",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.budget = 200_000, args.budget / 10
    path = args.data / f"bigbuild-{args.n}x{args.d}"
    clusters = Clusters(args.d)
    collection = make_collection(path, args.n, args.d, clusters)
    xq = clusters.block(10**6, args.queries)  # fresh: a seed no stored block used
    started = time.perf_counter()
    blocks = collection.iter_embeddings(LAYER, block_rows(args.d, int(args.budget * GIB)))
    truth = exact_neighbours(blocks, xq, args.k, "ip")[1]
    exact_qps = args.queries / (time.perf_counter() - started)
    raw = args.n * args.d * 4 / GIB
    print(
        f"{args.n:,} x {args.d} clustered vectors ({raw:.2f} GiB raw), {args.queries} fresh "
        f"queries, k={args.k}, {faiss.omp_get_max_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    print(f"exact search, blockwise from the shards: {exact_qps:.0f} QPS")
    header = f"{'build':<28} {'index':<14} {'tuned':<10} {'build s':>8} {'peak RSS GiB':>12}"
    print(f"{header} {'RSS growth':>10} {'index GiB':>9} {'recall@10':>9} {'QPS':>7}")
    rows = {}
    ours_name, base_name = f"budget {args.budget:g} GiB", "no budget (baseline)"
    builds = [(ours_name, args.budget)] + ([] if args.no_baseline else [(base_name, None)])
    for name, budget in builds:  # the figure first
        built = build(path, budget)
        rows[name] = row = {**built, **measure(path, xq, truth, args.k)}
        peak, growth = row["peak_kib"] / 2**20, (row["peak_kib"] - row["before_kib"]) / 2**20
        print(
            f"{name:<28} {row['factory']:<14} {row['tuned']:<10} {row['seconds']:>8.1f} "
            f"{peak:>12.2f} {growth:>10.2f} {row['file_gib']:>9.2f} {row['recall']:>9.3f} "
            f"{row['qps']:>7.0f}"
        )
    ours = rows[ours_name]
    if base_name in rows:
        _compare(ours, rows[base_name])
    peak = ours["peak_kib"] / 2**20
    growth = (ours["peak_kib"] - ours["before_kib"]) / 2**20
    verdicts = [
        (
            "compressed (raw vectors exceed the budget)",
            raw > args.budget and "Flat" not in ours["factory"],
        ),
        (f"peak RSS {peak:.2f} <= {args.bound:.2f} GiB", peak <= args.bound),
        (f"RSS growth {growth:.2f} <= 1.5 x budget", growth <= 1.5 * args.budget),
        (f"recall@10 {ours['recall']:.3f} >= 0.90", ours["recall"] >= 0.90),
    ]
    for what, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {what}")
    if not args.keep:
        shutil.rmtree(path)
    sys.exit(0 if all(ok for _, ok in verdicts) else 1)


if __name__ == "__main__":
    main()
