"""Layer bench: `train --layer auto` vs the final embedding, the probe's best single layer and raw
pixels, on scikit-learn's digits and Fashion-MNIST, one run.

For each set the images are written as PNGs (one folder per class) and embedded through the
product's bulk embedder with its defaults (the embedding and the cached inner stages). Then, on the
same labelled items and the same stratified 5-fold CV (seed 0):

- probe:  `lookalike probe -c` over every item (the deepest stages x avg/max/gem): its best row;
- final:  `lookalike train --layer embedding` (the layer `train` used before `auto`; the baseline);
- auto:   `lookalike train` (`--layer auto`): its choice and selection score, and with `--nested`
          the honest nested-CV score of the same procedure;
- pixels: the same logistic-regression pipeline on raw pixels, same folds.

Selection scores (probe best, auto) are a maximum over candidates scored on the same folds; nested
CV is not. The embed cost of the cached inner stages (bytes per image; images/s of the bulk job and
of the model alone, best of 3 interleaved rounds) is measured on the first set against an
embedding-only collection, same images, same run.

    python bench/layer_bench.py --quick    # digits 400, Fashion-MNIST 1k
    python bench/layer_bench.py            # + all 1,797 digits, Fashion-MNIST 10k
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from transfer_bench import FASHION_MNIST, fashion_mnist_missing, load, nested_order, write_pngs

from lookalike.classify import make_model, probe_collection, train_classifier
from lookalike.embedder import get_backbone
from lookalike.embedder.export import use_engine
from lookalike.jobs.bulk import embed_images
from lookalike.store.collection import Collection

DIGIT_SIZE = 32  # as `lookalike demo` writes them
FOLDS = 5


def write_digits(root: Path, per_class: int | None) -> dict[str, np.ndarray]:
    """scikit-learn's digits as dark-ink PNGs; `per_class` first of each digit (None: all)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = {}
    for digit in range(10):
        rows = np.flatnonzero(digits.target == digit)[:per_class]
        for row in rows:
            path = root / str(digit) / f"digit-{row:04d}.png"
            ink = (255 - digits.images[row] * (255 / 16)).astype(np.uint8)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(ink).resize((DIGIT_SIZE, DIGIT_SIZE), Image.NEAREST)
                image.save(path)
            pixels[str(path.resolve())] = digits.images[row].ravel() / 16
    return pixels


def write_fashion(root: Path, size: int, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first `size` training images of a class-balanced order (1k inside 10k)."""
    rows = nested_order(data["train_y"])[:size]
    paths = write_pngs(data["train_x"], data["train_y"], rows, root)
    return {
        str(p.resolve()): data["train_x"][row].ravel() / 255
        for p, row in zip(paths, rows, strict=True)
    }


def datasets(quick: bool, data_dir: Path) -> list[tuple[str, Callable[[Path], dict]]]:
    sets = [("digits 400 (40/class)", lambda root: write_digits(root, 40))]
    if not quick:
        sets.append(("digits 1797 (all)", lambda root: write_digits(root, None)))
    if not fashion_mnist_missing(data_dir):
        fashion = load(data_dir)
        for size in (1000,) if quick else (1000, 10000):
            sets.append(
                (
                    f"Fashion-MNIST {size // 1000}k",
                    lambda root, n=size: write_fashion(root, n, fashion),
                )
            )
    return sets


def pixel_score(collection: Collection, pixels: dict[str, np.ndarray]) -> float:
    """Logistic regression on raw pixels, the items in the collection's order, same folds."""
    items = collection.items(["path", "label"]).to_pylist()
    x = np.stack([pixels[item["path"]] for item in items]).astype(np.float32)
    labels = [item["label"] for item in items]
    y = np.searchsorted(sorted(set(labels)), labels)
    counts = np.bincount(y)
    cv = StratifiedKFold(n_splits=min(FOLDS, int(counts.min())), shuffle=True, random_state=0)
    smallest = len(y) - -(-len(y) // cv.get_n_splits())
    model = make_model("logreg", smallest, int(counts.min()))
    return float(np.mean(cross_val_predict(model, x, y, cv=cv) == y))


def embed_cost(images: Path, work: Path, image_size: int | None, rounds: int = 3) -> dict:
    """Bytes per image and images/s, the default layers against the embedding alone: the bulk
    job end to end (`embed` into a fresh collection: its loop's images/s) and the model alone
    (ONNX Runtime, what a CPU embeds with, on one batch of 16), best of `rounds` interleaved."""
    options = {"image_size": image_size} if image_size else {}
    kinds = {"embedding only": ("embedding",), "default": None}
    found = {name: {"job": 0.0, "model": 0.0} for name in kinds}
    for _ in range(rounds):
        for name, layers in kinds.items():
            scratch = work / f"cost-{name.split()[0]}"
            shutil.rmtree(scratch, ignore_errors=True)
            embedder = {**options, "layers": layers}
            report = embed_images([images], scratch, embedder, batch_size=16, progress=False)
            spec = Collection.open(scratch).spec
            stored = sum(p.stat().st_size for p in scratch.glob("shards/*/*.npy"))
            with use_engine(get_backbone(**embedder, device="cpu"), "onnx", scratch) as model:
                batch = torch.randn(16, 3, spec.preprocess.crop, spec.preprocess.crop)
                model.embed(batch)  # warm-up
                started = time.perf_counter()
                for _ in range(10):
                    model.embed(batch)
                model_rate = 160 / (time.perf_counter() - started)
            found[name] = {
                "layers": list(spec.layers),
                "vector_bytes_per_image": 4 * sum(spec.dims.values()),
                "npy_bytes_per_image": round(stored / report.embedded),
                "job": max(found[name]["job"], round(report.images_per_second, 1)),
                "model": max(found[name]["model"], round(model_rate, 1)),
            }
            shutil.rmtree(scratch, ignore_errors=True)
    return found


def run_set(name: str, writer, work: Path, image_size: int | None, nested: bool) -> dict:
    folder = work / name.split(" (")[0].replace(" ", "-").lower()
    pixels = writer(folder / "images")
    options = {"image_size": image_size} if image_size else {}
    embed_images(
        [folder / "images"], folder / "collection", options, labels_from_folders=True,
        batch_size=16, progress=False,
    )  # fmt: skip
    collection = Collection.open(folder / "collection")
    started = time.perf_counter()
    probed = probe_collection(collection, sample=len(pixels), progress=False)
    probe_seconds = time.perf_counter() - started
    final = train_classifier(collection, "final", layer="embedding", overwrite=True)
    started = time.perf_counter()
    auto = train_classifier(collection, "auto", overwrite=True)
    auto_seconds = time.perf_counter() - started
    result = {
        "items": final.card["n_train"],
        "probe_best": {"key": probed.best.key, "accuracy": probed.best.accuracy},
        "probe_seconds": round(probe_seconds, 1),
        "final": final.evaluation.accuracy,
        "auto": auto.evaluation.accuracy,
        "auto_choice": "+".join(auto.card["layers"]),
        "auto_candidates": auto.card["layer_choice"]["candidates"],
        "auto_seconds": round(auto_seconds, 1),
        "pixels": pixel_score(collection, pixels),
    }
    if nested:
        honest = train_classifier(collection, "auto-nested", nested=True, overwrite=True)
        result["auto_nested"] = honest.evaluation.accuracy
    top = ", ".join(f"{row.key} {row.accuracy:.3f}" for row in probed.rows[:4])
    print(f"\n{name}: {result['items']} images; the probe's top rows: {top}")
    print(auto.choice.table())
    return result


def print_table(results: dict[str, dict]) -> None:
    print(
        f"\n{'set':<24} {'probe best (layer)':<26} {'final':>6} {'auto':>6} {'nested':>6} "
        f"{'auto choice':<36} {'pixels':>6} {'auto/final':>10} {'auto-probe':>10}"
    )
    for name, r in results.items():
        best = f"{r['probe_best']['accuracy']:.3f} ({r['probe_best']['key']})"
        nested = f"{r['auto_nested']:.3f}" if "auto_nested" in r else "-"
        print(
            f"{name:<24} {best:<26} {r['final']:>6.3f} {r['auto']:>6.3f} {nested:>6} "
            f"{r['auto_choice'][:36]:<36} {r['pixels']:>6.3f} {r['auto'] / r['final']:>10.3f} "
            f"{r['auto'] - r['probe_best']['accuracy']:>+10.3f}"
        )
    print(
        "final: `train --layer embedding` (the baseline); auto: `train` (selection score); nested: "
        "auto's nested CV; all stratified 5-fold CV, seed 0, logistic regression"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--image-size", type=int, help="crop size (default: the backbone's, 224)")
    parser.add_argument("--no-nested", action="store_true", help="skip the nested-CV scores")
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/layer"))
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    args = parser.parse_args()
    work = args.workdir
    sets = datasets(args.quick, args.data)
    first = work / "cost-images"
    sets[0][1](first)
    cost = embed_cost(first, work, args.image_size)
    print(f"embed cost on {sets[0][0]} (same images, same run):")
    for name, row in cost.items():
        print(f"  {name:<15} {row}")
    default, alone = cost["default"], cost["embedding only"]
    print(
        f"  default / embedding only: storage x{default['npy_bytes_per_image'] / alone['npy_bytes_per_image']:.2f}, "
        f"images/s x{default['job'] / alone['job']:.2f} (bulk job), "
        f"x{default['model'] / alone['model']:.2f} (model alone)"
    )
    results = {
        name: run_set(name, writer, work, args.image_size, not args.no_nested)
        for name, writer in sets
    }
    print_table(results)
    work.mkdir(parents=True, exist_ok=True)
    (work / "layer.json").write_text(json.dumps({"cost": cost, "sets": results}, indent=2))
    print(f"results: {work / 'layer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
