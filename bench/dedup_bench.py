"""Dedup bench: planted near-duplicates of real photos, lookalike vs imagededup, one run.

Two planted sets (`planted`): scikit-image's photos with the demo's copies (JPEG q50, 60 % resize,
4 % crop), and 58 other real photos (Debian's ``opencv-doc`` and others) with copies re-encoded
(JPEG q40-70), halved, cropped 5-10 %, brightened or darkened, contrast changed (20-30 %), turned
2-5 degrees, or all of crop, tone, halving and JPEG at once. On each, the same run scores:

- imagededup's PHash with its defaults (Hamming distance <= 10);
- imagededup's CNN with its default (cosine similarity >= 0.9). Its MobileNetV3 weights are
  downloaded at first use; where that fails (offline) the same method runs through its
  `CustomModel` with EfficientNet-Lite0 (lookalike's offline weights), and the row says so;
- lookalike's `find_duplicates` at the old fixed distance 0.15 and at the calibrated one
  (`lookalike.index.calibrate.calibrate_threshold`, timed).

Then recall per edit, lookalike's false pairs, a sweep of the distance 0.05-0.40, and the
distances that meet the target (precision >= 0.98, recall >= 0.95) on each set.
`--calibration-time` times the calibration on a 10k collection (Fashion-MNIST as PNGs, cached under
``bench-data/dedup-10k``; embedding it takes minutes the first time); `--identical` times
`lookalike dedup` on 10k byte-identical copies of one PNG (cached under ``bench-data/dedup-same``),
with its peak RSS; the full run does both after the sets, ``--quick`` skips them.

    python bench/dedup_bench.py [--quick] [--calibration-time] [--identical]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dedup_peers import CNNPeer, Pair, Row, has_imagededup, phash_row, timed
from planted import PlantedSet, opencv_missing, opencv_set, skimage_set
from transfer_bench import FASHION_MNIST, fashion_mnist_missing, read_idx, write_pngs

from lookalike.index import Searcher, build_index, find_duplicates
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

try:  # being written (issue 20); the other rows run without it
    from lookalike.index.calibrate import calibrate_threshold
except ImportError as error:
    calibrate_threshold, CALIBRATE_MISSING = None, str(error)

OLD_THRESHOLD = 0.15
SWEEP = np.round(np.arange(0.05, 0.401, 0.025), 3)
LOOKUP = 0.5  # lookalike's pair distances are looked up to here, for the sweep and target ranges
TARGET = (0.98, 0.95)  # precision, recall
# runs a command and prints its peak RSS: a child forked from this process (torch loaded) would
# count this process's memory as its own (Linux keeps the pre-exec high-water mark)
PEAK_OF_CHILD = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(done.returncode)"
)


@dataclass
class Scored:
    """One set's rows, and lookalike's pair distances (up to the sweep's end) for the sweep."""

    planted: PlantedSet
    rows: list[Row]
    distances: dict[Pair, float]
    calibrated: float | None
    calibrate_s: float | None
    calibration: list[str]  # how the calibration went, in its own words


def scores(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth))


# ---- lookalike ---------------------------------------------------------------------------------


GRID = {"layers": ["embedding", "blocks.6"], "pooling": "grid"}  # the final embedding, and a layout


def open_searcher(folder: Path, collection: Path, options: dict | None = None) -> Searcher:
    embed_images([folder], collection, options, progress=False)
    build_index(Collection.open(collection), progress=False)
    return Searcher.open(collection)


def lookalike_pairs(searcher: Searcher, threshold: float) -> dict[Pair, float]:
    """`find_duplicates` at `threshold`, as {sorted file-name pair: distance}."""
    found = find_duplicates(searcher, threshold, progress=False).item_pairs()  # copies expanded
    items = searcher.collection.items().to_pylist()
    name = {row["id"]: Path(row["path"]).name for row in items}
    return {tuple(sorted((name[a], name[b]))): distance for a, b, distance in found}


def score_set(planted: PlantedSet, cnn: CNNPeer | None, work: Path) -> Scored:
    """The peers' rows, then lookalike's: embedding and indexing are counted in each of its rows,
    the calibration in the calibrated one."""
    rows = [phash_row(planted.folder)] + ([cnn.row(planted.folder)] if cnn else [])
    started = time.perf_counter()
    searcher = open_searcher(planted.folder, work / "collection")
    embed_s = time.perf_counter() - started
    rows.append(
        timed(
            f"lookalike, distance <= {OLD_THRESHOLD} (old)",
            lambda: set(lookalike_pairs(searcher, OLD_THRESHOLD)),
        )
    )
    rows[-1].seconds += embed_s
    distances = lookalike_pairs(searcher, LOOKUP)
    if calibrate_threshold is None:
        return Scored(planted, rows, distances, None, None, [])
    started = time.perf_counter()
    calibration = calibrate_threshold(searcher, progress=False)
    calibrate_s, calibrated = time.perf_counter() - started, float(calibration.threshold)
    rows.append(
        timed(
            f"lookalike, calibrated ({calibrated:.3f})",
            lambda: set(lookalike_pairs(searcher, calibrated)),
        )
    )
    rows[-1].seconds += embed_s + calibrate_s
    rows.append(grid_row(planted, work))
    return Scored(planted, rows, distances, calibrated, calibrate_s, calibration.lines())


def grid_row(planted: PlantedSet, work: Path) -> Row:
    """Calibrated dedup on `blocks.6` pooled on a 3 x 3 grid (`--pooling grid`): the layout."""
    started = time.perf_counter()
    open_searcher(planted.folder, work / "grid", GRID)
    searcher = Searcher.open(work / "grid", "blocks.6")
    threshold = calibrate_threshold(searcher, progress=False).threshold
    found = set(lookalike_pairs(searcher, threshold))
    name = f"lookalike, calibrated ({threshold:.3f}), blocks.6 grid"
    return Row(name, found, time.perf_counter() - started)


# ---- printing ----------------------------------------------------------------------------------


def print_set(scored: Scored) -> None:
    planted, truth = scored.planted, scored.planted.pairs
    originals = sum(kind == "original" for kind in planted.kinds.values())
    print(
        f"\n== {planted.name}: {len(planted.kinds)} images ({originals} originals), {len(truth)} planted pairs"
    )
    print(f"{'method':<44} {'pairs':>5} {'false':>5} {'precision':>9} {'recall':>7} {'seconds':>8}")
    for row in scored.rows:
        precision, recall = scores(row.found, truth)
        print(
            f"{row.method:<44} {len(row.found):>5} {len(row.found - truth):>5} "
            f"{precision:>9.3f} {recall:>7.3f} {row.seconds:>8.1f}"
        )
    if scored.calibrate_s is not None:
        print(f"calibrate_threshold, {scored.calibrate_s:.1f} s: " + "\n".join(scored.calibration))
    print_ratio(scored.rows, truth)
    print_recall_by_edit(scored)
    print_false_pairs(scored)


def print_ratio(rows: list[Row], truth: set[Pair]) -> None:
    base_p, base_r = scores(rows[0].found, truth)
    ours_p, ours_r = scores(rows[-1].found, truth)
    ratio = (ours_r / base_r) if base_r else float("inf")
    print(
        f"{rows[-1].method} / {rows[0].method}: recall x{ratio:.2f}, precision {ours_p:.3f} vs {base_p:.3f}"
    )


def print_recall_by_edit(scored: Scored) -> None:
    kinds = sorted({scored.planted.pair_kind(pair) for pair in scored.planted.pairs})
    print(f"recall by edit {'':<29} " + " ".join(f"{kind:>10}" for kind in kinds))
    for row in scored.rows:
        cells = []
        for kind in kinds:
            pairs = {p for p in scored.planted.pairs if scored.planted.pair_kind(p) == kind}
            cells.append(f"{len(row.found & pairs):>4}/{len(pairs):<5}")
        print(f"  {row.method:<42} " + " ".join(cells))


def print_false_pairs(scored: Scored, shown: int = 6) -> None:
    """For lookalike's rows: the false pairs by the two photos they were made from (a look-alike
    photo with copies gives several), and the planted pairs missed, farthest first."""
    planted, distances = scored.planted, scored.distances
    for row in (row for row in scored.rows if row.method.startswith("lookalike")):
        false = Counter(
            " ~ ".join(sorted({planted.sources[a], planted.sources[b]}))
            for a, b in row.found - planted.pairs
        )
        if false:
            listed = ", ".join(f"{pair} ({count})" for pair, count in false.most_common(shown))
            print(
                f"  {row.method}: false pairs from {listed}{' ...' if len(false) > shown else ''}"
            )
        missed = sorted(planted.pairs - row.found, key=lambda pair: -distances.get(pair, 9))
        if missed:
            listed = ", ".join(
                f"{a} ~ {b} ({distances.get((a, b), 9):.3f})" for a, b in missed[:shown]
            )
            print(
                f"  {row.method}: {len(missed)} missed: {listed}{' ...' if len(missed) > shown else ''}"
            )


def print_sweep(sets: list[Scored]) -> None:
    thresholds = sorted(
        {*SWEEP.tolist(), *(s.calibrated for s in sets if s.calibrated is not None)}
    )
    print("\n== lookalike's distance threshold: precision / recall")
    print(f"{'distance':>8}   " + "   ".join(f"{short(s):>27}" for s in sets))
    for threshold in thresholds:
        cells = []
        for scored in sets:
            found = {p for p, d in scored.distances.items() if d <= threshold}
            precision, recall = scores(found, scored.planted.pairs)
            mark = "*" if precision >= TARGET[0] and recall >= TARGET[1] else " "
            cells.append(f"{precision:>10.3f} / {recall:.3f} {mark:>5}")
        notes = [f"old {OLD_THRESHOLD}"] if threshold == OLD_THRESHOLD else []
        notes += [f"calibrated on {short(s)}" for s in sets if s.calibrated == threshold]
        print(
            f"{threshold:>8.3f}   "
            + "   ".join(cells)
            + ("   <- " + ", ".join(notes) if notes else "")
        )
    print(f"(* meets the target: precision >= {TARGET[0]}, recall >= {TARGET[1]})")
    for scored in sets:
        print(f"{short(scored)}: {target_range(scored)}")


def short(scored: Scored) -> str:
    return scored.planted.name.partition(":")[0]


def target_range(scored: Scored) -> str:
    """The distances (exact, between found pair distances) that meet the target, and the best F1."""
    edges = sorted(set(scored.distances.values()))
    met, best = [], (0.0, 0.0)
    for low, high in zip(edges, [*edges[1:], LOOKUP], strict=True):
        found = {p for p, d in scored.distances.items() if d <= low}
        precision, recall = scores(found, scored.planted.pairs)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        best = (f1, low) if f1 > best[0] else best
        if precision >= TARGET[0] and recall >= TARGET[1]:
            met.append((low, high))
    spans = ", ".join(
        f"[{low:.3f}, {high:.3f})" if high < LOOKUP else f">= {low:.3f} (up to {LOOKUP} looked at)"
        for low, high in merge(met)
    )
    return (
        f"target met for distances {spans or 'nowhere'}; best F1 {best[0]:.3f} from {best[1]:.3f}"
    )


def merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for low, high in spans:
        if merged and merged[-1][1] >= low:
            merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


# ---- calibration time on 10k -------------------------------------------------------------------


def calibration_time(workdir: Path, n: int) -> None:
    """Embed `n` Fashion-MNIST training images (once; cached), then time the calibration."""
    print(f"\n== calibration time on a {n}-item collection (Fashion-MNIST PNGs, {workdir})")
    if fashion_mnist_missing(FASHION_MNIST):
        return
    images = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:n]
    labels = read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")[:n]
    write_pngs(images, labels, np.arange(n), workdir / "images")
    started = time.perf_counter()
    searcher = open_searcher(workdir / "images", workdir / "collection")
    print(
        f"embed (new items only) + index: {time.perf_counter() - started:.1f} s, {len(searcher.collection)} items"
    )
    if calibrate_threshold is None:
        print(f"SKIPPED: lookalike.index.calibrate not importable ({CALIBRATE_MISSING})")
        return
    started = time.perf_counter()
    calibration = calibrate_threshold(searcher, progress=False)
    calibrate_s = time.perf_counter() - started
    print(f"calibrate_threshold, {calibrate_s:.1f} s: " + "\n".join(calibration.lines()))
    started = time.perf_counter()
    found = find_duplicates(searcher, calibration.threshold, progress=False)
    print(f"find_duplicates at it: {time.perf_counter() - started:.1f} s, {found.pair_count} pairs")


# ---- identical copies --------------------------------------------------------------------------


def identical_time(workdir: Path, n: int) -> None:
    """`n` byte-identical copies of one tiny PNG, embedded and indexed (once; cached), then
    `lookalike dedup` with default options timed in a child process, with its peak RSS."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    print(f"\n== dedup of {n} identical copies of one PNG ({workdir})")
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    first = images / "00000.png"
    if not first.exists():
        pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(first)
    for number in range(1, n):
        if not (images / f"{number:05d}.png").exists():
            shutil.copy(first, images / f"{number:05d}.png")
    open_searcher(images, workdir / "collection", {"image_size": 64})
    command = [sys.executable, "-m", "lookalike", "dedup", "-c", str(workdir / "collection"), "-q"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    summary = [line for line in done.stdout.splitlines() if "pairs within" in line]
    peak_kib = int(done.stdout.rsplit("PEAK_KIB", 1)[-1].split()[0])
    print(
        f"lookalike dedup (default options): {seconds:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB, "
        f"exit {done.returncode}: {summary[0] if summary else done.stderr.strip()[-300:]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="both sets, no 10k calibration timing")
    parser.add_argument("--calibration-time", action="store_true", help="only the 10k timing")
    parser.add_argument("--identical", action="store_true", help="only the identical copies")
    parser.add_argument("--n", type=int, default=10_000, help="collection size for the timing")
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/dedup-10k"))
    args = parser.parse_args()
    logging.disable(logging.INFO)  # imagededup logs every step to stderr at INFO
    alone = args.calibration_time or args.identical
    if not alone:
        compare()
    if args.calibration_time or not (args.quick or alone):
        calibration_time(args.workdir, args.n)
    if args.identical or not (args.quick or alone):
        identical_time(args.workdir.with_name("dedup-same"), args.n)


def compare() -> None:
    if calibrate_threshold is None:
        print(
            f"NOTE: no calibrated row: lookalike.index.calibrate not importable ({CALIBRATE_MISSING})"
        )
    cnn = CNNPeer() if has_imagededup() else None
    builders = [("skimage", skimage_set), ("opencv", opencv_set)]
    sets = []
    with tempfile.TemporaryDirectory() as work:
        for name, build in builders:
            if name == "opencv" and opencv_missing():
                print(f"SKIPPED set 2: {opencv_missing()}")
                continue
            planted = build(Path(work) / name / "images")
            sets.append(score_set(planted, cnn, Path(work) / name))
            print_set(sets[-1])
    print_sweep(sets)
    if cnn is not None and cnn.note:
        print(cnn.note)
    elif cnn is None:
        print(
            "imagededup not installed (pip install --no-deps imagededup==0.3.3.post2): no CNN row"
        )


if __name__ == "__main__":
    main()
