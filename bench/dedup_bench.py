"""Dedup bench: planted near-duplicates of real photos, lookalike vs perceptual hashing, one run.

Planted copies of scikit-image photos: re-encoded (JPEG q50), resized (60 %), cropped (4 % a side).
The baseline is pHash with a Hamming threshold (what imagededup's hashing methods do). Prints
precision and recall of the planted pairs for both.

    python bench/dedup_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import combinations
from pathlib import Path

import imagehash
from PIL import Image

from lookalike.cli.demo import plant_duplicates
from lookalike.index import Searcher, build_index, find_duplicates
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection


def scores(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="(already quick: ~50 images)")
    parser.add_argument("--threshold", type=float, default=0.15, help="lookalike cosine distance")
    parser.add_argument("--hamming", type=int, default=10, help="pHash bits (imagededup default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "images"
        truth = {tuple(sorted(p)) for p in plant_duplicates(folder)}
        files = sorted(p.name for p in folder.iterdir())

        started = time.perf_counter()
        hashes = {name: imagehash.phash(Image.open(folder / name)) for name in files}
        baseline = {
            (a, b) for a, b in combinations(files, 2) if hashes[a] - hashes[b] <= args.hamming
        }
        baseline_s = time.perf_counter() - started

        started = time.perf_counter()
        embed_images([folder], Path(work) / "c", progress=False)
        build_index(Collection.open(Path(work) / "c"), progress=False)
        searcher = Searcher.open(Path(work) / "c")
        found = find_duplicates(searcher, args.threshold, progress=False)
        name = {
            row["id"]: Path(row["path"]).name for row in searcher.collection.items().to_pylist()
        }
        ours = {
            tuple(sorted((name[a], name[b])))
            for a, b in zip(found.pairs["a"].to_pylist(), found.pairs["b"].to_pylist(), strict=True)
        }
        ours_s = time.perf_counter() - started
    print(f"{len(files)} images, {len(truth)} planted duplicate pairs")
    print(f"{'method':<36} {'precision':>9} {'recall':>7} {'seconds':>8}")
    bp, br = scores(baseline, truth)
    op, orr = scores(ours, truth)
    print(
        f"{f'pHash, Hamming <= {args.hamming} (baseline)':<36} {bp:>9.3f} {br:>7.3f} {baseline_s:>8.1f}"
    )
    print(
        f"{f'lookalike dedup, distance <= {args.threshold}':<36} {op:>9.3f} {orr:>7.3f} {ours_s:>8.1f}"
    )
    print(f"recall ratio (ours / baseline): {orr / br if br else float('inf'):.2f}")


if __name__ == "__main__":
    main()
