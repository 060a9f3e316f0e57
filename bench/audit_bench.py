"""Audit figures: flipped labels found, planted photos found, copies across splits found.

Fashion-MNIST training images (Debian's `dataset-fashion-mnist`) with 20 real photos planted among
them and a few edited copies of clothes, embedded once with `lookalike embed`'s defaults (the
offline EfficientNet-Lite0) under --workdir. 5 % of the clothes' labels are flipped at random
(seeded) in a labels table; the audit (`audit_collection`, defaults) ranks them. Printed beside it,
from the same out-of-fold probabilities: the baseline "lowest probability of the given label",
and cleanlab's other quality scores. Timings are of this run, on whatever the machine shares.

    python bench/audit_bench.py --quick    # 1,000 clothes, 10 photos (the embedding takes a minute)
    python bench/audit_bench.py            # 2,000 clothes, 20 photos
    python bench/audit_bench.py --picture docs/audit.png   # also the README's audit sheet
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from audit_data import prepare
from PIL import Image, ImageEnhance
from transfer_bench import CLASSES, FASHION_MNIST, fashion_mnist_missing

from lookalike.explore.audit import audit_collection
from lookalike.explore.audit_sheet import audit_sheet
from lookalike.explore.label_errors import QUALITY_METHODS, rank_label_errors
from lookalike.jobs.bulk import embed_images

FLIP_SHARE = 0.05
COPIES = 10


def flip_labels(truth: dict[str, str], seed: int = 0) -> tuple[dict[str, str], set[str]]:
    """The labels with `FLIP_SHARE` of them changed to another class at random; the flipped paths."""
    rng = np.random.default_rng(seed)
    paths = sorted(truth)
    flipped = set(rng.choice(paths, round(FLIP_SHARE * len(paths)), replace=False).tolist())
    given = dict(truth)
    for path in sorted(flipped):
        given[path] = str(rng.choice([c for c in CLASSES if c != truth[path]]))
    return given, flipped


def plant_copies(truth: dict[str, str], work: Path, seed: int = 0) -> dict[str, tuple[str, str]]:
    """`COPIES` clothes copied under images/copies: half re-encoded as JPEG (q90), half cropped a
    pixel a side and brightened 15 %; copy -> (original, kind)."""
    rng = np.random.default_rng(seed + 1)
    originals = rng.choice(sorted(truth), COPIES, replace=False)
    folder = work / "images/copies"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = {}
    for number, original in enumerate(originals):
        kind = "jpeg q90" if number % 2 == 0 else "crop + brightness"
        suffix = ".jpg" if kind == "jpeg q90" else ".png"
        target = (folder / f"copy-{Path(original).stem}{suffix}").resolve()
        if not target.exists():
            image = Image.open(original).convert("L")
            if kind == "jpeg q90":
                image.save(target, quality=90)
            else:
                image = ImageEnhance.Brightness(image.crop((1, 1, 27, 27))).enhance(1.15)
                image.save(target)
        pairs[str(target)] = (str(original), kind)
    return pairs


def write_table(path: Path, column: str, values: dict[str, str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", column])
        writer.writerows(sorted(values.items()))
    return path


def precision_at(ranked_paths: list[str], wanted: set[str], n: int) -> float:
    return sum(path in wanted for path in ranked_paths[:n]) / n


def label_figures(report, flipped: set[str], n: int) -> None:
    """precision@n of the audit's ranking, of the baseline and of the alternatives, all from the
    same out-of-fold probabilities."""
    errors = report.label_errors
    paths = [report.path(i) for i in errors.ids]
    targets = np.searchsorted(errors.classes, errors.given.astype(str))
    rows = np.arange(len(targets))

    def precision(order) -> float:
        return precision_at([paths[i] for i in order], flipped, n)

    ours = precision(rows)  # the audit's own order
    baseline = precision(np.argsort(errors.probabilities[rows, targets], kind="stable"))
    print(f"label errors ({errors.method}; {len(flipped)} of {len(errors)} labels flipped):")
    print(f"  {'ranking':<60} precision@{n}")
    print(f"  {'baseline: lowest CV probability of the given label':<60} {baseline:.3f}")
    print(f"  {'lookalike audit (cleanlab label quality; the default)':<60} {ours:.3f}")
    flagged_paths = {p for p, f in zip(paths, errors.flagged, strict=True) if f}
    print(
        f"  ratio audit / baseline: {ours / baseline:.3f}; confident learning flagged "
        f"{len(flagged_paths)}, of which flipped {len(flagged_paths & flipped)}"
    )
    for method in QUALITY_METHODS:
        _, quality, flags = rank_label_errors(targets, errors.probabilities, method)
        alone = precision(np.argsort(quality, kind="stable"))
        first = precision(np.lexsort((quality, ~flags)))
        print(f"    cleanlab {method:<28} alone {alone:.3f}, flagged first {first:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/audit"))
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    parser.add_argument("--picture", type=Path, help="Also write the audit sheet here.")
    args = parser.parse_args()
    if fashion_mnist_missing(args.data):
        return 0
    images, photos = (1000, 10) if args.quick else (2000, 20)
    work = args.workdir / "quick" if args.quick else args.workdir
    data = prepare(args.data, work, images, photos)
    copies = plant_copies(data["truth"], work)
    embed_images([work / "images"], work / "collection", {}, batch_size=8, progress=False)
    given, flipped = flip_labels(data["truth"])
    labels = write_table(work / "labels.csv", "label", given)
    rng = np.random.default_rng(2)
    splits = {path: str(rng.choice(["train", "test"])) for path in data["truth"]}
    splits.update({copy: "test" for copy in copies} | {o: "train" for o, _ in copies.values()})
    split_file = write_table(work / "splits.csv", "split", splits)
    print(f"load before: {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    report = audit_collection(work / "collection", labels=labels, splits=split_file)
    seconds = time.perf_counter() - started
    n = len(flipped)
    label_figures(report, flipped, n)
    top = [report.path(i) for i in report.outliers.ids[: 2 * photos]]
    found = sum(p in set(data["photos"]) for p in top)
    print(
        f"outliers: {found} of {photos} planted photos in the top {2 * photos} "
        f"({int(report.outliers.flagged.sum())} flagged of {len(report.outliers.ids)})"
    )
    leaks = {
        (report.path(a), report.path(b))
        for a, b in zip(report.leaks.a, report.leaks.b, strict=True)
    }
    for kind in sorted({kind for _, kind in copies.values()}):
        planted = [(copy, original) for copy, (original, k) in copies.items() if k == kind]
        found = sum((c, o) in leaks or (o, c) in leaks for c, o in planted)
        print(f"leaks: {found} of {len(planted)} planted copies ({kind}) found across splits")
    how = "calibrated" if report.leaks.calibration else "given"
    print(f"leaks: {len(leaks)} pairs across splits within {report.leaks.threshold:.3f} ({how})")
    print(
        "seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())
        + f"; total {seconds:.1f}; load after: {os.getloadavg()[0]:.2f}"
    )
    sheet = audit_sheet(report, args.picture or work / "audit.png")
    print(f"audit sheet: {sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
